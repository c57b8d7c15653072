"""Faults with real processes: killing or terminating the driver of a two-worker run leaves no
process behind, keeps every finished cell, and a rerun completes every cell exactly once; a
second run into a folder in use is refused at once, naming the other process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttabench.records import finished_cell

SUPPORT = str(Path(__file__).parent / "support")
CELLS = 8  # 4 tiny splits x 2 seeds


def command(tmp_path: Path, out: Path) -> list[str]:
    (tmp_path / "none.toml").write_text("")
    return [sys.executable, "-m", "ttabench",
            "--plugin", "adapters=ttabench_test_plugins:NoisyAdapter",
            "--plugin", "estimators=ttabench_test_plugins:RecordingTrajectory",
            "run", "--suite", "tiny", "--model", "tiny-cnn", "-a", "noisy",
            "-e", "recording-trajectory",
            "--set", "estimator.recording-trajectory.checkpoints=[0, 60]",
            "--set", "suite.tiny.n_examples=192", "--seed", "0", "--seed", "1",
            "--splits", "noise-*,clean",
            "--jobs", "2", "--threads", "1", "--output", str(out), "--n-boot", "20",
            "--config", str(tmp_path / "none.toml")]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no memory and runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from the parent links in /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {pid for pid in found if alive(pid)}


def finished(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")
            if finished_cell(p) is not None}


def start_and_stop(tmp_path: Path, signum: int) -> tuple[subprocess.Popen, set[int], dict, Path]:
    """Start the run, wait for two finished cells with both workers up, send ``signum`` to
    the driver; return the process, its workers and the cells finished at that moment."""
    out = tmp_path / "out"
    proc = subprocess.Popen(command(tmp_path, out), env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None:
        workers |= descendants(proc.pid)
        if (out / "cells").is_dir() and len(finished(out)) >= 2 and len(workers) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    workers |= descendants(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signum)
    return proc, workers, finished(out), out


def assert_gone_within(pids: set[int], seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "worker processes outlived the driver"


def rerun_completes_exactly_once(tmp_path: Path, out: Path, before: dict[str, bytes]) -> None:
    kept = finished(out)
    assert all(kept[name] == content for name, content in before.items())
    rerun = subprocess.run(command(tmp_path, out), env=environment(), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{CELLS} cells planned, {CELLS - len(kept)} to run" in rerun.stdout
    after = finished(out)
    assert len(after) == CELLS and all(after[name] == content for name, content in kept.items())
    assert all(json.loads(content)["attempts"] == 1 for content in after.values())
    record = json.loads((out / "run.json").read_text())
    assert record["ran"] == {"ok": CELLS - len(kept), "failed": 0}


@pytest.mark.slow
def test_sigkill_of_the_driver_leaves_no_worker_and_a_rerun_completes(tmp_path: Path) -> None:
    proc, workers, before, out = start_and_stop(tmp_path, signal.SIGKILL)
    proc.wait(timeout=30)
    assert_gone_within(workers, 10)
    rerun_completes_exactly_once(tmp_path, out, before)


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_keeps_cells_and_leaves_no_worker(tmp_path: Path) -> None:
    proc, workers, before, out = start_and_stop(tmp_path, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGTERM; ") and f"of {CELLS} cells" in last
    assert "Traceback" not in stderr
    assert_gone_within(workers, 10)
    rerun_completes_exactly_once(tmp_path, out, before)


def hold(out: Path, shard: str = "") -> subprocess.Popen:
    """Another process that claims ``out`` (for shard ``i/n`` when given) and keeps it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from ttabench.runner.cells import parse_shard; "
         "from ttabench.runner.run_folder import RunFolder; "
         "folder = RunFolder.claim(Path(sys.argv[1]), parse_shard(sys.argv[2])); "
         "print('ready', flush=True); time.sleep(120)", str(out), shard],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    return holder


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_is_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(command(tmp_path, out), env=environment(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob(".lock*.owner")):
            time.sleep(0.05)
        started = time.time()
        second = subprocess.run(command(tmp_path, out), env=environment(), capture_output=True,
                                text=True, timeout=300)
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 2, second.stdout[-1000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: output folder {out} is in use")
        assert f"pid {first.pid} on " in lines[0]
        assert time.time() - started < 60  # refused at once, before loading anything
    finally:
        first.kill()
        first.wait()
    # the first run died without releasing: the OS dropped its lock, the folder is free again
    from ttabench.runner.run_folder import RunFolder

    with RunFolder.claim(out):
        pass


def test_shards_of_one_run_share_a_folder_but_not_with_a_whole_run(tmp_path: Path) -> None:
    from ttabench.errors import TTABenchError
    from ttabench.runner.run_folder import RunFolder

    out = tmp_path / "out"
    holder = hold(out, "1/2")
    try:
        with RunFolder.claim(out, (2, 2)):  # the other shard: disjoint cells, allowed
            pass
        with pytest.raises(TTABenchError, match=f"in use by another run \\(pid {holder.pid} "):
            RunFolder.claim(out, (1, 2))  # the same shard twice
        with pytest.raises(TTABenchError, match=f"pid {holder.pid} "):
            RunFolder.claim(out)  # a whole run would compute the shard's cells too
    finally:
        holder.kill()
        holder.wait()
    whole = hold(out)
    try:
        with pytest.raises(TTABenchError, match=f"pid {whole.pid} "):
            RunFolder.claim(out, (2, 2))
    finally:
        whole.kill()
        whole.wait()
