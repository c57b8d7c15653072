"""Shared test setup: the helper plugins in tests/support are importable by module name, and
every test gets private cache and data folders so nothing depends on the machine's state."""

import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
sys.path.insert(0, str(SUPPORT))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    if "TTABENCH_TEST_SHARED_CACHE" in __import__("os").environ:
        return
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TTABENCH_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("TTABENCH_DATA_DIR", str(base / "data"))
