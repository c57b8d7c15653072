"""One-line descriptions of ``module:attr`` targets, read from their source without importing.

``ttabench --help`` and ``ttabench ls`` describe every command and plugin; importing them to
read a docstring would import torch, scikit-learn and matplotlib (seconds). Instead the
module's file is located (``importlib.util.find_spec`` of the top-level package, which runs
nothing, then the package folders), parsed with ``ast`` (no code runs), and the first line of
the docstring of the top-level class or function named ``attr`` is returned.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path


def module_file(module: str) -> Path | None:
    """The source file of ``module`` (``a.b.c`` -> ``.../a/b/c.py`` or ``.../c/__init__.py``)
    without importing it or its parent packages; None when not found as source."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    folders = [Path(p) for p in (spec.submodule_search_locations or [])]
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        found = None
        for folder in folders:
            if last and (folder / f"{part}.py").is_file():
                return folder / f"{part}.py"
            if (folder / part / "__init__.py").is_file():
                found = folder / part
                break
        if found is None:
            return None
        if last:
            return found / "__init__.py"
        folders = [found]
    return None


@functools.cache
def _tree(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def describe(target: str) -> str | None:
    """First docstring line of ``module:attr`` from its source, or None when it has none or
    the source cannot be read."""
    module, _, attr = target.partition(":")
    path = module_file(module)
    tree = _tree(path) if path else None
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name == attr:
            doc = ast.get_docstring(node)
            return doc.strip().splitlines()[0].strip() if doc and doc.strip() else None
    return None
