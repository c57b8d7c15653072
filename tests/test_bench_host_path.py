"""benchmarks/bench_host_path.py runs its measured path (both sides, the files) on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_host_path  # noqa: E402


def test_the_benchmark_measures_both_sides_and_writes_its_files(tmp_path):
    assert bench_host_path.main(["--images", "128", "--steps", "2", "--repeats", "1",
                                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "host_path.json").read_text())
    before, after = result["host_ms_per_step"]["before"], result["host_ms_per_step"]["after"]
    assert before > 0 and after > 0
    assert result["ratio_after_over_before"] == after / before
    assert "bench_host_path.py --images 128" in (tmp_path / "host_path.md").read_text()
