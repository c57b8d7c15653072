"""The weight file of a model spec: where it is published, its checksum, where it must land.

================================ ================================================ ===================================
spec                              published at                                     checksum, destination
================================ ================================================ ===================================
``torchvision:<name>[/<W>]``      the weights' URL (download.pytorch.org)          the SHA-256 prefix in the file name
                                                                                   (torch.hub's rule);
                                                                                   ``$TORCH_HOME/hub/checkpoints/<file>``
``timm:<name>``                   the Hugging Face hub, ``<hf_hub_id>/resolve/      the SHA-256 of the hub's LFS pointer
                                  main/model.safetensors``                         (sent as ``X-Linked-Etag``);
                                                                                   ``<cache>/weights/timm/<name>.safetensors``
``robustbench:<ds>/<name>[/<t>]`` robustbench's Google Drive id (its model zoo)     none published (``--no-verify``);
                                                                                   ``<cache>/weights/robustbench/<ds>/<t>/<name>.pt``
================================ ================================================ ===================================

Nothing fetched runs code: before a file is put in place it is read as the model source will
read it, as tensors only (safetensors, or ``torch.load(weights_only=True)``), and a file that
holds anything else is refused and removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttabench.errors import TTABenchError
from ttabench.fetch.published import Digest

GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
HF_URL = "https://huggingface.co/{repo}/resolve/main/{file}"
#: torch.hub's rule: a file named ``<stem>-<hex>.<ext>`` has a SHA-256 starting with ``<hex>``.
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class ModelFile:
    """The one file a model spec reads: from ``url`` into ``dest``, checked against ``digest``
    (None: the server's stated one, else none published), then by ``check``."""

    spec: str
    url: str
    dest: Path
    digest: Digest | None
    check: Callable[[Path], None]
    note: str = ""


def tensors_only(path: Path) -> None:
    """Refuse a weight file that holds more than tensors: the part file is read as its model
    source will read the finished one (safetensors for ``.safetensors``, else
    ``torch.load(weights_only=True)``)."""
    from ttabench.models.weight_files import UnsafeFileError, load_tensors

    suffix = Path(path.name.removesuffix(".part")).suffix
    try:
        load_tensors(path, suffix=suffix)
    except UnsafeFileError as err:
        raise TTABenchError(f"refused: {err}") from None
    except TTABenchError as err:
        raise TTABenchError(f"the fetched file is not a weight file: {err}") from None


def torchvision_file(arg: str) -> ModelFile:
    """``torchvision:<name>[/<WEIGHTS>]``: the weights URL, checked by the hash in its name."""
    from ttabench.models.hubs import torchvision_weight_file, torchvision_weights

    name, _, enum_name = arg.partition("/")
    weights = torchvision_weights(name, enum_name)
    found = HASH_IN_NAME.search(Path(weights.url).name)
    digest = None if found is None else Digest(
        "sha256-prefix", found.group(1), "the SHA-256 prefix in torchvision's file name")
    return ModelFile(f"torchvision:{name}/{weights.name}", weights.url,
                     torchvision_weight_file(weights.url), digest, tensors_only)


def timm_file(arg: str, cache_dir: Path) -> ModelFile:
    """``timm:<name>``: ``model.safetensors`` of the model's Hugging Face hub repository."""
    from ttabench.compat import import_timm

    timm = import_timm()
    if not timm.is_model(arg):
        raise TTABenchError(f"timm has no model '{arg}'; see timm.list_models()")
    cfg = timm.get_pretrained_cfg(arg)
    if cfg is None or not cfg.hf_hub_id:
        raise TTABenchError(f"timm:{arg} has no Hugging Face hub weights to fetch")
    url = HF_URL.format(repo=cfg.hf_hub_id, file="model.safetensors")
    dest = cache_dir / "weights" / "timm" / f"{arg}.safetensors"
    return ModelFile(f"timm:{arg}", url, dest, None, tensors_only,
                     f"hub repository {cfg.hf_hub_id}")


def robustbench_file(arg: str, cache_dir: Path) -> ModelFile:
    """``robustbench:<dataset>/<name>[/<threat>]``: the file robustbench's zoo names on Google
    Drive; no checksum is published for it."""
    from ttabench.models.hubs import ROBUSTBENCH_CLASSES, robustbench_weight_file

    parts = arg.split("/")
    if len(parts) not in (2, 3) or not all(parts) or parts[0] not in ROBUSTBENCH_CLASSES:
        raise TTABenchError("expected robustbench:<cifar10|cifar100|imagenet>/<name>"
                            f"[/<threat_model>], got robustbench:{arg}")
    dataset, name = parts[:2]
    threat = parts[2] if len(parts) == 3 else "corruptions"
    from ttabench.compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]
    except (KeyError, ValueError):
        raise TTABenchError(f"robustbench has no threat model '{threat}' for {dataset}") from None
    if name not in zoo:
        from ttabench.registry import unknown_error

        raise unknown_error(f"robustbench {dataset}/{threat} model", name, list(zoo))
    drive_id = zoo[name].get("gdrive_id")
    if not isinstance(drive_id, str) or not drive_id:
        hint = (" (robustbench builds it from torchvision's ImageNet weights: `ttabench "
                "fetch-model torchvision:resnet50/IMAGENET1K_V1`, model torchvision:resnet50)"
                if name == "Standard_R50" else "")
        raise TTABenchError(f"robustbench:{dataset}/{name} has no single weight file to fetch "
                            f"(its zoo entry names {drive_id!r}){hint}")
    return ModelFile(f"robustbench:{dataset}/{name}/{threat}", GDRIVE_URL.format(id=drive_id),
                     robustbench_weight_file(dataset, name, threat, cache_dir), None,
                     tensors_only, f"Google Drive file {drive_id}")


def model_file(spec: str, cache_dir: Path) -> ModelFile:
    """The ``ModelFile`` of ``spec`` (``source:argument``)."""
    source, sep, arg = spec.partition(":")
    if sep and arg and source == "torchvision":
        return torchvision_file(arg)
    if sep and arg and source == "timm":
        return timm_file(arg, cache_dir)
    if sep and arg and source == "robustbench":
        return robustbench_file(arg, cache_dir)
    raise TTABenchError(f"fetch-model takes torchvision:<name>[/<WEIGHTS>], timm:<name> or "
                        f"robustbench:<dataset>/<name>[/<threat>], got {spec!r}")
