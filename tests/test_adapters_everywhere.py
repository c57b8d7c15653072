"""Every registered adapter (the host's, the plugin's, and one wrapped) runs in every stream kind
of the one runner, and what the ``adapted`` view hands static estimators is right:

- its features are those of the pass whose logits the step returned (``Adapter.feature_call``):
  the model's classifier head applied to them gives the online logits back (for LAME, whose
  model never changes, the frozen model's logits of the same images);
- its source-val outputs are what a fresh adapter's ``predict`` gives on source val in the
  run's batches (cut from ``randperm`` seeded 0, as every reference pass: ``ttabench.runner.
  views``; ``Adapter.source_val_reference``), computed here directly.

The tiny suite and model, a few steps per kind. CoTTA runs with ``mt=1`` and ``ap=0`` (its
teacher, whose head gives the logits, keeps its weights; no augmentation average) and ROID
without its prior correction, so that the head reproduces the logits exactly."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
import torch

import ttabench_test_plugins as plugins
from ttabench import registry
from ttabench.api import Outputs
from ttabench.models.tiny import load_tiny_cnn
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.spec import RunSpec, StreamSpec
from ttabench.suites.tiny import TinySuite

HOST, PLUGIN = "ttabench", "ttabench-enigma"
WRAPPED = ["guard:tent"]
PARAMS: dict[str, dict[str, Any]] = {"cotta": {"n_augmentations": 2, "mt": 1.0, "ap": 0.0},
                                     "roid": {"use_prior_correction": False}}
N_IMAGES, BATCH = 96, 16
#: kind -> (stream, run options, steps every cell takes)
KINDS: dict[str, tuple[StreamSpec, dict[str, Any], int]] = {
    "reset-each-split": (StreamSpec(window=2), {"steps": 4, "splits": ["noise-3"]}, 4),
    "continual": (StreamSpec(kind="continual", steps_per_split=2, window=2), {}, 6),
    "gradual": (StreamSpec(kind="gradual", steps_per_split=2, window=2), {}, 6),
    "mixed": (StreamSpec(kind="mixed", steps_per_split=2, window=2), {}, 6),
    "continual+correlated": (StreamSpec(kind="continual", correlated=True, delta=0.5,
                                        steps_per_split=2, window=2), {}, 6),
    "batch-1+stats-window": (StreamSpec(window=2, stats_window=4),
                             {"steps": 8, "splits": ["noise-3"], "batch_size": 1}, 8),
}


def _registered() -> list[str]:
    return sorted(p.name for p in registry.list_plugins("adapters", load=False)
                  if p.distribution in (HOST, PLUGIN))


ADAPTERS = _registered() + WRAPPED


def _add_test_plugins() -> None:
    registry.add_plugin("estimators", "ttabench_test_plugins:AdaptedRecorder")
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")


@cache
def run(kind: str) -> dict[str, tuple[Cell, Outputs, Outputs | None]]:
    """Each adapter's cell in ``kind`` (one eval stream) with the adapted view's target and
    source-val outputs the recorder was handed."""
    _add_test_plugins()
    stream, options, _ = KINDS[kind]
    spec = RunSpec(**{"suite": "tiny", "model": "tiny-cnn", "adapters": ADAPTERS,
                      "adapter_params": PARAMS,
                      "estimators": ["adapted-recorder", "recording-trajectory"],
                      "estimator_params": {"recording-trajectory": {"probe_size": 16,
                                                                    "checkpoints": [0, 2]}},
                      "suite_options": {"n_examples": N_IMAGES}, "splits": ["noise-*"],
                      "batch_size": BATCH, "device": "cpu", "threads": 1, "stream": stream,
                      **options})
    bench = Benchmark(spec)
    out = {}
    for plan in bench.plan():
        if plan.split.role != "eval":
            continue
        plugins.RECORD["adapted"] = []
        cell = bench.execute(plan)
        seen = plugins.RECORD["adapted"]
        out[cell.adapter] = (cell, *seen[0]) if seen else (cell, None, None)
    return out


def test_the_registry_holds_the_adapters_users_run() -> None:
    assert {"source", "bn-ema", "bn-alpha", "lame", "cotta", "rotta", "tent", "eata", "eta",
            "rdumb", "sar", "deyo", "roid"} <= set(ADAPTERS)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_adapter_in_every_stream_kind(kind: str, adapter: str) -> None:
    cell, target, _ = run(kind)[adapter]
    assert cell.status == "ok", cell.error
    assert cell.protocol["stream"]["kind"] == KINDS[kind][0].name
    assert 0.0 <= cell.targets["adapted"] <= 1.0
    assert len(cell.windows.images_per_step) == KINDS[kind][2]
    assert cell.estimators["recording-trajectory"].result.failed is None
    # the features of the pass that gave each step's logits
    assert target is not None and target.features is not None
    assert len(target.features) == len(target.logits) == sum(cell.windows.images_per_step)
    head = load_tiny_cnn().module.net.fc
    with torch.no_grad():
        again = head(target.features)
    want = target.frozen_logits if adapter == "lame" else target.logits
    assert torch.allclose(again, want, atol=1e-4), float((again - want).abs().max())


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_adapted_view_compares_with_source_val_through_a_fresh_adapter(adapter: str) -> None:
    _, _, source_val = run("reset-each-split")[adapter]
    assert source_val is not None
    images, labels = TinySuite(n_examples=N_IMAGES).source_val().tensors
    torch.manual_seed(0)
    fresh = registry.get("adapters", adapter)(copy.deepcopy(load_tiny_cnn().module),
                                              **PARAMS.get(adapter, {}))
    found: list[torch.Tensor] = []
    hook = fresh.model.net.fc.register_forward_hook(lambda m, i, o: found.append(i[0]))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    logits, features = torch.empty(len(labels), 4), torch.empty(len(labels), 16)
    with torch.no_grad():
        for rows in order.split(BATCH):  # 128 images: 8 whole batches
            logits[rows] = fresh.predict(images[rows].float() / 255)
            features[rows] = found[-1]
    hook.remove()
    assert torch.equal(source_val.labels, labels)
    assert torch.allclose(source_val.logits, logits, atol=1e-5), \
        float((source_val.logits - logits).abs().max())
    assert torch.allclose(source_val.features, features, atol=1e-5)
