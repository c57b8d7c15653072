"""Host milliseconds per adaptation step of 64 images of 224 px: the main thread's work besides
the model, before and after the GPU data path, as a ratio measured in one run.

Per step the main thread takes the batch out of the decoded cache, sends it to the device and
takes the step's outputs back. Both sides read the same cache (``DecodedCache``, uint8 images)
in the same seeded stream:

- before (commit 3eeddf2, restated): ``storage[slot[idx]]`` (a pageable uint8 batch), then
  ``to_unit_float(x).to(device)``: the float32 conversion on the host (4 bytes a pixel) and a
  copy from pageable memory, which CUDA stages through a pinned buffer with a host memcpy of
  every byte before the copy engine moves it; outputs ``logits.float().cpu()`` and
  ``int(correct(logits, y).sum())`` every step;
- after (the runner's own functions): ``StreamReader.batches`` (``DecodedCache.gather`` into
  pinned memory on CUDA), ``batch_to_device`` (the uint8 batch copied without waiting, the
  conversion on the device) and ``HostCopies.add`` for the outputs (no wait).

With CUDA present both run for real and the figure is the host's time per step (the model is
left out; nothing waits for the device inside a step). Without CUDA (this project's CI
machines) there is no device side, and each side's host work is run as the host would do it:
"to the device" is the staging memcpy of the bytes a pageable copy moves (before: the
float32 batch) or nothing (after: the batch is in pinned memory, the copy engine reads it);
the conversion of the after side runs on the device, so not here. The host's own work is
measured, never estimated: gathers, conversions and copies of real 224 px batches.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_host_path.py

Writes benchmarks/results/host_path.{json,md} (the median over ``--repeats`` runs of
``--steps`` steps, each side alternately, after one warm-up run of each).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ttabench.api import to_unit_float
from ttabench.runner.compute import HostCopies, batch_to_device
from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.passes import correct
from ttabench.runner.stream import stream_indices
from ttabench.store import write_json_atomic

RESULTS = Path(__file__).parent / "results"
BATCH, SIZE, CLASSES = 64, 224, 1000


def filled_cache(n: int, seed: int = 0) -> DecodedCache:
    """A cache holding ``n`` random 224 px uint8 images (as the combined pass leaves it)."""
    generator = torch.Generator().manual_seed(seed)
    cache = DecodedCache(n, budget_bytes=n * 3 * SIZE * SIZE)
    for start in range(0, n, BATCH):
        idx = torch.arange(start, min(start + BATCH, n))
        images = torch.randint(0, 256, (len(idx), 3, SIZE, SIZE), dtype=torch.uint8,
                               generator=generator)
        cache.add(idx, images, torch.randint(0, CLASSES, (len(idx),), generator=generator))
    cache.storage()
    return cache


def before_step(cache: DecodedCache, idx: torch.Tensor, device: torch.device,
                logits: torch.Tensor) -> None:
    """The main thread's step at commit 3eeddf2 (model left out)."""
    x, y = cache.storage()[cache.slot[idx]], cache.labels[idx]
    x = to_unit_float(x)
    if device.type == "cuda":
        x = x.to(device)
    else:  # the host memcpy a pageable copy makes into the driver's pinned staging buffer
        torch.empty_like(x).copy_(x)
    logits.detach().float().cpu()
    int(correct(logits, y).sum())


def after_step(x: torch.Tensor, device: torch.device, logits: torch.Tensor,
               outputs: HostCopies) -> None:
    """The main thread's step now, past the cache gather (model left out)."""
    if device.type == "cuda":
        batch_to_device(x, device)
    outputs.add(logits)


def host_ms(run: Callable[[], None], steps: int) -> float:
    """Milliseconds per step of ``run`` (one whole stream of ``steps`` steps)."""
    start = time.perf_counter()
    run()
    return 1000 * (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache = filled_cache(args.images)
    reader = StreamReader(torch.utils.data.TensorDataset(torch.empty(args.images)), cache,
                          LoaderOptions(pin_memory=device.type == "cuda"))
    batches = list(stream_indices(args.images, 0, BATCH, args.steps))
    logits = torch.randn(BATCH, CLASSES, device=device)

    def before() -> None:
        for idx in batches:
            before_step(cache, idx, device, logits)

    def after() -> None:
        outputs = HostCopies()
        for x, _ in reader.batches(batches):
            after_step(x, device, logits, outputs)
        if device.type == "cuda":
            torch.cuda.synchronize()  # the queued copies end before the next run starts

    runs: dict[str, list[float]] = {"before": [], "after": []}
    for repeat in range(args.repeats + 1):
        for name, run in (("before", before), ("after", after)):
            ms = host_ms(run, args.steps)
            if repeat:  # the first run of each warms up
                runs[name].append(ms)
    figures = {name: statistics.median(values) for name, values in runs.items()}
    ratio = figures["after"] / figures["before"]
    command = ("OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_host_path.py "
               + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    result = {"date": datetime.date.today().isoformat(), "command": command,
              "device": str(device), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "batch": BATCH, "image_px": SIZE, "steps": args.steps, "repeats": args.repeats,
              "host_ms_per_step": figures, "runs_ms": runs, "ratio_after_over_before": ratio}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "host_path.json", result)
    emulated = device.type != "cuda"
    lines = [
        "# Host work per adaptation step (224 px, batch 64)", "",
        f"`{command}` ({result['date']}; {device}, {result['threads']} thread(s), torch "
        f"{result['torch']}; median of {args.repeats} runs of {args.steps} steps after a "
        "warm-up run).", "",
        "| path | host ms per step |", "|---|---|",
        f"| before (3eeddf2: float32 on the host, pageable copy, an output wait per step) | "
        f"{figures['before']:.2f} |",
        f"| after (uint8 from pinned memory, converted on the device, outputs without a wait) "
        f"| {figures['after']:.2f} |",
        f"| ratio after / before | {ratio:.3f} |", "",
    ]
    if emulated:
        lines.append(
            "No CUDA here: the host's side of each copy to the device is what the host would "
            "do (before: the staging memcpy of the float32 batch a pageable copy makes; "
            "after: nothing, the uint8 batch is already pinned); the after side's conversion "
            "runs on the device and is not host work. Both gather the batch from the cache.")
    (args.out / "host_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
