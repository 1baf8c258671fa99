"""Adapters: one third-party library each, implementing the ports in `appliance.ports`."""
