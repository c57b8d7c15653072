"""Throughput on one CUDA device: images/s of the source pass, the bn pass, a bare fwd+bwd
step and an RDumb step (fp32 or TF32, bf16 autocast, channels_last), WF's overhead ratio, and
the milliseconds per adaptation step of a whole cell (``run_cell``: batches from memory to the
device, the adapter, the online outputs back; not only the model).

Synthetic 224 px uint8 batches (no data on disk), timm ``resnet50`` with random weights
(``timm:resnet50?random``: throughput does not depend on the weights). Each model figure is the
median of ``--repeats`` timed runs of ``--iters`` batches after ``--warmup`` batches, with
``torch.cuda.synchronize`` around each run. WF overhead: the time of a 990-step RDumb cell
with its two snapshots of a 1,000-image probe (chunks of 100), over the same steps alone:
``1 + 2 * t_snapshot / (990 * t_step)``. "fp32" on CUDA is labelled ``tf32`` where TF32 runs the
convolutions (``torch.backends.cudnn.allow_tf32``, PyTorch's default).

    bash benchmarks/gpu_bench.sh            # on a machine with a CUDA device (< 8 min)

Writes gpu_bench.{json,md} into ``--out`` (default benchmarks/results). Without CUDA it refuses
with one line; ``--device cpu`` runs the same path on the CPU (the tests do, with a tiny model).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).parent / "results"
STEPS, PROBE, CHUNK = 990, 1000, 100


def timed(fn: Callable[[], object], device: torch.device, iters: int, warmup: int,
          repeats: int) -> float:
    """Median seconds per call of ``fn`` (synchronized on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        runs.append((time.perf_counter() - start) / iters)
    return statistics.median(runs)


def precision(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    return (torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
            if bf16 else contextlib.nullcontext())


def float_tag(device: torch.device) -> str:
    """What "full precision" convolutions run in here: TF32 on CUDA when cuDNN may use it."""
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def measure(model: nn.Module, device: torch.device, *, batch: int = 64, size: int = 224,
            iters: int = 20, warmup: int = 5, repeats: int = 3) -> dict[str, float]:
    """Images/s of each phase and the WF overhead ratio for ``model`` on ``device``."""
    from ttabench.api import to_unit_float
    from ttabench.runner.passes import batch_statistics_copy
    from ttabench_enigma import RDumb

    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8).to(device)
    probe = torch.randint(0, 256, (PROBE // 10, 3, size, size), dtype=torch.uint8).to(device)
    out: dict[str, float] = {}
    for channels_last in (False, True):
        for bf16 in (False, True):
            tag = ("bf16" if bf16 else float_tag(device)) + (" channels_last" if channels_last else "")
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            frozen = copy.deepcopy(model).to(device, memory_format=fmt).eval()
            bn = batch_statistics_copy(frozen)
            x = to_unit_float(images)

            def source() -> None:
                with torch.no_grad(), precision(bf16, device):
                    frozen(x)

            def bn_pass() -> None:
                with torch.no_grad(), precision(bf16, device):
                    bn(x)

            bare = copy.deepcopy(frozen).train()
            opt = torch.optim.SGD(bare.parameters(), lr=2.5e-4, momentum=0.9)

            def bare_step() -> None:
                with precision(bf16, device):
                    logits = bare(x)
                    loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

            adapter = RDumb(copy.deepcopy(frozen))

            def rdumb_step() -> None:
                with precision(bf16, device):
                    adapter(x)

            def snapshot() -> None:
                with torch.no_grad(), precision(bf16, device):
                    for part in torch.split(probe, CHUNK):
                        adapter.predict(to_unit_float(part))

            t = {name: timed(fn, device, iters, warmup, repeats) for name, fn in
                 (("source pass", source), ("bn pass", bn_pass), ("bare fwd+bwd step", bare_step),
                  ("RDumb step", rdumb_step))}
            for name, seconds in t.items():
                out[f"{name} [{tag}] images/s"] = batch / seconds
            t_snap = timed(snapshot, device, 1, 1, repeats) * 10  # a tenth of the probe, x10
            out[f"WF overhead ratio [{tag}]"] = 1 + 2 * t_snap / (STEPS * t["RDumb step"])
    return out


def measure_cell(loaded: Any, device: torch.device, *, bf16: bool, channels_last: bool,
                 batch: int = 64, size: int = 224, steps: int = 20) -> dict[str, float]:
    """A whole RDumb cell on random images held in memory (``run_cell``): milliseconds per
    adaptation step and per image of the source + bn pass (a first, shorter cell warms up)."""
    from synthetic import SyntheticSuite

    from ttabench.runner.decoded_cache import LoaderOptions
    from ttabench.runner.execute import CellInputs, run_cell
    from ttabench_enigma import RDumb

    def cell(n_steps: int) -> Any:
        suite = SyntheticSuite(batch * (n_steps + 1), size, loaded.num_classes)
        return run_cell(CellInputs(
            suite=suite, split=suite.splits()[0], model=loaded, adapter_cls=RDumb,
            adapter_params={}, estimators={}, seed=0, batch_size=batch, steps=n_steps,
            device=device, precision="bf16" if bf16 else "fp32", channels_last=channels_last,
            loader=LoaderOptions(workers=0, pin_memory=device.type == "cuda")))

    cell(2)
    out = cell(steps)
    timings, n = out.timings, out.n_examples
    return {"whole-cell adaptation step ms": 1000 * timings["adaptation"] / steps,
            "whole-cell source+bn pass ms per image": 1000 * timings["source_and_bn_pass"] / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="timm:resnet50?random")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: gpu_bench needs a CUDA device; none is available here "
              "(benchmarks/results/gpu_bench.md says not run)", file=sys.stderr)
        return 2
    from ttabench import registry
    from ttabench.paths import cache_dir
    from ttabench.runner.device_facts import configure_device, device_facts
    from ttabench.store import write_json_atomic

    configure_device(device, deterministic=False)  # as a run: cuDNN benchmarks its kernels
    loaded = registry.load_model(args.model, cache_dir=cache_dir())
    figures = measure(loaded.module, device, batch=args.batch, size=args.size, iters=args.iters,
                      repeats=args.repeats)
    cells = [(False, False), (True, False), (True, True)] if device.type == "cuda" else [
        (False, False)]
    for bf16, channels_last in cells:
        tag = ("bf16" if bf16 else float_tag(device)) + (" channels_last" if channels_last else "")
        for name, value in measure_cell(loaded, device, bf16=bf16, channels_last=channels_last,
                                        batch=args.batch, size=args.size,
                                        steps=args.cell_steps).items():
            figures[f"{name} [{tag}]"] = value
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    command = "bash benchmarks/gpu_bench.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"date": datetime.date.today().isoformat(), "device": name,
              "device_facts": device_facts(device), "torch": torch.__version__,
              "model": args.model, "batch": args.batch, "image_px": args.size,
              "command": command.strip(), "figures": figures}
    write_json_atomic(args.out / "gpu_bench.json", result)
    lines = ["# GPU throughput", "", f"{name}, torch {result['torch']}, {args.model}, batch "
             f"{args.batch} of synthetic {args.size} px images; `{result['command']}`.",
             "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if "ratio" in k or " ms" in k else f"| {k} | {v:.0f} |"
              for k, v in figures.items()]
    (args.out / "gpu_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
