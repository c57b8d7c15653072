"""Model sources backed by model hubs and local files; nothing is ever downloaded.

Every source checks that its weight file exists before building anything and otherwise raises
a one-line TTABenchError naming the path it looked at. Each wraps the network so that it takes
float images in [0, 1] and normalizes them itself, and records the constants in
``preprocessing``.

==================================== ======================================================
spec                                  weights
==================================== ======================================================
``timm:<name>``                       ``$TTABENCH_TIMM_WEIGHTS/<name>.(pth|safetensors|bin)``,
                                      else ``<cache_dir>/weights/timm/<name>.<ext>``
``timm:<name>?random`` / ``@random``  random initialisation (seed 0), no file
``torchvision:<name>[/<WEIGHTS>]``    ``$TORCH_HOME/hub/checkpoints/<file of the weights URL>``
                                      (``resnet50-0676ba61.pth`` for IMAGENET1K_V1); default
                                      IMAGENET1K_V1 when the model has it, else DEFAULT;
                                      ``/random`` for random initialisation
``robustbench:<ds>/<name>[/<threat>]`` ``<cache_dir>/weights/robustbench/<ds>/<threat>/<name>.pt``
                                      (robustbench's own layout); threat default
                                      ``corruptions``
``checkpoint:<path>``                 a local file, see ``load_checkpoint``
==================================== ======================================================

``num_classes`` (the suite's class count, when the runner passes it) only changes the timm
source: a pretrained file whose head differs from timm's default is loaded strictly into a
model built with that many classes (a fine-tuned checkpoint). Elsewhere the model's own class
count is reported, and ``ttabench.suites.images.check_num_classes`` refuses a mismatch.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttabench.api import LoadedModel
from ttabench.compat import import_timm
from ttabench.errors import TTABenchError
from ttabench.models.base import NormalizedModel, find_classifier, weights_hash
from ttabench.models.weight_files import (
    SAFETENSORS_SUFFIX,
    UnsafeFileError,
    load_tensors,
    safetensors_metadata,
    unwrap_state_dict,
)
from ttabench.paths import cache_dir as default_cache_dir
from ttabench.schemas import CheckpointMetaSchema, parse

TIMM_WEIGHTS_ENV = "TTABENCH_TIMM_WEIGHTS"
TIMM_SUFFIXES: tuple[str, ...] = (".pth", ".safetensors", ".bin")
RANDOM_MARKERS: tuple[str, ...] = ("?random", "@random")
ROBUSTBENCH_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def _cache(cache_dir: Path | str | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _wrap(
    net: nn.Module, mean: Any, std: Any, model_id: str, num_classes: int, **facts: Any
) -> LoadedModel:
    """Wrap ``net`` in NormalizedModel and record hash, constants and classifier name."""
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    module = NormalizedModel(net, mean=mean, std=std).eval()
    return LoadedModel(
        module=module,
        num_classes=int(num_classes),
        model_id=model_id,
        weights_hash=weights_hash(module),
        preprocessing={"mean": mean, "std": std, **facts},
        classifier=find_classifier(module),
    )


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to 300 characters."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _seeded(build: Any) -> nn.Module:
    """Call ``build()`` with the global RNG seeded to 0 and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


# --------------------------------------------------------------------------- timm


def timm_weight_file(name: str, cache_dir: Path | str | None) -> tuple[Path | None, list[Path]]:
    """The local weight file of timm model ``name`` (or None) and every path looked at."""
    folder_env = os.environ.get(TIMM_WEIGHTS_ENV)
    folders = [Path(folder_env)] if folder_env else []
    folders.append(_cache(cache_dir) / "weights" / "timm")
    looked = [folder / f"{name}{suffix}" for folder in folders for suffix in TIMM_SUFFIXES]
    return next((p for p in looked if p.is_file()), None), looked


def _timm_facts(net: nn.Module) -> dict[str, Any]:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return {
        "input_size": list(cfg.get("input_size", (3, 224, 224)))[1:],
        "crop_pct": cfg.get("crop_pct"),
        "interpolation": cfg.get("interpolation"),
    }


def _timm_pretrained(timm: Any, name: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """``timm.create_model(name, pretrained=True)`` fed with ``state`` from memory: every
    other weight source (file, URL, hub) is blanked, and the state dict is dropped from the
    model's config afterwards (it would hold a second copy of the weights)."""
    overlay = dict(state_dict=state, file=None, url=None, hf_hub_id=None, source=None)
    net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    net.pretrained_cfg.pop("state_dict", None)
    return net


def load_timm(
    arg: str | None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """``timm:<name>`` from a local weight file, or ``timm:<name>?random`` (random init, seed 0).

    The file is read as tensors only (``ttabench.models.weight_files``; timm's own reader
    would unpickle anything), unwrapped as timm's reader does, then handed to timm as an
    in-memory state dict (``pretrained_cfg_overlay=dict(state_dict=...)``), so timm's
    checkpoint filter and label offset for the model apply and the load is strict. With a
    ``num_classes`` different from timm's default for the model, the state dict is loaded
    strictly into a model built with that many classes (a fine-tuned checkpoint).
    """
    timm = import_timm()
    if not arg:
        raise TTABenchError("model source timm needs a name, e.g. timm:resnet50")
    name, random_init = arg, False
    for marker in RANDOM_MARKERS:
        if arg.endswith(marker):
            name, random_init = arg[: -len(marker)], True
    if not timm.is_model(name):
        raise TTABenchError(f"timm has no model '{name}'; see timm.list_models()")
    if random_init:
        kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
        net = _seeded(lambda: timm.create_model(name, pretrained=False, **kwargs))
        weights = "random (seed 0)"
    else:
        path, looked = timm_weight_file(name, cache_dir)
        if path is None:
            folders = list(dict.fromkeys(str(p.parent) for p in looked))
            raise TTABenchError(
                f"no local weights for timm:{name}; looked for {name}.(pth|safetensors|bin) in "
                f"{' and '.join(folders)}; `ttabench fetch-model timm:{name}` downloads it, "
                f"or put the file there, set {TIMM_WEIGHTS_ENV} to its folder, or use "
                f"timm:{name}?random"
            )
        state = unwrap_state_dict(load_tensors(path), path)
        cfg = timm.get_pretrained_cfg(name)
        default_classes = cfg.num_classes if cfg is not None else None
        try:
            if num_classes is not None and int(num_classes) != default_classes:
                net = timm.create_model(name, pretrained=False, num_classes=int(num_classes))
                net.load_state_dict(state, strict=True)
            else:
                net = _timm_pretrained(timm, name, state)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise TTABenchError(
                f"weights file {path} does not fit timm:{name}: {_one_line(exc)}"
            ) from exc
        weights = str(path)
    cfg = net.pretrained_cfg
    return _wrap(
        net.eval(), cfg["mean"], cfg["std"], f"timm:{arg}", net.num_classes,
        weights=weights, **_timm_facts(net),
    )  # fmt: skip


# --------------------------------------------------------------------------- torchvision


def torchvision_weight_file(url: str) -> Path:
    """Where torch.hub caches the file of ``url``: ``$TORCH_HOME/hub/checkpoints/<basename>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def torchvision_weights(name: str, enum_name: str) -> Any:
    """The weights enum member of torchvision model ``name``: ``enum_name``, else
    ``IMAGENET1K_V1`` (the weights TTA papers use) when the model has it, else ``DEFAULT``."""
    from torchvision import models

    if name not in models.list_models():
        raise TTABenchError(
            f"torchvision has no model '{name}'; see torchvision.models.list_models()"
        )
    enum = models.get_model_weights(name)
    choices = [w.name for w in enum]
    if not enum_name:
        enum_name = "IMAGENET1K_V1" if "IMAGENET1K_V1" in choices else "DEFAULT"
    try:
        return enum[enum_name] if enum_name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise TTABenchError(
            f"torchvision {name} has no weights '{enum_name}'; choose from {', '.join(choices)}"
        ) from None


def load_torchvision(
    arg: str | None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """``torchvision:<name>[/<WEIGHTS_ENUM>]`` from the torch.hub cache (never downloaded).

    Without an enum, ``IMAGENET1K_V1`` (the weights TTA papers use) when the model has it, else
    ``DEFAULT``; ``/random`` builds a randomly initialised model (seed 0, ``num_classes`` or
    1000 classes). Mean/std come from the weights' transforms.
    """
    from torchvision import models

    if not arg:
        raise TTABenchError("model source torchvision needs a name, e.g. torchvision:resnet18")
    name, _, enum_name = arg.partition("/")
    if name not in models.list_models():
        raise TTABenchError(
            f"torchvision has no model '{name}'; see torchvision.models.list_models()"
        )
    if enum_name == "random":
        classes = int(num_classes or 1000)
        net = _seeded(lambda: models.get_model(name, weights=None, num_classes=classes))
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        return _wrap(net, mean, std, f"torchvision:{arg}", classes, weights="random (seed 0)")
    weights = torchvision_weights(name, enum_name)
    path = torchvision_weight_file(weights.url)
    if not path.is_file():
        raise TTABenchError(
            f"no local weights for torchvision:{name}/{weights.name}; expected {path} "
            f"(torch.hub cache under $TORCH_HOME; the file is published at {weights.url}; "
            f"`ttabench fetch-model torchvision:{name}/{weights.name}` downloads it)"
        )
    classes = len(weights.meta["categories"])
    net = models.get_model(name, weights=None, num_classes=classes)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as exc:
        raise TTABenchError(
            f"weights file {path} does not fit torchvision {name}: {_one_line(exc)}"
        ) from exc
    transform = weights.transforms()
    return _wrap(
        net.eval(), transform.mean, transform.std, f"torchvision:{name}/{weights.name}", classes,
        weights=str(path), resize=list(transform.resize_size), input_size=list(transform.crop_size),
        interpolation=str(transform.interpolation.value),
    )  # fmt: skip


# --------------------------------------------------------------------------- robustbench


def robustbench_weight_file(
    dataset: str, name: str, threat_model: str, cache_dir: Path | str | None
) -> Path:
    """``<cache_dir>/weights/robustbench/<dataset>/<threat_model>/<name>.pt``."""
    return _cache(cache_dir) / "weights" / "robustbench" / dataset / threat_model / f"{name}.pt"


def load_robustbench(
    arg: str | None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """``robustbench:<dataset>/<name>[/<threat_model>]`` through ``robustbench.utils.load_model``.

    ``dataset`` is cifar10, cifar100 or imagenet; ``threat_model`` defaults to ``corruptions``.
    The file must exist at ``robustbench_weight_file(...)`` (robustbench would otherwise try
    Google Drive); it is checked to hold tensors only before robustbench reads it, and the
    models robustbench takes from timm are built here and loaded strictly from that check's
    tensors (robustbench would pass the file to timm's reader, which unpickles anything). robustbench models take [0, 1] inputs and normalize inside, so the wrapper
    adds no normalization (mean 0, std 1).
    """
    parts = (arg or "").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise TTABenchError(
            "robustbench model spec must be robustbench:<dataset>/<name>[/<threat_model>], "
            f"got '{arg}'"
        )
    dataset, name = parts[0], parts[1]
    threat = parts[2] if len(parts) == 3 else "corruptions"
    if dataset not in ROBUSTBENCH_CLASSES:
        raise TTABenchError(f"robustbench dataset must be one of {', '.join(ROBUSTBENCH_CLASSES)}")
    path = robustbench_weight_file(dataset, name, threat, cache_dir)
    if not path.is_file():
        raise TTABenchError(
            f"no local weights for robustbench:{dataset}/{name}/{threat}; expected {path} "
            "(robustbench's model_dir layout; `ttabench run` downloads nothing: `ttabench "
            f"fetch-model robustbench:{dataset}/{name}/{threat}` does)"
        )
    from ttabench.compat import import_robustbench

    import_robustbench()
    timm = import_timm()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model

    try:
        zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]
    except (KeyError, ValueError):
        raise TTABenchError(f"robustbench has no threat model '{threat}' for {dataset}") from None
    timm_name = f"{name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"
    if name not in zoo and not timm.is_model(timm_name):
        raise TTABenchError(
            f"robustbench has no {dataset}/{threat} model '{name}'; e.g. {', '.join(list(zoo)[:5])}"
        )
    content = load_tensors(path)  # tensors only, whatever torch.load's default is
    try:
        if timm.is_model(timm_name):  # robustbench would hand the file to timm's unsafe reader
            net = timm.create_model(
                timm_name, pretrained=False, num_classes=ROBUSTBENCH_CLASSES[dataset]
            )
            net.load_state_dict(unwrap_state_dict(content, path), strict=True)
        else:
            net = load_model(name, model_dir=str(path.parents[2]), dataset=dataset,
                             threat_model=threat)
    except Exception as exc:  # robustbench raises bare exceptions of many kinds
        raise TTABenchError(
            f"robustbench failed to load {dataset}/{name}/{threat} from {path}: {_one_line(exc)}"
        ) from exc
    return _wrap(
        net.eval(), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), f"robustbench:{dataset}/{name}/{threat}",
        ROBUSTBENCH_CLASSES[dataset], weights=str(path),
        normalization="inside the robustbench model (inputs in [0, 1])",
    )  # fmt: skip


# --------------------------------------------------------------------------- checkpoint


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding a ``constants.pkl`` entry."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())


def _output_classes(module: nn.Module) -> int | None:
    """``out_features`` of the last linear layer (``nn.Linear``, or a scripted one), or None."""
    classes = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear) or getattr(sub, "original_name", None) == "Linear":
            classes = int(sub.out_features)
    return classes


def load_checkpoint(
    arg: str | None,
    *,
    cache_dir: Path | None = None,
    num_classes: int | None = None,
    trust_pickle: bool = False,
    trust_torchscript: bool = False,
) -> LoadedModel:
    """``checkpoint:<path>``: a local file in one of four forms.

    1. A dict ``{"arch": "timm:<name>" | "torchvision:<name>", "state_dict": ...}`` with
       optional ``"num_classes"``, ``"mean"`` and ``"std"`` (``torch.save``), read with
       ``torch.load(weights_only=True)``: tensors and plain values only.
    2. A ``.safetensors`` file of the weights whose metadata holds ``"arch"`` (and optionally
       ``"num_classes"``, ``"mean"``, ``"std"`` as JSON text).
    3. A TorchScript file (``torch.jit.save``), only with ``trust_torchscript=True``
       (``--trust-torchscript``): the file's TorchScript program runs when it is loaded (its
       ``__setstate__``) and on every forward pass; TorchScript runs no Python, but it can read
       and write files (``aten::from_file``). Without it such a file is refused before
       ``torch.jit.load``, so no code from it runs.
    4. A whole pickled ``nn.Module`` (``torch.save(model)``), only with ``trust_pickle=True``
       (``--trust-pickle``): unpickling runs whatever code the file names, so it is for files
       you made or trust. Without it such a file is refused, and no code from it runs.

    For forms 1 and 2 the architecture is built with random weights (timm or torchvision, no
    download) and the state dict loaded strictly; it normalizes with the given mean/std, else
    timm's pretrained-config constants or the ImageNet ones. Forms 3 and 4 must take [0, 1]
    inputs and normalize themselves (recorded as mean 0, std 1); a TorchScript model has no
    ``classifier`` name (no embedding hook). The class count is the last linear layer's output
    size, else the dict's ``num_classes``, else the ``num_classes`` argument.
    """
    if not arg:
        raise TTABenchError("model source checkpoint needs a file, e.g. checkpoint:model.pt")
    path = Path(arg).expanduser()
    if not path.is_file():
        raise TTABenchError(f"checkpoint file {path} not found")
    facts: dict[str, Any] = {"checkpoint": str(path)}
    if path.suffix == SAFETENSORS_SUFFIX:
        content = _safetensors_checkpoint(path)
    elif _is_torchscript(path):
        if not trust_torchscript:
            raise TTABenchError(
                f"checkpoint {path} is a TorchScript program, which runs when it is loaded and "
                "can read and write files; it was not loaded. Save a dict {'arch': ..., "
                "'state_dict': ...} or a safetensors file instead, or, if you made or trust "
                "this file, pass --trust-torchscript"
            )
        try:
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a damaged archive can raise anything
            raise TTABenchError(f"cannot read checkpoint {path}: {_one_line(exc)}") from exc
        return _self_normalizing(net, path, num_classes, {**facts, "checkpoint_form": "torchscript"})
    else:
        try:
            content = load_tensors(path)
        except UnsafeFileError as exc:
            if not trust_pickle:
                raise TTABenchError(
                    f"checkpoint {exc}; save a dict {{'arch': ..., 'state_dict': ...}} or a "
                    "safetensors file instead, or, if you made or trust this file, pass "
                    "--trust-pickle"
                ) from None
            content = _unpickle_trusted(path)
    if isinstance(content, nn.Module):
        return _self_normalizing(content, path, num_classes, {**facts, "checkpoint_form": "module"})
    return _from_state_dict(content, path, num_classes, {**facts, "checkpoint_form": "state_dict"})


def _unpickle_trusted(path: Path) -> Any:
    """Full unpickling of a file the user vouched for with ``--trust-pickle``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling can raise anything
        raise TTABenchError(f"cannot read checkpoint {path}: {_one_line(exc)}") from exc


def _safetensors_checkpoint(path: Path) -> dict[str, Any]:
    """Form 2 as the dict of form 1: the tensors, plus the metadata's JSON values."""
    import json

    content: dict[str, Any] = {"state_dict": load_tensors(path)}
    for key, text in safetensors_metadata(path).items():
        if key == "arch":
            content[key] = text
        elif key in ("num_classes", "mean", "std"):
            try:
                content[key] = json.loads(text)
            except json.JSONDecodeError:
                raise TTABenchError(
                    f"checkpoint {path}: metadata {key}={text!r} is not JSON"
                ) from None
    return content


def _self_normalizing(
    net: nn.Module, path: Path, num_classes: int | None, facts: dict[str, Any]
) -> LoadedModel:
    """Forms 3 and 4: the saved module takes [0, 1] inputs and normalizes itself."""
    classes = _output_classes(net) or num_classes
    if classes is None:
        raise TTABenchError(
            f"cannot tell the number of classes of {path} (no nn.Linear head); "
            "save a dict with 'num_classes' instead"
        )
    return _wrap(net.eval(), (0.0,) * 3, (1.0,) * 3, f"checkpoint:{path.name}", classes,
                 normalization="inside the saved model (inputs in [0, 1])", **facts)


def _from_state_dict(
    content: Any, path: Path, num_classes: int | None, facts: dict[str, Any]
) -> LoadedModel:
    if not isinstance(content, dict) or "arch" not in content or "state_dict" not in content:
        raise TTABenchError(
            f"checkpoint {path} is neither a module, a TorchScript file nor a dict with "
            "'arch' and 'state_dict' keys"
        )
    meta = parse(CheckpointMetaSchema, {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in content.items() if k != "state_dict"},
                 f"checkpoint {path}")
    arch = meta.arch
    source, _, name = arch.partition(":")
    classes = meta.num_classes or num_classes
    kwargs = {} if classes is None else {"num_classes": int(classes)}
    if source == "timm":
        timm = import_timm()
        if not timm.is_model(name):
            raise TTABenchError(f"checkpoint {path}: timm has no model '{name}'")
        net = timm.create_model(name, pretrained=False, **kwargs)
        cfg = net.pretrained_cfg
        mean, std = cfg["mean"], cfg["std"]
    else:
        from torchvision import models

        if name not in models.list_models():
            raise TTABenchError(f"checkpoint {path}: torchvision has no model '{name}'; see "
                                "torchvision.models.list_models()")
        net = models.get_model(name, weights=None, **kwargs)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    try:
        net.load_state_dict(unwrap_state_dict(content["state_dict"], path), strict=True)
    except RuntimeError as exc:
        raise TTABenchError(
            f"checkpoint {path}: state_dict does not fit {arch}: {_one_line(exc)}"
        ) from exc
    mean, std = meta.mean or mean, meta.std or std
    return _wrap(net.eval(), mean, std, f"checkpoint:{path.name}", _output_classes(net) or classes,
                 arch=arch, **facts)
