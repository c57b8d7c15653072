"""Which modules a package's source files import, read with ``ast`` (nothing is executed).

A plugin should import the host only through its public API (``ttabench.api`` and
``ttabench.errors``); ``host_imports_outside`` lists every other ``ttabench.*`` import of a
plugin package, so a test can hold a plugin to that rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PUBLIC_MODULES: frozenset[str] = frozenset({"ttabench.api", "ttabench.errors"})


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an import names in ``source``: ``import a.b``, ``from a import b`` (relative
    ones resolved against ``package``, the dotted package of the file), and string arguments
    of ``importlib.import_module`` / ``__import__`` calls."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in (
            "import_module",
            "__import__",
        ):
            found |= {a.value for a in node.args if isinstance(a, ast.Constant)}
    return found


def package_files(root: Path) -> dict[Path, str]:
    """Every ``.py`` file below the package folder ``root``, with its dotted package name."""
    return {
        path: ".".join((root.name, *path.relative_to(root).parent.parts))
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def host_imports_outside(root: Path, public: frozenset[str] = PUBLIC_MODULES) -> dict[str, list[str]]:
    """``{file relative to root's parent: sorted non-public ttabench modules it imports}``
    for the package folder ``root``; empty when the package keeps to the public API. A bare
    ``import ttabench`` counts as outside too (its attributes are not the API)."""
    offenders: dict[str, list[str]] = {}
    for path, package in package_files(root).items():
        modules = imported_modules(path.read_text(), package)
        bad = sorted(m for m in modules if m.split(".")[0] == "ttabench" and m not in public)
        if bad:
            offenders[path.relative_to(root.parent).as_posix()] = bad
    return offenders
