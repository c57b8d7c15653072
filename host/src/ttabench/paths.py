"""Where data and caches live: explicit option, then environment variable, then ~/.cache/ttabench."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "TTABENCH_DATA_DIR"
CACHE_ENV = "TTABENCH_CACHE_DIR"


def cache_dir() -> Path:
    """``$TTABENCH_CACHE_DIR`` or ``~/.cache/ttabench``: built suites, trained models."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ttabench")


def data_dir(explicit: str | Path | None = None) -> Path:
    """Root of the datasets: ``explicit`` (``--data-dir``), ``$TTABENCH_DATA_DIR``, or
    ``<cache_dir>/data``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else cache_dir() / "data"
