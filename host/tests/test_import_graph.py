"""The host's modules import each other without a cycle (what each imports at load time)."""

from __future__ import annotations

from pathlib import Path

import ttabench
from ttabench.import_scan import find_cycle, import_graph

HOST = Path(ttabench.__file__).resolve().parent


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cycle_through_a_package_is_found_and_lazy_or_typing_imports_are_not(tmp_path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "import pkg.c\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                "def f():\n    from pkg import a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == set() and find_cycle(graph) is None
    (root / "c.py").write_text("try:\n    from . import a\nexcept ImportError:\n    pass\n")
    assert find_cycle(import_graph(root)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_the_host_has_no_import_cycle() -> None:
    graph = import_graph(HOST)
    assert {"ttabench.api", "ttabench.store", "ttabench.scoring.leaderboard"} <= set(graph)
    assert "ttabench.runner.stream" in graph["ttabench.api"]  # the scan sees the re-exports
    assert find_cycle(graph) is None


def test_the_results_store_sits_below_scoring_and_suites() -> None:
    graph = import_graph(HOST)
    assert not any(m.startswith("ttabench.runner") for m in graph["ttabench.store"])
    for module, imports in graph.items():
        if module.startswith(("ttabench.scoring", "ttabench.suites")):
            assert not any(m.startswith("ttabench.runner") for m in imports), module
