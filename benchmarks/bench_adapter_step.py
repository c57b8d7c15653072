"""Cost of one RDumb step against a bare PyTorch loop doing the same work.

The bare loop runs forward, the same filtered and reweighted entropy loss (written plainly, with
index selection as in the reference code), backward and an SGD step on the same normalization
parameters. Both run on configured copies of one model and on the same batches; timing blocks
alternate between the two (interleaved repeats), after warm-up; the per-step median is
reported. Margins are set so that every sample is kept (e_margin above ln K, d_margin above 1), so
every step does a full backward and update: the most expensive case.

    .venv/bin/python benchmarks/bench_adapter_step.py [--repeats 7] [--steps 5] [--timm]
        [--clock cpu --threads 1]   # on a shared, loaded machine

Writes benchmarks/results/adapter_step.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.store import write_json_atomic
from ttabench_enigma import RDumb, collect_params, configure_model

RESULTS = Path(__file__).parent / "results"
BATCH, SIZE, CLASSES = 64, 32, 10
E_MARGIN, D_MARGIN = 10.0, 2.0  # above ln K and |cos| <= 1: every sample is kept, every step updates


class Block(nn.Module):
    """Basic residual block: conv-BN-ReLU-conv-BN plus a (strided 1x1 conv-BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(num_classes: int = CLASSES) -> nn.Module:
    """A ResNet-ish BN network for 32 px inputs: stem 16, stages 16/32/64, one block each."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Block(16, 16, 1),
        Block(16, 32, 2),
        Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


class BareLoop:
    """Forward, RDumb's loss written plainly, backward, SGD step: no adapter machinery."""

    def __init__(self, model: nn.Module) -> None:
        self.model = configure_model(model)
        params, _ = collect_params(self.model)
        self.optimizer = torch.optim.SGD(params, lr=2.5e-4, momentum=0.9)
        self.ema: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
        ids = torch.where(entropy < E_MARGIN)[0]
        probs = logits[ids].detach().softmax(1)
        if self.ema is not None:
            cosine = F.cosine_similarity(self.ema.unsqueeze(0), probs, dim=1)
            keep = torch.where(cosine.abs() < D_MARGIN)[0]
            ids, probs = ids[keep], probs[keep]
        if len(ids) > 0:
            kept = entropy[ids]
            loss = (kept * torch.exp(E_MARGIN - kept.detach())).mean()
            loss.backward()
            self.optimizer.step()
            mean = probs.mean(0)
            self.ema = mean if self.ema is None else 0.9 * self.ema + 0.1 * mean
        self.optimizer.zero_grad(set_to_none=True)
        return logits


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_block(step, batches: list[torch.Tensor], steps: int, device: torch.device, clock) -> float:
    """Seconds per step over ``steps`` steps."""
    sync(device)
    start = clock()
    for i in range(steps):
        step(batches[i % len(batches)])
    sync(device)
    return (clock() - start) / steps


def measure(
    name: str, model: nn.Module, device: torch.device, repeats: int, steps: int, clock=time.perf_counter
) -> dict:
    torch.manual_seed(0)
    model = model.to(device)
    batches = [torch.rand(BATCH, 3, SIZE, SIZE, device=device) for _ in range(4)]
    adapter = RDumb(copy.deepcopy(model), e_margin=E_MARGIN, d_margin=D_MARGIN, reset_every=10**9)
    bare = BareLoop(copy.deepcopy(model))
    for step in (adapter, bare):  # warm-up
        time_block(step, batches, 3, device, clock)
    times: dict[str, list[float]] = {"rdumb": [], "bare": []}
    for r in range(repeats):
        order = (("rdumb", adapter), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("rdumb", adapter))
        for label, step in order:
            times[label].append(time_block(step, batches, steps, device, clock))
    rdumb, plain = statistics.median(times["rdumb"]), statistics.median(times["bare"])
    assert adapter.counters()["last_kept"] == BATCH, "the benchmark must keep every sample"
    return {
        "model": name,
        "rdumb_step_s": rdumb,
        "bare_step_s": plain,
        "ratio": rdumb / plain,
        "rdumb_times_s": times["rdumb"],
        "bare_times_s": times["bare"],
        "adapted_layers": adapter.params()["adapted_layers"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per loop (median)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--timm", action="store_true", help="also time timm resnet18 (10 classes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall",
        help="wall time, or process CPU time (robust on a shared, loaded machine; use 1 thread)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = [("small-resnet (BN, 32 px)", small_resnet())]
    if args.timm:
        import timm

        resnet18 = timm.create_model("resnet18", num_classes=CLASSES)
        models.append(("timm resnet18 (10 classes, random init, 32 px)", resnet18))
    clock = CLOCKS[args.clock]
    rows = [measure(name, model, device, args.repeats, args.steps, clock) for name, model in models]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
        },
        "torch": torch.__version__,
        "batch": BATCH,
        "image_size": SIZE,
        "clock": args.clock,
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "results": rows,
    }
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write_json_atomic(args.out / f"adapter_step{suffix}.json", result)
    lines = [
        "# One RDumb step vs a bare PyTorch loop",
        "",
        f"`{result['command']}` on {result['date']}, {result['machine']['device']} "
        f"({result['machine']['processor']}, {result['machine']['torch_threads']} threads, "
        f"load average {result['machine']['load_average_1min']:.1f}), "
        f"torch {result['torch']}; {args.clock} clock; batch {BATCH}, {SIZE} px; "
        f"median of {args.repeats} interleaved "
        f"blocks of {args.steps} steps after warm-up; every sample kept (full backward each step).",
        "",
        "| model | RDumb step (ms) | bare loop step (ms) | ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {1000 * r['rdumb_step_s']:.2f} | {1000 * r['bare_step_s']:.2f} | {r['ratio']:.3f} |"
        for r in rows
    ]
    (args.out / f"adapter_step{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
