"""Shared test setup: the helper plugins in tests/support are importable by module name, and
every test gets private cache and data folders so nothing depends on the machine's state."""

import os
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
sys.path.insert(0, str(SUPPORT))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    if "TTABENCH_TEST_SHARED_CACHE" in os.environ:
        return
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TTABENCH_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("TTABENCH_DATA_DIR", str(base / "data"))


@pytest.fixture(scope="module")
def spawned_workers_env():
    """Worker processes spawned by a test import the test plugins by module name (on
    PYTHONPATH) and run one thread each; the environment is restored afterwards."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ["PYTHONPATH"] = str(SUPPORT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def local_ray(spawned_workers_env):
    """A two-CPU Ray session for a test module (skipped where the ray extra is absent); the
    driver runs one thread like its workers, and the thread count is restored afterwards."""
    ray = pytest.importorskip("ray", reason="the ray extra is installed by the test command")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture()
def config(tmp_path):
    """An empty config file: the built-in defaults, not the repository's plugins.toml."""
    path = tmp_path / "none.toml"
    path.write_text("")
    return path
