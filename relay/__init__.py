"""The relay: a Git webhook relay and deploy event bus (gateway, bus, receivers, kube access)."""
