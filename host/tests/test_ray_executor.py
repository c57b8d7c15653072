"""The Ray executor: same cells as the local executor and as merged shards; failures retried
and recorded while every other cell completes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ttabench import registry
from ttabench.runner.benchmark import Benchmark, RunSpec, collect_cells, run_local
from ttabench.runner.ray_executor import run_ray

ray = pytest.importorskip("ray", reason="the ray extra is installed by the test command")

SUPPORT = str(Path(__file__).parent / "support")
PLUGINS = ["adapters=ttabench_test_plugins:NoisyAdapter",
           "estimators=ttabench_test_plugins:RecordingTrajectory",
           "estimators=ttabench_test_plugins:RecordingStatic",
           "suites=ttabench_test_plugins:FailingTiny"]


@pytest.fixture(scope="module")
def local_ray():
    os.environ["PYTHONPATH"] = SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["OMP_NUM_THREADS"] = "1"  # Ray's workers run one thread per CPU; so does the driver
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def make_spec(**kw) -> RunSpec:
    for plugin in PLUGINS:
        registry.add_plugin_spec(plugin)
    base = dict(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                estimators=["recording-static", "recording-trajectory"],
                suite_options={"n_examples": 128}, device="cpu", plugins=PLUGINS,
                estimator_params={"recording-trajectory": {"probe_size": 64, "checkpoints": [0, 4]}})
    base.update(kw)
    return RunSpec(**base)


def results(cells: list[dict]) -> dict[str, tuple]:
    """What must be identical across executors: per key, the targets and estimator outputs."""
    return {c["key"]: (c["status"], c["targets"],
                       {k: (v["result"], v["views"]) for k, v in c["estimators"].items()})
            for c in cells}


@pytest.mark.slow
def test_ray_matches_local_and_merged_shards(local_ray, tmp_path):
    spec = make_spec()
    bench = Benchmark(spec)
    plans = bench.plan()
    run_local(bench, plans, tmp_path / "local", progress=False)
    run_ray(spec, plans, tmp_path / "ray", progress=False)
    from ttabench.runner.cells import in_shard

    for i in (1, 2):
        run_ray(spec, [p for p in plans if in_shard(p.key, (i, 2))], tmp_path / "shards", progress=False)
    local = results(collect_cells(tmp_path / "local", plans))
    assert len(local) == len(plans) and all(v[0] == "ok" for v in local.values())
    assert results(collect_cells(tmp_path / "ray", plans)) == local
    assert results(collect_cells(tmp_path / "shards", plans)) == local


@pytest.mark.slow
def test_killed_worker_is_retried_and_failing_cell_recorded(local_ray, tmp_path):
    marker = tmp_path / "killed-once"
    spec = make_spec(suite="failing-tiny",
                     suite_options={"n_examples": 128, "crash_split": "noise-2",
                                    "fail_split": "shift-1", "marker": str(marker)})
    bench = Benchmark(spec)
    plans = bench.plan()
    counts = run_ray(spec, plans, tmp_path / "out", retries=2, bench=bench, progress=False)
    assert marker.exists()  # the worker running noise-2 really died once
    assert counts == {"ok": len(plans) - 1, "failed": 1}
    cells = {c["split"]["name"]: c for c in collect_cells(tmp_path / "out", plans)}
    assert cells["noise-2"]["status"] == "ok"
    assert cells["shift-1"]["status"] == "failed"
    assert "injected failure" in cells["shift-1"]["error"] and cells["shift-1"]["attempts"] == 3


@pytest.mark.slow
def test_imagefolder_cells_all_run_on_ray(local_ray, tmp_path):
    """A worker that has read a split (and counted its unreadable file) still finds every later
    cell in its plan: the skipped-file count is not part of the key."""
    from PIL import Image

    root = tmp_path / "shapes"
    for split in ("a", "b", "c"):
        for c, name in enumerate(["ant", "bee", "cat", "dog"]):
            for k in range(16):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 16), (40 * c + k, 9 * k, 200 - c)).save(
                    root / split / name / f"{k}.png")
        (root / split / "ant" / "broken.png").write_bytes(b"not a png")
    spec = make_spec(suite="imagefolder", adapters=["source"], estimators=["recording-static"],
                     estimator_params={}, seeds=[0, 1],
                     suite_options={"root": str(root), "splits": "a,b,c", "class_map": "sorted",
                                    "image_size": 16, "resize": 16})
    bench = Benchmark(spec)
    plans = bench.plan()
    counts = run_ray(spec, plans, tmp_path / "ray", bench=bench, progress=False)
    assert counts == {"ok": len(plans), "failed": 0} and len(plans) == 6
    cells = collect_cells(tmp_path / "ray", plans)
    assert all(c["data"]["skipped_files"] == 1 for c in cells)
