"""The version of an installed distribution, or a clear stand-in when the source tree is
imported without being installed (the repository on ``PYTHONPATH``, as on a bare GPU machine)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The version reported by a package imported from a source tree that is not installed.
NOT_INSTALLED = "0+not-installed"


def installed_version(distribution: str) -> str:
    """``importlib.metadata.version(distribution)``, or ``NOT_INSTALLED`` when it is absent."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return NOT_INSTALLED
