"""benchmarks/quality.py: the order of its runs (evaluation seeds, meta-set, then the extra
seeds one severity at a time, every corruption at each) and what its results file says the
cells hold."""

from __future__ import annotations

import sys
from pathlib import Path

from pytest import approx

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


def _cell(key, role, total, adaptation, steps, seed=0):
    from ttabench.records import Cell
    return Cell(key=key, status="ok", seed=seed, split={"name": key, "role": role},
                timings={"total": total, "adaptation": adaptation},
                adaptation={"steps": steps})


def test_missing_work_projects_from_the_passes_and_the_time_per_step(monkeypatch, tmp_path):
    # a run model: one eval cell of 50 s (10 s of passes, 40 s for 400 steps: 0.1 s a step)
    for sub in ("eval", "meta"):
        (tmp_path / "run" / sub).mkdir(parents=True)
    monkeypatch.setattr(quality, "load_cells", lambda dirs: [_cell("a-1", "eval", 50, 40, 400)])
    work = quality.missing_work(tmp_path / "run", (0.0025, 200), "meta-*-3")
    assert work["seconds_per_cell"] == approx(10 + 200 * 0.1)
    assert (work["eval_cells_missing"], work["meta_sets_missing"]) == (3 * 75 - 1, 134)
    assert work["hours"] == approx((224 + 134) * 30 / 3600)
    assert "protocol_choice_hours" not in work
    # a model not run, timed by its cost cell: its protocol choice is 23 sets at 990 steps
    # and 23 at 400 (benchmarks/protocol_choice.py), then seed 0 with 22 meta-*-3 sets
    (tmp_path / "absent" / "cost").mkdir(parents=True)
    work = quality.missing_work(tmp_path / "absent", (0.0025, 400), "meta-*-3")
    assert work["protocol_choice_hours"] == approx((23 * (10 + 99.0) + 23 * (10 + 40.0)) / 3600)
    assert work["choice_and_seed0_narrowed_hours"] == \
        approx(work["protocol_choice_hours"] + (75 + 22) * 50 / 3600)
    assert quality.missing_work(tmp_path / "nothing", (0.0025, 400), "meta-*-3") is None
