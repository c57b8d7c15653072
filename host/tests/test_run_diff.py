"""``ttabench diff``: pairs of tiny runs made to differ in one fact each, two cell files, and
the leaderboard comparison on hand-made tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from cli_checks import one_line_error
from ttabench.cli import main
from ttabench.run_diff import compare_tables, diff_runs, format_diff, group_of

BASE = ["-s", "tiny", "-m", "tiny-cnn", "-a", "source", "-e", "ac", "--n-examples", "64",
        "--batch-size", "64", "--seed", "0", "--threads", "1", "--n-boot", "20"]


def run(folder: Path, *changes: str) -> Path:
    """A tiny run: BASE with the options in ``changes`` replaced."""
    args = list(BASE)
    for flag, value in zip(changes[::2], changes[1::2]):
        args[args.index(flag) + 1] = value
    config = folder.parent / "empty.toml"
    config.write_text("")
    result = CliRunner().invoke(main, ["run", *args, "--config", str(config), "-o", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"base": run(root / "base"),
            "model": run(root / "model", "-m", "tiny-cnn:1"),
            "images": run(root / "images", "--n-examples", "32"),
            "batch": run(root / "batch", "--batch-size", "32"),
            "seed": run(root / "seed", "--seed", "1")}


def differing(a: Path, b: Path) -> dict[str, set[str]]:
    result = diff_runs(a, b)
    out: dict[str, set[str]] = {}
    for d in result.facts:
        out.setdefault(d.group, set()).add(d.fact)
    return out


@pytest.mark.slow
def test_each_single_fact_is_found_and_nothing_else(runs):
    assert differing(runs["base"], runs["base"]) == {}
    assert differing(runs["base"], runs["model"]) == {
        "model": {"model.id", "model.weights_hash"},
        "paths": {"location.model.spec"}}  # the spec is recorded beside the key
    assert differing(runs["base"], runs["images"]) == {
        "data": {"n_examples", "suite.options.n_examples", "suite.record.n_examples"}}
    assert differing(runs["base"], runs["batch"]) == {"stream": {"batch_size"}}
    seeds = diff_runs(runs["base"], runs["seed"])
    assert seeds.facts == [] and seeds.pairs == 0
    assert len(seeds.only_in_a) == len(seeds.only_in_b) == 6
    assert all("seed 0" in line for line in seeds.only_in_a)


@pytest.mark.slow
def test_values_and_pair_counts_and_json(runs):
    result = diff_runs(runs["base"], runs["images"])
    facts = {d.fact: d for d in result.facts}
    assert (facts["n_examples"].a, facts["n_examples"].b) == (64, 32)
    assert facts["n_examples"].pairs == result.pairs == 6
    assert result.tables_compared
    out = CliRunner().invoke(main, ["diff", str(runs["base"]), str(runs["images"]), "--json"])
    assert out.exit_code == 0
    data = json.loads(out.output)
    assert {f["fact"] for f in data["facts"]} == set(facts) and data["pairs"] == 6


@pytest.mark.slow
def test_two_cell_files_grouped_most_consequential_first(runs, tmp_path):
    cell = sorted((runs["base"] / "cells").glob("*.json"))[0]
    record = json.loads(cell.read_text())
    record["environment"]["versions"]["numpy"] = "1.0.0"
    record["protocol"]["model"]["weights_hash"] = "0" * 16
    record["protocol"]["suite"]["record"]["root"] = "/elsewhere"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(record))
    result = CliRunner().invoke(main, ["diff", str(cell), str(other)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "versions.numpy: A 2" in text and "| B 1.0.0" in text
    order = [text.index(s) for s in ("== model ==", "== libraries ==", "== paths")]
    assert order == sorted(order)
    assert "leaderboards not compared" in text
    same = format_diff(diff_runs(cell, cell))
    assert "no difference" in same


def test_moved_entries_against_hand_made_tables():
    def row(model: str, entry: str, mae: float, low: float, high: float) -> dict:
        return {"target": "source", "suite": "tiny", "model": model, "adapter": "source",
                "entry": entry, "mae": mae, "ci": (low, high)}

    a = [row("m1", "ac", 3.0, 2.5, 3.5), row("m1", "doc", 5.0, 4.0, 6.0),
         row("m1", "cot", 2.0, 1.9, 2.1)]
    b = [row("m2", "ac", 4.0, 3.6, 4.4),   # outside A's interval: moved
         row("m2", "doc", 5.5, 4.8, 6.2),  # each inside the other: not moved
         row("m2", "cot", 2.05, 2.04, 2.3)]  # inside A's, A's 2.0 below B's 2.04: moved
    moved = {m.entry: m.moved for m in compare_tables(a, b)}
    assert moved == {"ac": True, "doc": False, "cot": True}
    assert compare_tables(a, b)[0].model == "m1 / m2"  # paired though the model differs


def test_bad_paths_are_one_line(tmp_path):
    line = one_line_error(CliRunner().invoke(main, ["diff", str(tmp_path / "x"), str(tmp_path)]))
    assert "neither a run folder nor a cell file" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no cell results" in one_line_error(CliRunner().invoke(main, ["diff", str(empty),
                                                                         str(empty)]))
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    assert "cannot read cell file" in one_line_error(
        CliRunner().invoke(main, ["diff", str(damaged), str(empty)]))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert "is not a ttabench cell" in one_line_error(
        CliRunner().invoke(main, ["diff", str(listed), str(listed)]))


def folders_of_images(root: Path) -> Path:
    """Two splits of four sorted classes, two 8 px images each (the imagefolder layout)."""
    for s, split in enumerate(("a", "b")):
        for c, name in enumerate(["ant", "bee", "cat", "dog"]):
            for k in range(2):
                path = root / "shapes" / split / name / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (60 * c + 5 * k, 40 * s, 100)).save(path)
    return root


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_moved_data_folder_is_a_path_fact_that_changes_no_number(tmp_path):
    """The same run on the same images mounted at two paths: the only difference is the cells'
    recorded ``location`` (beside the key), shown under paths, and no entry moves."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    options = ["-s", "imagefolder", "-m", "tiny-cnn", "-a", "source", "-e", "ac", "--seed", "0",
               "--threads", "1", "--n-boot", "20", "--config", str(config),
               "--set", "suite.imagefolder.root=shapes", "--set", "suite.imagefolder.splits=a,b",
               "--set",
               "suite.imagefolder.class_map=sorted", "--set", "suite.imagefolder.image_size=8",
               "--set", "suite.imagefolder.resize=8"]
    runs = {}
    for node in ("node1", "node2"):
        data = folders_of_images(tmp_path / node)
        runs[node] = tmp_path / f"out-{node}"
        result = CliRunner().invoke(main, ["run", *options, "--data-dir", str(data), "-o",
                                           str(runs[node])])
        assert result.exit_code == 0, result.output
    result = diff_runs(runs["node1"], runs["node2"])
    assert result.pairs == 2 and result.tables_compared and result.moved == []
    assert {(d.group, d.fact, d.a, d.b, d.pairs) for d in result.facts} == {
        ("paths", "location.suite.root", str(tmp_path / "node1" / "shapes"),
         str(tmp_path / "node2" / "shapes"), 2)}
    text = CliRunner().invoke(main, ["diff", str(runs["node1"]), str(runs["node2"])]).output
    assert text.index("== paths (where the data and weights were read from; they change no "
                      "number) ==") < text.index("location.suite.root: A ")
    assert "0 leaderboard entries moved" in text
    # everything the location records is a path fact, whatever its last key
    assert group_of("location.model.spec") == "paths" and group_of("model.id") == "model"


@pytest.mark.slow
def test_runs_whose_streams_differ_in_order_or_kind_pair_their_stream_cells(tmp_path):
    """A continual cell is named after its stream (``continual/eval/order-0``): cells of runs
    that differ in the split order or the stream kind pair by (suite, role, adapter, seed), and
    the stream's order and kind are the facts that differ."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    common = ["-s", "tiny", "-m", "tiny-cnn", "-a", "source", "-e", "ac", "--n-examples", "64",
              "--batch-size", "32", "--steps-per-split", "1", "--severities", "1",
              "--severities", "2", "--threads",
              "1", "--n-boot", "20", "--config", str(config)]
    runs = {}
    for name, extra in {"a": ["--stream", "continual", "--order-seed", "0"],
                        "b": ["--stream", "continual", "--order-seed", "1"],
                        "c": ["--stream", "gradual", "--order-seed", "0"]}.items():
        runs[name] = tmp_path / name
        result = CliRunner().invoke(main, ["run", *common, *extra, "-o", str(runs[name])])
        assert result.exit_code == 0, result.output
    order = diff_runs(runs["a"], runs["b"])
    assert order.only_in_a == order.only_in_b == [] and order.pairs == 2
    assert {d.fact for d in order.facts} == {"stream.order", "stream.order_seed"}
    assert all(d.group == "stream" for d in order.facts)
    assert any("A continual/eval/order-0" in line and "B continual/eval/order-1" in line
               for line in order.paired_across_streams)
    kind = diff_runs(runs["a"], runs["c"])
    facts = {d.fact: (d.a, d.b) for d in kind.facts}
    assert facts == {"stream.kind": ("continual", "gradual")} and kind.pairs == 2
    text = format_diff(kind)
    assert "== cells paired across streams (same suite, role, adapter, seed) (2) ==" in text
    # a reset-each-split run shares no cell with a continual one: nothing is paired
    reset = tmp_path / "reset"
    assert CliRunner().invoke(main, ["run", *common, "-o", str(reset)]).exit_code == 0
    apart = diff_runs(runs["a"], reset)
    assert apart.pairs == 0 and len(apart.only_in_a) == 2 and apart.only_in_b


def test_gpu_facts_and_the_reference_have_their_groups():
    assert group_of("cuda.tf32.conv") == group_of("cuda.gpu") == "compute"
    assert group_of("reference.source_val_order") == "estimators"
    assert group_of("cuda_visible_devices") == "machine"
