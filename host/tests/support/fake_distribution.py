"""An installed distribution made of files: modules and entry-point lines in a folder that a
test puts on ``sys.path``, found by ``importlib.metadata`` as any installed plugin is."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def make_dist(folder: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
              modules: dict[str, str] | None = None) -> None:
    """Write ``modules`` (dotted name -> source; packages get an ``__init__.py``) and the
    ``<name>-<version>.dist-info`` metadata declaring ``entry_points`` (group -> name ->
    ``module:attr``) into ``folder``."""
    for module, source in (modules or {}).items():
        path = folder.joinpath(*module.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in path.relative_to(folder).parents:
            if package != Path("."):
                (folder / package / "__init__.py").touch()
        path.write_text(source)
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{entry} = {target}" for entry, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@contextmanager
def installed(monkeypatch: Any, folder: Path, name: str, version: str,
              entry_points: dict[str, dict[str, str]],
              modules: dict[str, str] | None = None) -> Iterator[Path]:
    """``make_dist`` in ``folder``, put on ``sys.path`` and discovered by a fresh registry for
    the ``with`` block; the registry is reset and the modules forgotten afterwards."""
    from ttabench import registry

    make_dist(folder, name, version, entry_points, modules)
    monkeypatch.syspath_prepend(str(folder))
    registry.refresh(keep_explicit=False)
    try:
        yield folder
    finally:
        registry.refresh(keep_explicit=False)
        for module in modules or {}:
            for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
                sys.modules.pop(loaded, None)
