"""The plugin imports the host only through its public API (``ttabench.api``, ``ttabench.errors``)."""

from __future__ import annotations

from pathlib import Path

import ttabench_enigma
from ttabench.import_scan import host_imports_outside

PLUGIN = Path(ttabench_enigma.__file__).resolve().parent


def test_scanner_flags_a_private_host_import(tmp_path):
    # the rule must be able to fail: a fabricated package with one import of each kind
    package = tmp_path / "fakeplugin"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from ttabench.api import Adapter\nimport ttabench.errors\n")
    (package / "sub" / "mod.py").write_text(
        "from ttabench.runner.stream import stream_indices\n"
        "import importlib\nimportlib.import_module('ttabench.models.base')\n"
        "from ttabench import registry\n"
    )
    assert host_imports_outside(package) == {
        "fakeplugin/sub/mod.py": ["ttabench", "ttabench.models.base", "ttabench.runner.stream"]
    }


def test_the_plugin_imports_only_the_public_api():
    assert len(list(PLUGIN.rglob("*.py"))) >= 10  # the scan sees the whole package
    assert host_imports_outside(PLUGIN) == {}
