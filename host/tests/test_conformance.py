"""Every plugin the host registers passes the conformance kit (parametrized over the registry)."""

from __future__ import annotations

import pytest
from registry_kit import check_registered, kit_cases

from ttabench import registry


def test_the_host_registers_every_kind():
    kinds = {case.values[0][0] for case in kit_cases("ttabench")}
    # its commands are built into the CLI (ttabench.cli.BUILTIN_COMMANDS), none by entry point
    assert kinds == {"adapters", "estimators", "suites", "models"}
    assert len(kit_cases("ttabench")) == len(registry.list_plugins(load=False)) - sum(
        p.distribution != "ttabench" for p in registry.list_plugins(load=False)
    )


@pytest.mark.parametrize("case", kit_cases("ttabench"))
def test_registered_plugin_conforms(case, tmp_path):
    check_registered(*case, tmp_path)
