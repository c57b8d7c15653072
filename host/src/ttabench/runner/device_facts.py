"""What decides a cell's numbers on a GPU beyond the code, the data and the seed.

On CUDA the same seed gives other numbers on another GPU model, another cuDNN, with TF32 on or
off (convolutions: ``torch.backends.cudnn.allow_tf32``, on by default; matrix products:
``torch.backends.cuda.matmul.allow_tf32``, off by default) and with cuDNN free to pick the
fastest, not always deterministic, kernel (``cudnn.benchmark``). ``device_facts`` names them;
every cell run on CUDA records them in its protocol (``cuda``), so in its key. On the CPU it is
empty and a cell's key does not change.

``configure_device`` sets them before any work: by default cuDNN benchmarks its kernels (the
fastest for the fixed batch shapes of a run); ``--deterministic`` asks for deterministic
kernels instead (cuDNN deterministic, no benchmark, ``torch.use_deterministic_algorithms``
warning where an operation has no deterministic kernel, and the cuBLAS workspace setting that
deterministic matrix products need), so the same seed on the same GPU gives the same numbers.
On the CPU the numbers are already fixed by the seed and the thread count, and the option
changes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ttabench.errors import TTABenchError

#: The cuBLAS workspace setting deterministic matrix products need (CUDA's documentation).
CUBLAS_WORKSPACE = ":4096:8"


def configure_device(device: torch.device, deterministic: bool, runs_cells: bool = True) -> None:
    """On CUDA: make ``device`` the current device when this process runs cells (``cuda:N``:
    no context opens on GPU 0) and set the kernel choice (see the module docstring); nothing
    on other devices. A process that only plans cells (a Ray driver) sets the same kernel
    choice, so it plans under the settings its workers run with, and touches no GPU."""
    if device.type != "cuda":
        return
    if runs_cells and device.index is not None:
        torch.cuda.set_device(device)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def kernel_settings() -> dict[str, Any]:
    """The settings of this process that choose CUDA kernels (known without a GPU)."""
    return {
        "tf32": {"conv": bool(torch.backends.cudnn.allow_tf32),
                 "matmul": bool(torch.backends.cuda.matmul.allow_tf32)},
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "deterministic": {"cudnn": bool(torch.backends.cudnn.deterministic),
                          "algorithms": torch.are_deterministic_algorithms_enabled()},
    }


def device_facts(device: torch.device, gpu_known: bool = True) -> dict[str, Any]:
    """The facts of ``device`` that decide numbers: on CUDA the GPU model (when
    ``gpu_known``: this process runs the cells), CUDA's and cuDNN's versions and
    ``kernel_settings``; elsewhere none."""
    if device.type != "cuda":
        return {}
    facts: dict[str, Any] = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    if gpu_known:
        facts["gpu"] = torch.cuda.get_device_name(device)
    return {**facts, **kernel_settings()}


def check_same_facts(planned: dict[str, Any], here: dict[str, Any]) -> None:
    """Refuse to run cells planned under other device facts than this process's (a worker
    on another GPU model or with other settings than the driver planned for): every fact the
    plan names must be the same here."""
    differ = [f"{key} {planned[key]!r} (planned) vs {here.get(key)!r} (here)"
              for key in sorted(planned) if planned[key] is not None and here.get(key) != planned[key]]
    if differ:
        raise TTABenchError("this process's device differs from the one the cells were planned "
                            "for: " + "; ".join(differ) + "; run each GPU model in its own run "
                            "(--device cuda:N)")


def device_line(device: torch.device, facts: dict[str, Any], threads: int) -> str:
    """The resolved device in one line, as a run prints it."""
    if device.type != "cuda":
        return f"{device} ({threads} thread{'s' * (threads != 1)})"
    tf32 = facts.get("tf32", {})
    on = [name for name in ("conv", "matmul") if tf32.get(name)]
    kernels = ("deterministic kernels" if facts.get("deterministic", {}).get("cudnn")
               else "cuDNN benchmark" if facts.get("cudnn_benchmark") else "cuDNN default kernels")
    return (f"{device} ({facts.get('gpu', 'GPU chosen per task')}, CUDA {facts.get('cuda')}, "
            f"cuDNN {facts.get('cudnn')}, TF32 {' and '.join(on) or 'off'}, {kernels})")
