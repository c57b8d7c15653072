"""The logit cache: safe files (tensors only), atomic and content-addressed, keyed by what
decides a view's numbers and nothing else."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from ttabench.api import Outputs
from ttabench.errors import TTABenchError
from ttabench.runner.logit_cache import (
    CACHE_SCHEMA,
    LogitCache,
    entry_digest,
    source_val_record,
    view_record,
)

PROTOCOL = {
    "suite": {"name": "tiny", "record": {"n_examples": 96}}, "split": {"name": "noise-2"},
    "model": {"id": "tiny-cnn:0", "weights_hash": "abc"}, "seed": 0, "batch_size": 32,
    "adapter": {"name": "tent", "params": {"lr": 0.01}}, "steps": 3,
    "estimators": {"ac": {"params": {}}, "enigma": {"params": {"checkpoints": [0, 3]}}},
    "compute": {"precision": "fp32"}, "device_type": "cpu", "threads": 1, "torch": "2.x",
    "data_path": {"cache_mib": 2048},
}


def changed(**facts) -> dict:
    return {**PROTOCOL, **facts}


def digest(protocol: dict, view: str, features: bool = False) -> str:
    return entry_digest(view_record(protocol, view, ["enigma"], features))


@pytest.mark.parametrize("view", ["source", "bn"])
def test_the_passes_before_adaptation_are_keyed_without_adapter_steps_or_estimators(view) -> None:
    key = digest(PROTOCOL, view)
    for other in (changed(adapter={"name": "rdumb", "params": {}}), changed(steps=50),
                  changed(estimators={}), changed(data_path={"cache_mib": 0})):
        assert digest(other, view) == key
    for other in (changed(seed=1), changed(batch_size=64), changed(threads=2),
                  changed(model={"id": "tiny-cnn:0", "weights_hash": "abd"}),
                  changed(split={"name": "noise-3"}), changed(torch="2.y")):
        assert digest(other, view) != key
    assert digest(PROTOCOL, view, features=True) != key


def test_the_adapted_view_is_keyed_by_the_adaptation_and_the_trajectory_estimators() -> None:
    key = digest(PROTOCOL, "adapted")
    static_only = {**PROTOCOL["estimators"], "doc": {"params": {}}}
    assert digest(changed(estimators=static_only), "adapted") == key  # a static one: same
    for other in (changed(adapter={"name": "tent", "params": {"lr": 0.02}}), changed(steps=4),
                  changed(estimators={"ac": {}, "enigma": {"params": {"checkpoints": [0, 4]}}})):
        assert digest(other, "adapted") != key
    assert key not in {digest(PROTOCOL, "source"), digest(PROTOCOL, "bn")}


def test_source_val_keys_name_the_model_and_the_batch_of_the_batch_statistics() -> None:
    frozen = entry_digest(source_val_record(PROTOCOL, "source", 32, False))
    assert frozen == entry_digest(source_val_record(changed(seed=5, steps=9), "source", 64, False))
    bn = entry_digest(source_val_record(PROTOCOL, "bn", 32, False))
    assert bn != entry_digest(source_val_record(PROTOCOL, "bn", 64, False)) and bn != frozen
    other = changed(model={"id": "tiny-cnn:1", "weights_hash": "x"})
    assert entry_digest(source_val_record(other, "source", 32, False)) != frozen


def test_entries_round_trip_exactly_and_store_frozen_logits_once(tmp_path: Path) -> None:
    cache = LogitCache(tmp_path)
    torch.manual_seed(0)
    source = Outputs(torch.randn(6, 4), features=torch.randn(6, 3))
    source.frozen_logits = source.logits
    rows = torch.tensor([5, 0, 0, 3])
    adapted = Outputs(torch.randn(4, 4), frozen_logits=source.logits[rows])
    val = Outputs(torch.randn(5, 4), labels=torch.tensor([0, 1, 2, 3, 0]))
    s = cache.put(view_record(PROTOCOL, "source", [], True), source)
    a = cache.put(view_record(PROTOCOL, "adapted", [], False), adapted, frozen=s,
                  frozen_rows=rows)
    v = cache.put(source_val_record(PROTOCOL, "source", 32, False), val)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{d}.safetensors" for d in (s, a, v))  # nothing else (no temp file) is left
    fresh = LogitCache(tmp_path)
    got = fresh.load(a)
    assert torch.equal(got.logits, adapted.logits) and got.features is None
    assert torch.equal(got.frozen_logits, source.logits[rows]) and got.labels is None
    got_source = fresh.load(s)
    assert torch.equal(got_source.features, source.features)
    assert torch.equal(got_source.frozen_logits, source.logits)
    got_val = fresh.load(v)
    assert torch.equal(got_val.labels, val.labels) and got_val.frozen_logits is None
    assert fresh.reads == 3 and fresh.load(a) is got  # each file read once
    # the adapted entry holds its rows, not a second copy of the frozen logits
    with safe_open(tmp_path / f"{a}.safetensors", "pt") as entry:
        assert set(entry.keys()) == {"logits", "frozen_rows"}
        assert entry.metadata()["frozen"] == s


def test_putting_an_entry_twice_keeps_the_first_file(tmp_path: Path) -> None:
    cache = LogitCache(tmp_path)
    record = view_record(PROTOCOL, "source", [], False)
    first = cache.put(record, Outputs(torch.ones(2, 2)))
    mtime = (tmp_path / f"{first}.safetensors").stat().st_mtime_ns
    assert cache.put(record, Outputs(torch.ones(2, 2))) == first
    assert (tmp_path / f"{first}.safetensors").stat().st_mtime_ns == mtime


def test_files_that_are_not_what_their_name_says_are_refused(tmp_path: Path) -> None:
    cache = LogitCache(tmp_path)
    record = view_record(PROTOCOL, "source", [], False)
    name = cache.put(record, Outputs(torch.ones(2, 2)))
    path = tmp_path / f"{name}.safetensors"
    # another record's outputs under this name
    other = json.dumps(view_record(changed(seed=3), "source", [], False))
    path.write_bytes(save_tensors({"logits": torch.zeros(2, 2)},
                                  metadata={"schema": CACHE_SCHEMA, "key": other}))
    with pytest.raises(TTABenchError, match="does not hash to its name"):
        LogitCache(tmp_path).load(name)
    # a pickle (which would run code when unpickled) is never unpickled
    path.write_bytes(pickle.dumps({"logits": torch.zeros(2, 2)}))
    with pytest.raises(TTABenchError, match="is damaged"):
        LogitCache(tmp_path).load(name)
    path.write_bytes(save_tensors({"x": torch.zeros(1)}))
    with pytest.raises(TTABenchError, match="not a ttabench logit entry"):
        LogitCache(tmp_path).load(name)
    path.unlink()
    with pytest.raises(TTABenchError, match="cannot be read"):
        LogitCache(tmp_path).load(name)
