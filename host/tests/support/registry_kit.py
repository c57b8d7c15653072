"""The conformance kit (``ttabench.testing.run_all``) parametrized over the registry: every
plugin that a distribution registers through its entry points, so a new registration is
checked without editing a list.

``kit_cases(distribution)`` gives one pytest param per (kind, name). Plugins the kit cannot
run on synthetic data (suites that read dataset folders, model sources that read weight
files) are checked on an empty data or cache folder instead: they must refuse it with one
clear ``TTABenchError`` line, not crash.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from ttabench import registry
from ttabench.api import TrajectoryEstimator
from ttabench.testing import run_all

#: Kit parameters that keep a check on synthetic data fast.
FAST: dict[tuple[str, str], dict[str, Any]] = {
    ("suites", "tiny"): {"n_examples": 32},
    ("suites", "mnist-c"): {"corruptions": "fog", "severities": 1, "n_examples": 32, "holdout": False},
    ("estimators", "enigma-online"): {"window": 2},
}
#: Model sources the kit loads as they are (no files needed beyond installed packages).
LOADABLE_MODELS = {"tiny-cnn", "cifar10-resnet18", "mnist-cnn", "mnist-resnet"}
#: Suites built from data inside installed packages (the kit runs them in full).
PACKAGED_SUITES = {"tiny", "mnist-c"}
#: Plugins whose kit takes minutes (mnist-c builds, mnist-cnn trains on first use): slow tests.
SLOW = {("models", "mnist-cnn"), ("models", "mnist-resnet"), ("suites", "mnist-c")}


def kit_cases(distribution: str) -> list[Any]:
    """One ``pytest.param((kind, name), id="kind:name")`` per plugin of ``distribution``."""
    return [
        pytest.param((p.kind, p.name), id=f"{p.kind}:{p.name}",
                     marks=[pytest.mark.slow] if (p.kind, p.name) in SLOW else [])
        for p in registry.list_plugins(load=False)
        if p.distribution == distribution
    ]


def kit_params(kind: str, name: str, obj: Any) -> dict[str, Any]:
    """Parameters for the kit: a short trajectory (probe 64, checkpoints 0, 3, 6) for a
    trajectory estimator that takes them, else the FAST table's entry."""
    if kind == "estimators" and isinstance(obj, type) and issubclass(obj, TrajectoryEstimator):
        taken = inspect.signature(obj).parameters
        if {"probe_size", "checkpoints"} <= set(taken):
            return {"probe_size": 64, "checkpoints": (0, 3, 6)}
    return dict(FAST.get((kind, name), {}))


def check_registered(kind: str, name: str, tmp_path: Any) -> None:
    """Run the kit on one registered plugin; fail with every failed check's message."""
    obj = registry.get(kind, name)
    params = kit_params(kind, name, obj)
    if kind == "suites" and name not in PACKAGED_SUITES:
        params["data_dir"] = tmp_path
    if kind == "models":
        params["cache_dir"] = tmp_path
    results = run_all(kind, obj, **params)
    failed = [(check, message) for check, ok, message in results if not ok]
    if kind == "suites" and name not in PACKAGED_SUITES or kind == "models" and name not in LOADABLE_MODELS:
        # no data on disk: the first check must fail with the host's one-line error
        assert failed and failed[0][0] in ("construct", "load"), results
        assert "raised TTABenchError" in failed[0][1] and "\n" not in failed[0][1], failed
        return
    assert failed == [], failed
