"""Throughput on one CUDA device: images/s of the source pass, the bn pass, a bare fwd+bwd
step and an RDumb step (fp32 and bf16 autocast, channels_last), and WF's overhead ratio.

Synthetic 224 px uint8 batches (no data on disk), timm ``resnet50`` with random weights
(``timm:resnet50?random``: throughput does not depend on the weights). Each figure is the
median of ``--repeats`` timed runs of ``--iters`` batches after ``--warmup`` batches, with
``torch.cuda.synchronize`` around each run. WF overhead: the time of a 990-step RDumb cell
with its two snapshots of a 1,000-image probe (chunks of 100), over the same steps alone:
``1 + 2 * t_snapshot / (990 * t_step)``.

    bash benchmarks/gpu_bench.sh            # on a machine with a CUDA device (< 8 min)

Writes benchmarks/results/gpu_bench.{json,md}. Without CUDA it refuses with one line.
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
    return (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16
            else contextlib.nullcontext())


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
            tag = ("bf16" if bf16 else "fp32") + (" channels_last" if channels_last else "")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: gpu_bench needs a CUDA device; none is available here "
              "(benchmarks/results/gpu_bench.md says not run)", file=sys.stderr)
        sys.exit(2)
    from ttabench import registry

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = registry.load_model("timm:resnet50?random", num_classes=1000).module
    figures = measure(model, device, iters=args.iters, repeats=args.repeats)
    result = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "model": "timm resnet50 (random weights)",
              "batch": 64, "image_px": 224, "figures": figures}
    from ttabench.store import write_json_atomic

    write_json_atomic(RESULTS / "gpu_bench.json", result)
    lines = ["# GPU throughput", "", f"{result['device']}, torch {result['torch']}, timm "
             "resnet50, batch 64 of synthetic 224 px images; `bash benchmarks/gpu_bench.sh`.",
             "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if "ratio" in k else f"| {k} | {v:.0f} |"
              for k, v in figures.items()]
    (RESULTS / "gpu_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
