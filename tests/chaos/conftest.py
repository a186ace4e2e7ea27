"""The chaos smoke test runs the relay as processes over real services it starts itself."""
