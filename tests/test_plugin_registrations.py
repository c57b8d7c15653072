"""The plugin's registrations: each is listed under its own distribution name and version
(read from package metadata), passes the host's conformance kit (parametrized over the
registry), and a third-party estimator needs one module, one entry-point line and one test."""

from __future__ import annotations

import importlib.metadata
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_distribution import installed
from registry_kit import check_registered, kit_cases

from ttabench import registry
from ttabench.cli import main
from ttabench.records import Cell

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIST = "ttabench-enigma"


def declared() -> dict[tuple[str, str], str]:
    """The plugin's declared entry points, except ``ttabench.presets`` (preset folders are data
    that ``ttabench presets`` reads, not plugins that ``ttabench ls`` lists)."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    return {(g.split(".")[1], n): t for g, entries in groups.items() for n, t in entries.items()
            if g != "ttabench.presets"}


def test_listed_under_the_plugin_distribution_and_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    rows = [p for p in registry.list_plugins(load=False) if p.distribution == PLUGIN_DIST]
    assert {(p.kind, p.name): p.target for p in rows} == declared()
    assert {p.version for p in rows} == {version}
    host = {p.distribution for p in registry.list_plugins(load=False) if p.name == "source"}
    assert host == {"ttabench"}


@pytest.mark.parametrize("case", kit_cases(PLUGIN_DIST))
def test_registered_plugin_conforms(case, tmp_path):
    check_registered(*case, tmp_path)


THIRD_PARTY = '''
from ttabench.api import EstimateResult, StaticEstimator


class MaxLogitShare(StaticEstimator):
    """Share of images whose top logit exceeds the second by more than 1 (an accuracy)."""

    name = "max-logit-share"

    def estimate(self, target, source_val):
        top2 = target.logits.topk(2, dim=1).values
        share = float(((top2[:, 0] - top2[:, 1]) > 1.0).float().mean())
        return EstimateResult(value=share, estimate=share)
'''


@pytest.fixture
def third_party_dist(tmp_path, monkeypatch):
    """One module plus one entry-point line in an installed distribution's metadata."""
    with installed(monkeypatch, tmp_path, "thirdparty", "0.1", {"ttabench.estimators": {
            "max-logit-share": "thirdparty_estimator:MaxLogitShare"}},
            {"thirdparty_estimator": THIRD_PARTY}) as folder:
        yield folder


def test_a_third_party_estimator_is_checked_and_runs(third_party_dist, tmp_path, config):
    assert importlib.metadata.version("thirdparty") == "0.1"
    (case,) = kit_cases("thirdparty")
    check_registered(*case.values[0], tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", "--config", str(config), "-s", "tiny", "-m", "tiny-cnn", "-e", "max-logit-share",
        "--severities", "1", "--n-examples", "64", "-o", str(out), "--jobs", "1",
    ])
    assert result.exit_code == 0, result.output
    cells = [c for c in (out / "cells").rglob("*.json")]
    assert cells, result.output
    records = [Cell.from_dict(json.loads(c.read_text())).estimators["max-logit-share"]
               for c in cells]
    assert all({"source", "bn"} <= set(r.views) for r in records)
    values = [result.value for r in records for result in r.views.values()]
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values)
    assert "max-logit-share" in (out / "leaderboard.md").read_text()
