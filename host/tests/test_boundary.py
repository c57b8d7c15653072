"""The host never imports or names its plugin package: it must work as a third-party host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ttabench.import_scan import imported_modules

ROOT = Path(__file__).resolve().parents[1] / "src"
HOST = ROOT / "ttabench"
PLUGIN_PACKAGE = "ttabench" + "_" + "enigma"  # spelled in pieces so greps of tests stay clean
WORD = "enig" + "ma"
TEXT_SUFFIXES = {".py", ".toml", ".json", ".md", ".txt", ".cfg", ".yaml", ".yml"}


def host_files() -> list[Path]:
    return sorted(
        p for p in HOST.rglob("*")
        if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
    )


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def test_scan_finds_the_host_sources():
    names = {p.relative_to(HOST).as_posix() for p in host_files()}
    assert {"registry.py", "cli.py", "api.py", "testing.py"} <= names


def test_import_scanner_sees_every_import_form():
    # the scanner must catch each form, or the boundary test below proves nothing
    source = (
        f"import os, {PLUGIN_PACKAGE}.adapters\n"
        f"from {PLUGIN_PACKAGE} import x\n"
        "from ..models import base\n"
        "from . import api\n"
        f"importlib.import_module('{PLUGIN_PACKAGE}.flips')\n"
    )
    assert imported_modules(source, "ttabench.runner") == {
        "os",
        f"{PLUGIN_PACKAGE}.adapters",
        PLUGIN_PACKAGE,
        "ttabench.models",
        "ttabench.runner",
        f"{PLUGIN_PACKAGE}.flips",
    }


def test_no_host_file_imports_the_plugin_package():
    offenders = {}
    for path in host_files():
        if path.suffix == ".py":
            modules = imported_modules(path.read_text(), package_of(path))
            bad = sorted(m for m in modules if m.split(".")[0] == PLUGIN_PACKAGE)
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_no_host_file_names_the_plugin():
    offenders = [
        f"{p.relative_to(ROOT)}:{number}"
        for p in host_files()
        for number, line in enumerate(p.read_text().splitlines(), start=1)
        if WORD in line.lower()
    ]
    assert offenders == []


def test_importing_the_host_leaves_the_plugin_unloaded():
    code = (
        "import sys\n"
        "import ttabench, ttabench.registry, ttabench.cli, ttabench.testing\n"
        "ttabench.registry.list_plugins(load=False)\n"
        f"print({PLUGIN_PACKAGE!r} in sys.modules, 'ttabench.cli' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.split() == ["False", "True"]
