"""benchmarks/your_model.py's report: the figures of its table (MAE over the splits, interval
coverage and width) and the benchmark's MAE over the same splits against hand-worked examples,
the stratified order of the splits, and what its markdown names (the command, the commit, what
was reduced), with no run needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ttabench.api import SplitSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import your_model  # noqa: E402


def _entry(name: str, estimate: float, low: float, high: float, s_low: float,
           s_high: float) -> dict[str, object]:
    return {"entry": name, "estimate": estimate, "interval": [low, high],
            "sampling_interval": [s_low, s_high]}


CALIBRATION = {"chosen": "b (lin)", "entries": [
    {"name": "a", "lodo_mae": 3.0, "error_q95": 0.05},
    {"name": "b (lin)", "lodo_mae": 4.0, "error_q95": 0.02}]}

# three splits of two datasets; truth 0.90, 0.80 (dataset x) and 0.50 (dataset y)
TRUTH = {"x-1": 0.90, "x-2": 0.80, "y-1": 0.50}
DATASETS = {"x-1": "x", "x-2": "x", "y-1": "y"}
REPORTS = {
    "x-1": {"all": [_entry("b (lin)", 0.92, 0.88, 0.96, 0.91, 0.93),
                    _entry("a", 0.70, 0.60, 0.80, 0.65, 0.75)]},
    "x-2": {"all": [_entry("b (lin)", 0.76, 0.70, 0.79, 0.75, 0.77),
                    _entry("a", 0.80, 0.78, 0.82, 0.79, 0.81)]},
    "y-1": {"all": [_entry("b (lin)", 0.60, 0.45, 0.75, 0.58, 0.62),
                    _entry("a", 0.50, 0.40, 0.60, 0.49, 0.51)]},
}


def test_each_entry_s_figures_match_a_hand_worked_example():
    rows = your_model.summarise(CALIBRATION, REPORTS, TRUTH, DATASETS,
                                {"b (lin)": 7.5, "a": 9.0}, {"b (lin)": 6.0})
    # the chosen entry first, whatever its calibration error
    assert [r["entry"] for r in rows] == ["b (lin)", "a"]
    b, a = rows
    # b: |errors| 2, 4 (dataset x: mean 3) and 10 (dataset y) pp -> (3 + 10) / 2
    assert b["mae"] == pytest.approx(6.5)
    # b's intervals: 0.88-0.96 holds 0.90, 0.70-0.79 misses 0.80, 0.45-0.75 holds 0.50
    assert b["coverage"] == pytest.approx(2 / 3)
    assert b["mean_width_pp"] == pytest.approx(100 * (0.08 + 0.09 + 0.30) / 3)
    # sampling halves alone: 0.91-0.93 misses 0.90, 0.75-0.77 misses, 0.58-0.62 misses
    assert b["sampling_coverage"] == 0.0
    assert b["mean_sampling_width_pp"] == pytest.approx(100 * (0.02 + 0.02 + 0.04) / 3)
    assert (b["benchmark_mae"], b["benchmark_mae_same_splits"], b["calibration_lodo_mae"],
            b["error_q95_pp"]) == (7.5, 6.0, 4.0, 2.0)
    assert a["benchmark_mae_same_splits"] is None
    assert b["chosen"] and not a["chosen"] and b["n_splits"] == 3
    # a: |errors| 20, 0 (x: 10) and 0 (y) -> 5; 0.60-0.80 misses 0.90, the others hold
    assert a["mae"] == pytest.approx(5.0)
    assert a["coverage"] == pytest.approx(2 / 3)
    assert a["sampling_coverage"] == pytest.approx(2 / 3)


def test_the_report_names_its_command_commit_and_what_was_reduced():
    rows = your_model.summarise(CALIBRATION, REPORTS, TRUTH, DATASETS, {})
    result = {
        "command": "python benchmarks/your_model.py --bootstrap 2", "commit": "abc123",
        "note": "--bootstrap 2 instead of 5: the time this run had", "date": "2026-12-08",
        "machine": "x86_64, 2 cores", "seconds": {"total": 12.0}, "labelled": 500,
        "meta_set": {"n_sets": 134, "set_size": 2000}, "n_families": 23, "n_splits": 3,
        "chosen": "b (lin)", "rows": rows, "benchmark_choice": {}, "n_boot": 200,
        "bootstrap": 2}
    text = your_model.markdown(result)
    assert "`python benchmarks/your_model.py --bootstrap 2` at commit `abc123`" in text
    assert "**Note:** --bootstrap 2 instead of 5: the time this run had" in text
    assert "| **b (lin)** (chosen) | 4.00 | 6.50 | - | - | 66.7 % |" in text
    assert "had not finished" not in text
    del result["note"]
    assert "Note:" not in your_model.markdown(result)


def test_an_unfinished_benchmark_run_leaves_its_columns_empty_and_says_so(tmp_path):
    assert your_model.leaderboard_maes(tmp_path) == ({}, {})
    rows = your_model.summarise(CALIBRATION, REPORTS, TRUTH, DATASETS, {})
    assert all(r["benchmark_mae"] is None for r in rows)
    result = {
        "command": "c", "commit": "abc123", "date": "d", "machine": "m",
        "seconds": {"total": 1.0}, "labelled": 500, "meta_set": {"n_sets": 1, "set_size": 1},
        "n_families": 1, "n_splits": 3, "chosen": "b (lin)", "rows": rows,
        "benchmark_choice": {}, "n_boot": 200, "bootstrap": 2, "bench_run": "/runs/x",
        "bench_finished": False}
    assert "**The benchmark run `/runs/x` had not finished**" in your_model.markdown(result)


def test_reports_of_other_bootstrap_settings_are_kept_apart(tmp_path):
    kept = {your_model.estimates_folder(tmp_path, n, b) for n in (100, 200) for b in (2, 5)}
    assert len(kept) == 4


def _splits(datasets: int, severities: int) -> list[SplitSpec]:
    return [SplitSpec(f"d{d}-{s}", f"d{d}", s, "eval")
            for d in range(datasets) for s in range(1, severities + 1)]


def test_every_round_of_the_stratified_order_holds_each_corruption_once():
    splits = _splits(15, 5)
    order = your_model.stratified_order(splits, seed=3)
    assert sorted(s.name for s in order) == sorted(s.name for s in splits)
    for r in range(5):
        round_ = order[15 * r: 15 * (r + 1)]
        assert sorted(s.dataset for s in round_) == sorted(f"d{d}" for d in range(15))
        assert sorted(s.severity for s in round_) == sorted([1, 2, 3, 4, 5] * 3)
    assert [s.name for s in your_model.stratified_order(splits, seed=3)] == [
        s.name for s in order]
    assert [s.name for s in your_model.stratified_order(splits, seed=4)] != [
        s.name for s in order]


def test_the_benchmark_s_mae_over_the_same_splits_is_read_from_its_pairs(tmp_path):
    lines = ["suite,model,adapter,target,entry,key,dataset,split,severity,estimate,true"]
    for entry, estimates in (("e", (0.7, 0.9, 0.6)), ("f", (0.8, 0.8, 0.2))):
        for (dataset, split), est, true in zip((("x", "x-1"), ("x", "x-2"), ("y", "y-1")),
                                               estimates, (0.8, 0.8, 0.5)):
            lines.append(f"m,cnn,rdumb,source,{entry},k,{dataset},{split},1,{est},{true}")
    lines.append("m,cnn,rdumb,bn,e,k,x,x-1,1,0.1,0.9")      # another target: not read
    lines.append("m,cnn,rdumb,source,g,k,x,x-1,1,0.5,0.8")  # not on every split: left out
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    maes, truth = your_model.benchmark_pairs(tmp_path, ["x-1", "x-2", "y-1"])
    # e: |errors| 10, 10 (x: 10) and 10 (y) pp -> 10; f: 0, 0 and 30 -> (0 + 30) / 2
    assert maes == pytest.approx({"e": 10.0, "f": 15.0})
    assert truth == {"x-1": 0.8, "x-2": 0.8, "y-1": 0.5}
    # over x-1 alone: e 10, f 0
    assert your_model.benchmark_pairs(tmp_path, ["x-1"])[0] == pytest.approx(
        {"e": 10.0, "f": 0.0, "g": 30.0})


def test_before_the_run_finishes_direct_entries_are_read_from_its_eval_cells(tmp_path):
    from cell_builders import every_view, make_cell, static, trajectory

    from ttabench.store import write_json_atomic

    truths = {"x-1": 0.8, "x-2": 0.6, "y-1": 0.5, "z-1": 0.9}
    cells = [make_cell(name, name[0], 1, "eval", {"source": t, "bn": t - 0.2},
                       {"cott": static("direct", every_view(
                            lambda v, t=t, name=name: t + (0.1 if name == "y-1" else 0.02)
                            - (0.3 if v != "source" else 0.0))),
                        "mde": static("score", every_view(lambda v: 1.0)),
                        "enigma": trajectory("score", 0.5)})
             for name, t in truths.items()]
    cells.append(make_cell("x-1", "x", 1, "calibration", {"source": 0.1},
                           {"cott": static("direct", every_view(lambda v: 0.9))}))
    for cell in cells:
        write_json_atomic(tmp_path / "cells" / f"{cell.key}.json", cell.to_dict())
    maes, truth = your_model.benchmark_direct(tmp_path, ["x-1", "x-2", "y-1"],
                                              ["cott", "mde (lin)"])
    # cott in the source view: |errors| 2, 2 (x: 2) and 10 (y) pp -> 6; a mapped entry: none
    assert maes == pytest.approx({"cott": 6.0})
    assert truth == pytest.approx({"x-1": 0.8, "x-2": 0.6, "y-1": 0.5})
    # a split whose cell is not finished: nothing
    assert your_model.benchmark_direct(tmp_path, ["x-1", "w-1"], ["cott"]) == ({}, {})
