"""The host reads a plugin's properties as declared attributes, never through ``getattr``.

Every property the host reads from an adapter, estimator, suite or model is declared in
``ttabench.api`` with a default (the manual's plugin guide lists them), so a plugin that does
not override one gets the declared default, and a renamed or dropped hook fails loudly
instead of being silently skipped. This test scans the host's source for ``getattr`` and
``hasattr`` calls on an object whose expression names a plugin object (``adapter``,
``estimator``, ``suite``, ``model``, ``peer``); the conformance kit and the registry, which
probe objects that may not be plugins at all in order to report what they lack, are exempt.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ttabench

SOURCE = Path(ttabench.__file__).parent
#: Modules that probe arbitrary objects to report what is missing (their job).
EXEMPT = {"testing.py", "registry.py"}
PLUGIN_OBJECT = re.compile(r"adapter|estimator|suite|model|peer", re.IGNORECASE)


def probes(source: str) -> list[tuple[int, str]]:
    """(line, expression) of each ``getattr``/``hasattr`` call on a plugin-named object."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and node.args):
            target = ast.unparse(node.args[0])
            if PLUGIN_OBJECT.search(target):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scan_finds_a_probe_of_a_plugin_object():
    source = ("x = getattr(estimator, 'window_results', None)\n"
              "y = hasattr(self.suite, 'class_subset')\n"
              "z = getattr(err, 'reason', err)\n")
    assert [line for line, _ in probes(source)] == [1, 2]


def test_the_host_reads_no_plugin_property_through_getattr():
    offenders = [f"{path.relative_to(SOURCE)}:{line}: {call}"
                 for path in sorted(SOURCE.rglob("*.py")) if path.name not in EXEMPT
                 for line, call in probes(path.read_text(encoding="utf-8"))]
    assert not offenders, "declare the property in ttabench.api instead:\n" + "\n".join(offenders)
