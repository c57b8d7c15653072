"""The plugin's tests share the host tests' setup (``host/tests/conftest.py``): the helper
plugins of ``host/tests/support`` importable by module name, private cache and data folders."""

import importlib.util
from pathlib import Path

_HOST_CONFTEST = Path(__file__).resolve().parents[1] / "host" / "tests" / "conftest.py"
_spec = importlib.util.spec_from_file_location("ttabench_host_tests_conftest", _HOST_CONFTEST)
assert _spec is not None and _spec.loader is not None
_host = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_host)

SUPPORT = _host.SUPPORT
_private_cache = _host._private_cache
spawned_workers_env = _host.spawned_workers_env
config = _host.config
