"""ttabench: a test-time-adaptation benchmark host with entry-point plugins."""

__version__ = "0.1.0"
