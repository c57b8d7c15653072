"""The Ray executor on what is its own: a worker that has read an image-folder split still
finds every later cell in its plan. What every backend shares (retries, failed records, a dead
worker, resume, the numbers of a direct execution) is in test_executors.py."""

from __future__ import annotations

import pytest
from executor_kit import make_backend, make_spec

from ttabench.runner.benchmark import Benchmark, collect_cells
from ttabench.runner.executor import run_cells


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
    counts = run_cells(bench, plans, tmp_path / "ray", make_backend("ray"), progress=False)
    assert counts == {"ok": len(plans), "failed": 0} and len(plans) == 6
    cells = collect_cells(tmp_path / "ray", plans)
    assert all(c.data["skipped_files"] == 1 for c in cells)
