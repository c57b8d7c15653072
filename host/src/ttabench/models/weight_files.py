"""Reading weight files a user points at as tensors only: no code from the file ever runs.

``torch.save`` files are pickles, and unpickling an arbitrary pickle can run arbitrary code.
Every weight file is therefore read either with safetensors (``.safetensors``: tensors and
string metadata, no code at all) or with ``torch.load(weights_only=True)``, PyTorch's
restricted unpickler that builds only tensors and plain containers (dict, list, tuple, str,
numbers) and refuses every other object. A refused file is a one-line TTABenchError naming the
object the file wanted to build.

Loading a whole pickled ``nn.Module`` needs the full unpickler; ``load_tensors`` never does it,
the checkpoint source does it only on the user's explicit opt-in (``--trust-pickle``).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ttabench.errors import TTABenchError

SAFETENSORS_SUFFIX = ".safetensors"
#: Keys under which training scripts nest the weights, in the order timm's reader tries them
#: (an EMA copy first).
NESTED_STATE_KEYS: tuple[str, ...] = ("state_dict_ema", "model_ema", "state_dict", "model")
#: Prefixes wrappers add to every key (DistributedDataParallel, torch.compile).
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


class UnsafeFileError(TTABenchError):
    """A weight file holds objects other than tensors and plain containers."""


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def refused_object(exc: pickle.UnpicklingError) -> str:
    """What the restricted unpickler refused, e.g. ``GLOBAL io.open`` (else its first line)."""
    found = re.search(r"Unsupported (?:global|operand)[^.]*?: ?(GLOBAL \S+|\S+)", str(exc))
    return found.group(1).rstrip(".,") if found else str(exc).strip().splitlines()[0][:200]


def load_tensors(path: Path, suffix: str | None = None) -> Any:
    """The content of a weight file, built from tensors and plain containers only.

    ``.safetensors`` files (``suffix``, default the path's) give a ``dict[str, Tensor]``; any
    other file goes through ``torch.load(weights_only=True, map_location="cpu")``. A file that
    wants to build any other object raises ``UnsafeFileError``; an unreadable file raises
    TTABenchError.
    """
    path = Path(path)
    if (suffix or path.suffix) == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise TTABenchError(f"cannot read safetensors file {path}: {_one_line(exc)}") from exc
    if not zipfile.is_zipfile(path) and not _starts_like_a_pickle(path):
        raise TTABenchError(f"{path} is not a weight file (neither a torch.save archive, nor a "
                            "pickle, nor .safetensors)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{path} holds more than tensors (it asks to build {refused_object(exc)}); it was "
            "not loaded, because unpickling it could run code from the file"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise TTABenchError(f"cannot read weight file {path}: {_one_line(exc)}") from exc


def _starts_like_a_pickle(path: Path) -> bool:
    """Whether the file begins with a pickle protocol marker (``0x80``, then protocol 2-5), as
    the legacy, non-zip ``torch.save`` format does."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a ``.safetensors`` header (empty when none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise TTABenchError(f"cannot read safetensors file {path}: {_one_line(exc)}") from exc


def unwrap_state_dict(content: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint, as timm's own reader finds it.

    A dict holding one of ``NESTED_STATE_KEYS`` is unwrapped (the first present, EMA first);
    then ``WRAPPER_PREFIXES`` are stripped from every key. Raises TTABenchError unless the
    result maps names to tensors.
    """
    if isinstance(content, Mapping):
        for key in NESTED_STATE_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()
    ):
        raise TTABenchError(f"{path} does not hold a state dict (names mapped to tensors)")
    out: dict[str, torch.Tensor] = {}
    for key, value in content.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out
