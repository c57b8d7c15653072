"""ttabench: a test-time-adaptation benchmark host with entry-point plugins."""

from ttabench.version import installed_version

__version__ = installed_version("ttabench")
