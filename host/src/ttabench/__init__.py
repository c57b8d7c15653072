"""ttabench: a test-time-adaptation benchmark host with entry-point plugins."""

from importlib.metadata import version

__version__ = version("ttabench")
