"""benchmarks/quality.py: the order of its runs (evaluation seeds, meta-set, then the extra
seeds one severity at a time, every corruption at each) and what its results file says the
cells hold."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402


def _runs(monkeypatch, tmp_path, seeds, extra):
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(quality, "_ttabench", lambda *args: calls.append(args))
    monkeypatch.setattr(quality, "chosen_protocol", lambda model: (0.0025, 400))
    quality.run(tmp_path, "mnist-cnn", seeds, "meta-*-3", extra)
    return [(c[c.index("--splits") + 1], [c[i + 1] for i, a in enumerate(c) if a == "--seed"],
             c[c.index("-o") + 1]) for c in calls]


def test_extra_seeds_run_after_the_meta_set_one_severity_at_a_time(monkeypatch, tmp_path):
    runs = _runs(monkeypatch, tmp_path, [0], ([1, 2], [3, 1]))
    corruptions = quality.CORRUPTIONS
    assert len(corruptions) == 15
    assert runs == [
        (quality.EVAL_SPLITS, ["0"], str(tmp_path / "eval")),
        ("meta-*-3", ["0"], str(tmp_path / "meta")),
        (",".join(f"{c}-3" for c in corruptions), ["1", "2"], str(tmp_path / "eval")),
        (",".join(f"{c}-1" for c in corruptions), ["1", "2"], str(tmp_path / "eval")),
    ]


def test_without_extra_seeds_the_run_is_evaluation_then_meta_set(monkeypatch, tmp_path):
    runs = _runs(monkeypatch, tmp_path, [0, 1, 2], ([], [1, 2, 3, 4, 5]))
    assert [(splits, seeds) for splits, seeds, _ in runs] == [
        (quality.EVAL_SPLITS, ["0", "1", "2"]), ("meta-*-3", ["0"])]


def test_the_seed_column_names_the_severities_of_a_partly_run_seed():
    facts = {"severities_per_seed": {"0": [1, 2, 3, 4, 5], "1": [1, 3]}}
    assert quality._seed_cells(facts, "0", 75) == "0 (75)"
    assert quality._seed_cells(facts, "1", 30) == "1 (30, severity 1, 3)"
