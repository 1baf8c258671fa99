"""appliance: an always-on voice assistant runtime for a Raspberry Pi."""

__version__ = "0.1.0"
