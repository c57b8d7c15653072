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


def _module_names(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package folder ``root``."""
    out = {}
    for path in package_files(root):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def load_time_imports(source: str, package: str, modules: set[str] | frozenset[str]) -> set[str]:
    """The modules of ``modules`` that importing ``source`` imports at once: its module-level
    ``import`` statements (inside ``if``/``try`` blocks too, not under ``if TYPE_CHECKING``);
    imports inside functions run only when called and do not count. ``from a import b`` names
    module ``a.b`` when that is a module, else ``a``."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
                found.update(submodules or {base})

    visit(ast.parse(source).body)
    return found & set(modules)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports at load time}`` for the package folder
    ``root`` (see ``load_time_imports``)."""
    modules = _module_names(root)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = load_time_imports(path.read_text(), package, frozenset(modules)) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or None when it has none (depth-first
    search, modules and their imports in sorted order, so the cycle reported is stable)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None
