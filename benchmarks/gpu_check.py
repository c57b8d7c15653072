"""The GPU check: what a user's first GPU run needs, proved in a few minutes on one GPU.

Synthetic data and random weights only (nothing is downloaded). Every step prints one line,
``PASS name: detail``, ``FAIL name: detail`` or, on the CPU path, ``SKIP name: needs CUDA``;
its facts go to ``<out>/<name>.json`` and ``<out>/summary.txt`` holds every line. Steps:

1. ``environment``: torch, CUDA, GPU, cuDNN, TF32 and the packages' versions;
2. ``api-matrix``: every registered adapter and its ``guard:`` wrapping x every registered
   estimator on the ``tiny`` suite through the Python API, on the CPU (fp32) and on CUDA
   (fp32, bf16, bf16 + channels_last): every cell ok, the same estimators failing as on the
   CPU, accuracies within tolerance of the CPU's;
3. ``bf16-drift``: an adapter that moves every weight in place moves the probe as far in
   bf16 as in fp32 (autocast must not freeze adaptation);
4. ``host-syncs``: a trajectory waits for the GPU no more often with 30 steps than with 10
   (``torch.cuda.set_sync_debug_mode``: the runner adds no wait per step);
5. ``image-folder``: an ``imagefolder`` run of 256 px JPEGs (resized, cropped to 224) with
   loader workers, pinned memory, bf16 and channels_last, timm resnet50 (random weights),
   RDumb: milliseconds per step and the host's share of them (waiting for the next batch and
   sending it to the device);
6. ``jobs-2``: ``ttabench run --jobs 2`` on one GPU (both workers on it);
7. ``errors``: the one-line errors (``--device cuda:7``, no CUDA visible, bf16 on the CPU, a
   batch that does not fit in GPU memory);
8. ``continual``: ``ttabench continual`` with aetta and enigma-online;
9. ``estimate``: ``ttabench estimate`` on the JPEG folder;
10. ``gpu-bench``: ``benchmarks/gpu_bench.sh`` (model throughput and whole cells);
11. ``deterministic``: the same cell twice with ``--deterministic``: identical numbers.

    bash benchmarks/gpu_check.sh OUT            # one CUDA device, under 7 minutes on an H100
    bash benchmarks/gpu_check.sh --cpu OUT      # the same steps on the CPU (CI runs it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


class Skip(Exception):
    """A step that needs CUDA, on the CPU path."""


class Failed(Exception):
    """A step's check did not hold (its message is the detail)."""


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


class Check:
    """Runs the steps, prints and records one line each."""

    def __init__(self, out: Path, gpu: bool) -> None:
        self.out, self.gpu = out, gpu
        self.device = torch.device("cuda" if gpu else "cpu")
        self.lines: list[str] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "empty.toml").write_text("")

    def step(self, name: str, fn: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            line = f"PASS {name}: {fn()}"
        except Skip as why:
            line = f"SKIP {name}: {why}"
        except Exception as err:  # every failure is one line; the traceback goes to a file
            (self.out / f"{name}.traceback.txt").write_text(traceback.format_exc())
            detail = str(err) if isinstance(err, Failed) else f"{type(err).__name__}: {err}"
            line = f"FAIL {name}: {' '.join(detail.split())[:400]}"
        line += f" ({time.perf_counter() - started:.0f} s)"
        print(line, flush=True)
        self.lines.append(line)
        (self.out / "summary.txt").write_text("\n".join(self.lines) + "\n")

    def record(self, name: str, data: Any) -> None:
        (self.out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))

    def need_gpu(self) -> None:
        if not self.gpu:
            raise Skip("needs CUDA")

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """``python -m ttabench ARGS`` (config: an empty file, so the repository's roster does
        not apply), its output kept in ``<out>/cli.log``."""
        done = subprocess.run([sys.executable, "-m", "ttabench", *args], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})},
                              cwd=self.out)
        with (self.out / "cli.log").open("a") as log:
            log.write(f"$ ttabench {' '.join(args)}\n[exit {done.returncode}]\n"
                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n")
        return done


# --------------------------------------------------------------------------- steps


def environment(check: Check) -> str:
    import ttabench
    import ttabench_enigma
    from ttabench.runner.device_facts import device_facts

    facts: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
        "ttabench": ttabench.__version__, "ttabench_enigma": ttabench_enigma.__version__,
        "cpu_cores": os.cpu_count(), **device_facts(check.device)}
    if check.gpu:
        ensure(torch.cuda.is_available(), "CUDA is not available to torch here")
        props = torch.cuda.get_device_properties(0)
        facts.update(capability=f"{props.major}.{props.minor}",
                     memory_gib=round(props.total_memory / 2**30, 1))
    check.record("environment", facts)
    if not check.gpu:
        return f"torch {facts['torch']}, CPU path ({facts['cpu_cores']} cores)"
    return (f"{facts['gpu']} ({facts['memory_gib']} GiB, sm {facts['capability']}), torch "
            f"{facts['torch']}, CUDA {facts['cuda']}, cuDNN {facts['cudnn']}, TF32 "
            f"conv={facts['tf32']['conv']} matmul={facts['tf32']['matmul']}")


def small_params(name: str) -> dict[str, Any]:
    """Parameters that fit an estimator to the tiny run (probe, checkpoints, window)."""
    import inspect

    from ttabench import registry

    accepted: set[str] = set()
    for klass in registry.get("estimators", name).__mro__:  # up to the first closed signature
        parameters = inspect.signature(klass.__init__).parameters.values()
        accepted |= {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}
        if all(p.kind is not p.VAR_KEYWORD for p in parameters):
            break
    wanted = {"probe_size": 32, "checkpoints": [0, 2, 4], "estimate_at": 4, "window": 2}
    return {k: v for k, v in wanted.items() if k in accepted}


def api_matrix(check: Check) -> str:
    from ttabench import registry
    from ttabench.runner.benchmark import Benchmark, RunSpec

    base = registry.names("adapters")
    adapters = base + [f"guard:{a}" for a in base if a != "source"]
    estimators = registry.names("estimators")
    modes = [("cpu", "fp32", False)]
    if check.gpu:
        modes += [("cuda", "fp32", False), ("cuda", "bf16", False), ("cuda", "bf16", True)]
    runs: dict[str, dict[str, Any]] = {}
    for device, precision, channels_last in modes:
        spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=adapters, estimators=estimators,
                       estimator_params={e: small_params(e) for e in estimators},
                       suite_options={"n_examples": 128}, splits=["noise-2"], batch_size=16,
                       steps=4, device=device, precision=precision, channels_last=channels_last,
                       threads=1)
        bench = Benchmark(spec)
        mode = f"{device} {precision}" + (" channels_last" if channels_last else "")
        runs[mode] = {p.protocol["adapter"]["name"]: bench.execute(p).to_dict()
                      for p in bench.plan()}
    reference = runs["cpu fp32"]
    summary: dict[str, Any] = {}
    problems: list[str] = []
    for mode, cells in runs.items():
        tolerance = 0.05 if "bf16" in mode else 0.02
        worst = 0.0
        for adapter, cell in cells.items():
            if cell["status"] != "ok":
                problems.append(f"{mode} {adapter}: {cell.get('error')}")
                continue
            failing, on_cpu = failed_estimators(cell), failed_estimators(reference[adapter])
            if failing != on_cpu:
                problems.append(f"{mode} {adapter}: estimators failing {failing}, on the CPU "
                                f"{on_cpu}")
            for target, value in cell["targets"].items():
                ref = reference[adapter]["targets"][target]
                if value is None or ref is None:
                    if (value is None) != (ref is None):
                        problems.append(f"{mode} {adapter} {target}: missing")
                    continue
                worst = max(worst, abs(value - ref))
                if abs(value - ref) > tolerance:
                    problems.append(f"{mode} {adapter} {target} accuracy {value:.3f} vs "
                                    f"{ref:.3f} on the CPU")
        summary[mode] = {"max_accuracy_difference": worst,
                         "failing": {a: failed_estimators(c) for a, c in cells.items()
                                     if failed_estimators(c)}}
    check.record("api-matrix", {"adapters": adapters, "estimators": estimators,
                                "summary": summary, "problems": problems, "cells": runs})
    ensure(not problems, "; ".join(problems))
    worst = ", ".join(f"{m} {s['max_accuracy_difference']:.3f}" for m, s in summary.items()
                      if m != "cpu fp32")
    on_cpu = summary["cpu fp32"]["failing"]
    failing = sorted({e for names in on_cpu.values() for e in names})
    return (f"{len(adapters)} adapters x {len(estimators)} estimators x {len(modes)} modes, "
            f"every cell ok" + (f"; max |accuracy - CPU|: {worst}" if worst else "")
            + (f"; failing as on the CPU: {', '.join(failing)} with {len(on_cpu)} adapters"
               if failing else ""))


def failed_estimators(cell: dict[str, Any]) -> list[str]:
    """The estimators of a cell whose result (or one of whose views) failed."""
    out = []
    for name, record in cell["estimators"].items():
        results = [record.get("result")] + list((record.get("views") or {}).values())
        if any(r and r.get("failed") for r in results):
            out.append(name)
    return sorted(out)


def probe_drift(device: torch.device, precision: str) -> float:
    """Mean change of the probe logits over 6 steps of an adapter that moves every weight in
    place (``run_cell`` on the tiny suite, ``precision`` autocast on ``device``)."""
    from ttabench.api import (
        Adapter,
        EstimateResult,
        TrajectoryContext,
        TrajectoryEstimator,
        TrajectoryPlan,
    )
    from ttabench.models.tiny import load_tiny_cnn
    from ttabench.runner.execute import CellInputs, run_cell
    from ttabench.suites.tiny import TinySuite

    class AllWeights(Adapter):
        """Moves every weight in place at each step (seeded noise), as an optimizer does."""

        name = "all-weights"

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__(model.eval())
            self.generator = torch.Generator(device=device).manual_seed(0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.model(x)
            with torch.no_grad():
                for p in self.model.parameters():
                    p.add_(0.02 * torch.randn(p.shape, generator=self.generator,
                                              device=p.device))
            return logits

        def reset(self) -> None:
            """Not needed."""

    class ProbeDrift(TrajectoryEstimator):
        """Mean absolute change of the probe logits from step 0 to step 6."""

        name, kind = "probe-drift", "score"

        def __init__(self) -> None:
            self.snaps: dict[int, torch.Tensor] = {}

        def plan(self) -> TrajectoryPlan:
            return TrajectoryPlan(64, (0, 6), chunk=32)

        def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
            self.snaps[step] = probe_logits.float()

        def compute(self, context: TrajectoryContext) -> EstimateResult:
            return EstimateResult(value=float((self.snaps[6] - self.snaps[0]).abs().mean()))

        def reset(self) -> None:
            self.snaps = {}

    suite = TinySuite(n_examples=128)
    cell = run_cell(CellInputs(
        suite=suite, split=suite.splits()[-1], model=load_tiny_cnn(), adapter_cls=AllWeights,
        adapter_params={}, estimators={"probe-drift": ProbeDrift()}, seed=0, batch_size=16,
        steps=6, device=device, precision=precision))
    return float(cell.results["probe-drift"].value)


def bf16_drift(check: Check) -> str:
    fp32, bf16 = probe_drift(check.device, "fp32"), probe_drift(check.device, "bf16")
    check.record("bf16-drift", {"device": str(check.device), "fp32": fp32, "bf16": bf16})
    ensure(fp32 > 0.05, f"the fp32 probe barely moved ({fp32:.4f})")
    ensure(abs(bf16 - fp32) < 0.1 * fp32, f"probe drift bf16 {bf16:.4f} vs fp32 {fp32:.4f}")
    return f"probe drift fp32 {fp32:.4f}, bf16 {bf16:.4f} ({check.device} autocast)"


class ForwardOnly:
    """An adapter that only predicts (so every wait the check sees is the runner's)."""

    @staticmethod
    def make() -> type:
        from ttabench.api import Adapter

        class Forward(Adapter):
            name = "forward-only"

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return self.model(x)

            def reset(self) -> None:
                """Nothing adapts."""

        return Forward


def host_syncs(check: Check) -> str:
    check.need_gpu()
    from ttabench.models.tiny import load_tiny_cnn
    from ttabench.runner.decoded_cache import LoaderOptions
    from ttabench.runner.execute import CellInputs, run_cell
    from ttabench.suites.tiny import TinySuite

    adapter = ForwardOnly.make()

    def waits(steps: int) -> int:
        suite = TinySuite(n_examples=512)
        inputs = CellInputs(suite=suite, split=suite.splits()[-1], model=load_tiny_cnn(),
                            adapter_cls=adapter, adapter_params={}, estimators={}, seed=0,
                            batch_size=16, steps=steps, device=check.device,
                            loader=LoaderOptions(pin_memory=True))
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run_cell(inputs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    waits(2)  # warm up
    short, long = waits(10), waits(30)
    check.record("host-syncs", {"waits_10_steps": short, "waits_30_steps": long})
    ensure(long == short, f"{long - short} more waits for the GPU in 20 more steps")
    return f"{short} waits for the GPU in a 10-step cell, {long} in a 30-step one: none per step"


def jpeg_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    """``root/a/<class>/<k>.jpg``: random ``size`` px JPEGs (made once)."""
    import numpy as np
    from PIL import Image

    if root.exists():
        return root
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "a" / f"class{c:02d}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{k:03d}.jpg", quality=90)
    return root


@contextlib.contextmanager
def host_timer() -> Iterator[dict[str, float]]:
    """Seconds the trajectory spends waiting for its next batch and sending it to the device
    (the host's share of a step), measured by wrapping the runner's two functions."""
    import ttabench.runner.execute as execute
    from ttabench.runner.decoded_cache import StreamReader

    spent = {"next_batch": 0.0, "to_device": 0.0}
    batches, to_device = StreamReader.batches, execute.batch_to_device

    def timed_batches(self: Any, index_batches: Any, keep: bool = False) -> Iterator[Any]:
        source = batches(self, index_batches, keep)
        if keep:  # the source and bn pass (``fill``), not the trajectory
            yield from source
            return
        while True:
            start = time.perf_counter()
            try:
                item = next(source)
            except StopIteration:
                return
            spent["next_batch"] += time.perf_counter() - start
            yield item

    def timed_to_device(*args: Any, **kw: Any) -> torch.Tensor:
        start = time.perf_counter()
        out = to_device(*args, **kw)
        spent["to_device"] += time.perf_counter() - start
        return out

    StreamReader.batches, execute.batch_to_device = timed_batches, timed_to_device
    try:
        yield spent
    finally:
        StreamReader.batches, execute.batch_to_device = batches, to_device


def image_folder(check: Check) -> str:
    from ttabench.runner.benchmark import Benchmark, RunSpec

    gpu = check.gpu
    size, crop = (256, 224) if gpu else (40, 32)
    classes, per_class = (8, 96) if gpu else (4, 16)
    root = jpeg_folder(check.out / "jpegs", classes, per_class, size)
    steps, batch = (20, 64) if gpu else (4, 8)
    spec = RunSpec(suite="imagefolder", model="timm:resnet50?random" if gpu else "tiny-cnn",
                   adapters=["rdumb"], estimators=[], device=str(check.device),
                   suite_options={"root": str(root), "splits": "a", "class_map": "sorted",
                                  "image_size": crop, "resize": size},
                   batch_size=batch, steps=steps, cache_mib=0, threads=1 if not gpu else None,
                   precision="bf16" if gpu else "fp32", channels_last=gpu)
    bench = Benchmark(spec)
    ensure(bench.loader.workers >= 1, "no loader workers for an image folder")
    ensure(bench.loader.pin_memory == gpu, "pinned memory should follow CUDA")
    with host_timer() as spent:
        cell = bench.execute(bench.plan()[0]).to_dict()
    ensure(cell["status"] == "ok", str(cell.get("error")))
    adaptation = cell["timings"]["adaptation"]
    ms = 1000 * adaptation / steps
    share = (spent["next_batch"] + spent["to_device"]) / adaptation
    check.record("image-folder", {"ms_per_step": ms, "host_share": share, "spent_s": spent,
                                  "timings": cell["timings"], "data": cell["data"],
                                  "spec": {"model": spec.model, "batch": batch, "px": crop,
                                           "precision": spec.precision,
                                           "channels_last": spec.channels_last}})
    return (f"{spec.model} {crop} px, batch {batch}, {spec.precision}"
            f"{' channels_last' if gpu else ''}, {bench.loader.workers} workers, pinned={gpu}: "
            f"{ms:.1f} ms per step, host share {100 * share:.0f}% (next batch "
            f"{1000 * spent['next_batch'] / steps:.1f} ms, to device "
            f"{1000 * spent['to_device'] / steps:.1f} ms per step)")


def run_args(check: Check, out: str, *extra: str, splits: str = "noise-1,noise-2") -> list[str]:
    """``ttabench run`` of a small tiny run (a cell per split) into ``<out dir>/<out>``."""
    return ["run", "--config", str(check.out / "empty.toml"), "-s", "tiny", "-m", "tiny-cnn",
            "-a", "rdumb", "-e", "enigma", "--set", "estimator.enigma.probe_size=32",
            "--set", "estimator.enigma.checkpoints=[0, 4]", "--set",
            "estimator.enigma.estimate_at=4", "--set", "suite.tiny.n_examples=128",
            "--batch-size", "16", "--splits", splits, "--threads", "1",
            "--device", str(check.device), "--no-baselines", "-o", str(check.out / out), *extra]


def last_line(text: str) -> str:
    """The last line a command printed (its error line), without progress bars."""
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else ""


def cells_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "cells").glob("*.json"))]


def jobs_2(check: Check) -> str:
    done = check.cli(*run_args(check, "jobs2", "--jobs", "2"))
    ensure(done.returncode == 0, f"exit {done.returncode}: {last_line(done.stderr)}")
    cells = cells_of(check.out / "jobs2")
    ensure(len(cells) == 2 and all(c["status"] == "ok" for c in cells),
           f"{len(cells)} cells, statuses {[c['status'] for c in cells]}")
    visible = sorted({str(c["environment"].get("cuda_visible_devices")) for c in cells})
    if check.gpu:
        ensure(visible == ["0"], f"workers saw GPUs {visible}, expected 0 for both")
    device_line = next((line for line in done.stdout.splitlines()
                        if line.startswith("device:")), "no device line")
    return f"2 cells in 2 processes, GPUs seen {visible}; {device_line}"


def errors(check: Check) -> str:
    cases = [("cuda:7", ["--device", "cuda:7"], {}),
             ("no CUDA visible", ["--device", "cuda"], {"CUDA_VISIBLE_DEVICES": ""}),
             ("bf16 on the CPU", ["--device", "cpu", "--precision", "bf16"], {})]
    seen = []
    for label, extra, env in cases:
        args = run_args(check, f"errors-{len(seen)}")
        args = [a for a in args if a != str(check.device)]
        args.remove("--device")
        done = check.cli(*args, *extra, env=env)
        lines = done.stderr.strip().splitlines()
        ensure(done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "),
               f"{label}: exit {done.returncode}, stderr {done.stderr.strip()[-300:]!r}")
        seen.append(f"{label}: {lines[0][:90]}")
    if check.gpu:
        seen.append(f"a batch too big: {out_of_memory(check)[:120]}")
    check.record("errors", seen)
    return "; ".join(seen) + ("" if check.gpu else "; (a batch too big: needs CUDA)")


def out_of_memory(check: Check) -> str:
    """A cell whose one batch cannot fit: its one-line error names the options that fix it,
    and the next cell runs."""
    from synthetic import SyntheticSuite

    from ttabench import registry
    from ttabench.paths import cache_dir
    from ttabench.runner.execute import CellInputs, run_cell
    from ttabench.runner.views import describe_error
    from ttabench_enigma import RDumb

    loaded = registry.load_model("timm:resnet50?random", cache_dir=cache_dir())
    batch = 8192
    suite = SyntheticSuite(batch, 224, loaded.num_classes)
    try:
        run_cell(CellInputs(suite=suite, split=suite.splits()[0], model=loaded,
                            adapter_cls=RDumb, adapter_params={}, estimators={}, seed=0,
                            batch_size=batch, steps=1, device=check.device))
    except Exception as err:  # the runner's one line for it
        line = describe_error(err)
    else:
        raise Failed(f"a batch of {batch} 224 px images fitted in GPU memory")
    ensure("--batch-size" in line and "--jobs" in line, f"the error does not name the fix: {line}")
    torch.cuda.empty_cache()
    small = SyntheticSuite(64, 224, loaded.num_classes)
    after = run_cell(CellInputs(suite=small, split=small.splits()[0], model=loaded,
                                adapter_cls=RDumb, adapter_params={}, estimators={}, seed=0,
                                batch_size=32, steps=1, device=check.device))
    ensure(after.adaptation["steps"] == 1, "the cell after the out-of-memory one did not run")
    return line


def continual(check: Check) -> str:
    done = check.cli("continual", "--config", str(check.out / "empty.toml"), "--no-baselines",
                     "-o", str(check.out / "continual"), "-a", "rdumb",
                     "-e", "aetta", "-e", "enigma-online", "-s", "tiny", "-m", "tiny-cnn",
                     "--severities", "2", "--steps-per-split", "6", "--window", "3",
                     "--batch-size", "16", "--device", str(check.device), "--threads", "1",
                     "--set", "estimator.enigma-online.window=3")
    ensure(done.returncode == 0, f"exit {done.returncode}: {last_line(done.stderr)}")
    cells = cells_of(check.out / "continual")
    ensure(bool(cells) and all(c["status"] == "ok" for c in cells),
           f"continual cells: {[c['status'] for c in cells]}")
    windows = {name: len(record["windows"]) for c in cells
               for name, record in c["estimators"].items()}
    ensure(all(windows.values()), f"window estimates per estimator: {windows}")
    return (f"{len(cells)} continual cell(s), window estimates {windows}; "
            f"{done.stdout.strip().splitlines()[-1][:120]}")


def estimate(check: Check) -> str:
    root = jpeg_folder(check.out / "jpegs", *((8, 96, 256) if check.gpu else (4, 16, 40)))
    model = "timm:resnet50?random" if check.gpu else "tiny-cnn"
    size = ["--image-size", "224" if check.gpu else "32"]
    done = check.cli("estimate", "--config", str(check.out / "empty.toml"), "-e", "ac", "-a",
                     "rdumb", "-m", model, "--data", str(root / "a"), *size, "--steps", "4",
                     "--bootstrap", "2", "--device", str(check.device), "--threads", "1",
                     "--json")
    ensure(done.returncode == 0, f"exit {done.returncode}: {last_line(done.stderr)}")
    report = json.loads(done.stdout)
    check.record("estimate", report)
    return (f"ac on {report['n_images']} images: {100 * report['estimate']:.1f}% "
            f"[{100 * report['interval'][0]:.1f}, {100 * report['interval'][1]:.1f}]; "
            f"{report['device']}")


def gpu_bench(check: Check) -> str:
    args = (["--iters", "6", "--repeats", "2", "--cell-steps", "8"] if check.gpu else
            ["--device", "cpu", "--model", "tiny-cnn", "--batch", "4", "--size", "16",
             "--iters", "1", "--repeats", "1", "--cell-steps", "2"])
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_bench.sh"), *args,
                           "--out", str(check.out / "gpu_bench")], capture_output=True,
                          text=True, timeout=300)
    (check.out / "gpu_bench.log").write_text(done.stdout + done.stderr)
    ensure(done.returncode == 0, f"exit {done.returncode}: {last_line(done.stderr)}")
    figures = json.loads((check.out / "gpu_bench" / "gpu_bench.json").read_text())["figures"]
    step = {k: v for k, v in figures.items() if k.startswith("whole-cell adaptation step ms")}
    return "; ".join(f"{k.split('[')[1].rstrip(']')}: {v:.1f} ms/step" for k, v in step.items())


def deterministic(check: Check) -> str:
    runs = []
    for name in ("det-1", "det-2"):
        done = check.cli(*run_args(check, name, "--deterministic", splits="noise-2"))
        ensure(done.returncode == 0, f"exit {done.returncode}: {last_line(done.stderr)}")
        runs.append({c["key"]: (c["targets"], c["estimators"]) for c in cells_of(check.out / name)})
    ensure(len(runs[0]) == 1 and runs[0].keys() == runs[1].keys(), "the runs planned other cells")
    ensure(runs[0] == runs[1], "the cell's numbers differ between two --deterministic runs")
    protocol = cells_of(check.out / "det-1")[0]["protocol"]
    recorded = protocol.get("cuda", {}).get("deterministic")
    if check.gpu:
        ensure(recorded == {"cudnn": True, "algorithms": True}, f"recorded {recorded}")
    return f"the cell identical in two runs; recorded {recorded or 'nothing (CPU)'}"


STEPS: list[tuple[str, Callable[[Check], str]]] = [
    ("environment", environment), ("api-matrix", api_matrix), ("bf16-drift", bf16_drift),
    ("host-syncs", host_syncs), ("image-folder", image_folder), ("jobs-2", jobs_2),
    ("errors", errors), ("continual", continual), ("estimate", estimate),
    ("gpu-bench", gpu_bench), ("deterministic", deterministic)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="Folder for the summary and each step's facts.")
    parser.add_argument("--cpu", action="store_true", help="The CPU path (no CUDA needed).")
    parser.add_argument("--only", default="", help="Comma list of steps to run (default all).")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    check = Check(args.out.resolve(), gpu=not args.cpu)
    only = {s for s in args.only.split(",") if s}
    for name, fn in STEPS:
        if not only or name in only:
            check.step(name, lambda fn=fn: fn(check))
    failed = sum(line.startswith("FAIL") for line in check.lines)
    print(f"{len(check.lines) - failed} of {len(check.lines)} steps passed or skipped in "
          f"{time.perf_counter() - started:.0f} s; summary in {check.out / 'summary.txt'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
