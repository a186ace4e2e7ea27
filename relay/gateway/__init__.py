"""The aiohttp gateway: the relay's front door (webhooks, signed deploys, status, health)."""
