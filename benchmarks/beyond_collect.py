"""Raw per-split outputs for the beyond-the-paper study (``benchmarks/beyond_paper.py``).

For one (model, stream seed, split) it records, in one ``.npz`` under the cache folder:

- ``labels``; the frozen eval-mode model's logits and penultimate features on the split
  (dataset order): the ``source`` view;
- the batch-statistics model's logits and features on the first stream epoch, in the run's
  batches of ``BATCH`` (``order`` holds the image index of each row): the ``bn`` view;
- the adapter's ``predict`` logits (and features) on the probe (the first ``PROBE`` images of
  the stream) at every step of ``CHECKPOINTS``, the online logits of every adaptation step,
  the online (``adapted``) accuracy; the step-0 snapshot is the runner's
  (``ttabench.runner.first_snapshot``): chunks of ``BATCH`` = the bn view's first batches,
  one chunk computed and checked, the others read from the bn view;
- timings: the adapter's own steps, and each probe snapshot.

The adapter's learning rate is an argument: the study runs the calibration splits at each of
``LRS`` and the rest at the one chosen on calibration (``beyond_paper``).

Source-validation outputs are stored once per (model, seed): frozen, and through the
batch-statistics model in batches of ``BATCH`` drawn from the seed.

Synthetic calibration splits (``"c1+c2-s"``) compose two HOLDOUT corruptions at severity s on
the clean target images; no evaluation corruption is ever used to make them.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttabench.api import LoadedModel, SplitSpec, Suite, to_unit_float
from ttabench.runner.execute import seed_everything
from ttabench.runner.first_snapshot import step0_snapshot
from ttabench.runner.passes import FeatureHook, batch_statistics_copy, source_pass
from ttabench.runner.stream import batches_of, first_epoch, stream_indices
from ttabench.store import atomic_file
from ttabench.suites.corruptions import corrupt
from ttabench.suites.npy_layout import HOLDOUT
from ttabench_enigma.adapters import RDumb

BATCH = 64
STEPS = 100
PROBE = 512
CHUNK = BATCH
LRS = (1e-3, 2.5e-3, 6.25e-3)
CHECKPOINTS = (0, 50, 100)
N_EXAMPLES = 1000
EVAL_SEVERITIES = (3,)
CAL_SEVERITIES = (1, 3, 5)
SYNTHETIC_SEVERITIES = (4,)


@dataclass(frozen=True)
class StudySplit:
    """A split of the study: a suite split, or a synthetic composition of holdout corruptions."""

    name: str
    dataset: str
    role: str
    suite_split: SplitSpec | None = None
    parts: tuple[str, ...] = ()
    severity: int | None = None


def study_splits(suite: Suite) -> list[StudySplit]:
    """Eval splits at ``EVAL_SEVERITIES``, holdout splits at ``CAL_SEVERITIES``, clean, then
    the synthetic holdout pairs at ``SYNTHETIC_SEVERITIES``."""
    out = []
    for split in suite.splits():
        wanted = EVAL_SEVERITIES if split.role == "eval" else CAL_SEVERITIES
        if split.severity is None or split.severity in wanted:
            out.append(StudySplit(split.name, split.dataset, split.role, split))
    for pair in itertools.combinations(HOLDOUT, 2):
        for severity in SYNTHETIC_SEVERITIES:
            name = "+".join(pair)
            out.append(StudySplit(f"{name}-{severity}", name, "calibration", None, pair, severity))
    return out


def split_arrays(suite: Suite, split: StudySplit, clean: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) and labels of a study split (first ``N_EXAMPLES``)."""
    if split.suite_split is not None:
        rows = suite.dataset(split.suite_split)
        images = torch.stack([rows[i][0] for i in range(len(rows))])
        labels = torch.tensor([rows[i][1] for i in range(len(rows))])
        return images, labels
    images = clean[0]
    for index, name in enumerate(split.parts):
        rng = np.random.default_rng([7, HOLDOUT.index(name), index, int(split.severity or 0)])
        images = corrupt(name, images, int(split.severity or 0), rng)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(clean[1])


def clean_target(suite: Suite) -> tuple[np.ndarray, np.ndarray]:
    """The first ``N_EXAMPLES`` clean target images (NHWC uint8) and labels."""
    clean = next(s for s in suite.splits() if s.dataset == "clean")
    rows = suite.dataset(clean)
    images = np.stack([rows[i][0].permute(1, 2, 0).numpy() for i in range(len(rows))])
    return images, np.array([rows[i][1] for i in range(len(rows))])


@torch.no_grad()
def batch_view(model: torch.nn.Module, classifier: str, images: torch.Tensor,
               order: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Logits and features of the batch-statistics copy over ``order`` in batches of BATCH."""
    bn_model = batch_statistics_copy(model)
    hook = FeatureHook(bn_model, classifier)
    logits = [bn_model(to_unit_float(images[idx])) for idx in batches_of(order, BATCH)]
    features = hook.close()
    return torch.cat(logits).numpy(), features.numpy()


def source_val_views(loaded: LoadedModel, suite: Suite, seed: int) -> dict[str, np.ndarray]:
    """Frozen and batch-statistics outputs on the labelled source-validation split."""
    val = suite.source_val()
    frozen = source_pass(loaded.module, val, torch.device("cpu"), classifier=loaded.classifier,
                         want_features=True)
    images = torch.stack([val[i][0] for i in range(len(val))])
    order = first_epoch(len(val), seed)
    bn_logits, bn_features = batch_view(loaded.module, loaded.classifier, images, order)
    return {"labels": frozen.labels.numpy(), "frozen_logits": frozen.outputs.logits.numpy(),
            "frozen_features": frozen.outputs.features.numpy(), "bn_order": order.numpy(),
            "bn_logits": bn_logits, "bn_features": bn_features}


def collect_split(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor,
                  seed: int, lr: float) -> dict[str, np.ndarray]:
    """The views, probe snapshots, online logits and timings of one split (see module doc)."""
    seed_everything(seed)
    module = loaded.module.eval()
    with torch.no_grad():
        hook = FeatureHook(module, loaded.classifier)
        frozen = torch.cat([module(to_unit_float(x)) for x in torch.split(images, 256)])
        frozen_features = hook.close()
    n = len(images)
    order = first_epoch(n, seed)
    bn_logits, bn_features = batch_view(module, loaded.classifier, images, order)

    probe = images[order[:PROBE]]
    model = copy.deepcopy(module)
    adapter = RDumb(model, lr=lr)
    snap_logits, snap_features, snap_seconds = [], [], []
    bn_by_image = torch.empty(n, bn_logits.shape[1])
    bn_by_image[order] = torch.from_numpy(bn_logits)

    def predict(rows: slice) -> torch.Tensor:
        return adapter.predict(to_unit_float(probe[rows]))

    t = time.perf_counter()
    logits0, computed = step0_snapshot(predict, order[:PROBE], CHUNK, order, BATCH, bn_by_image)
    snap_seconds.append(time.perf_counter() - t)
    if computed != 1:
        raise RuntimeError(f"the step-0 snapshot computed {computed} chunks, expected 1")
    snap_logits.append(logits0.numpy())
    snap_features.append(bn_features[:PROBE].astype(np.float16))  # the same rows (bn view)

    def snapshot() -> None:
        t = time.perf_counter()
        hook = FeatureHook(model, loaded.classifier)
        parts = [predict(slice(start, start + CHUNK)) for start in range(0, PROBE, CHUNK)]
        features = hook.close()
        snap_seconds.append(time.perf_counter() - t)
        snap_logits.append(torch.cat(parts).float().numpy())
        snap_features.append(features.numpy().astype(np.float16))

    online, online_index = [], []
    step_seconds = 0.0
    for step, idx in enumerate(stream_indices(n, seed, BATCH, STEPS), start=1):
        t = time.perf_counter()
        logits = adapter(to_unit_float(images[idx]))
        step_seconds += time.perf_counter() - t
        online.append(logits.detach().float().numpy())
        online_index.append(idx.numpy())
        if step in CHECKPOINTS:
            snapshot()
    online_logits = np.stack(online)
    online_labels = labels.numpy()[np.stack(online_index)]
    return {
        "labels": labels.numpy(),
        "frozen_logits": frozen.numpy(), "frozen_features": frozen_features.numpy(),
        "bn_order": order.numpy(), "bn_logits": bn_logits, "bn_features": bn_features,
        "probe_index": order[:PROBE].numpy(), "checkpoints": np.array(CHECKPOINTS),
        "probe_logits": np.stack(snap_logits), "probe_features": np.stack(snap_features),
        "online_logits": online_logits, "online_index": np.stack(online_index),
        "adapted": np.array((online_logits.argmax(-1) == online_labels).mean()),
        "lr": np.array(lr),
        "step_seconds": np.array(step_seconds), "snapshot_seconds": np.array(snap_seconds),
    }


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file + rename)."""
    with atomic_file(path) as handle:
        np.savez(handle, **arrays)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
