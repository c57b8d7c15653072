"""The baseline estimator classes: declarations, results, temperature-scaled variants."""

from __future__ import annotations

import math
from importlib.metadata import entry_points

import pytest
import torch

from ttabench.api import Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.estimators import aetta, classic, functional, scores
from ttabench.models.tiny import load_tiny_cnn
from ttabench.suites.tiny import TinySuite

DIRECT = {
    "ac": (classic.AverageConfidence, frozenset()),
    "doc": (classic.DifferenceOfConfidences, frozenset({"source_val"})),
    "atc-mc": (classic.ATCMaxConf, frozenset({"source_val"})),
    "atc-ne": (classic.ATCNegEntropy, frozenset({"source_val"})),
    "cot": (classic.COT, frozenset()),
    "cott": (classic.COTT, frozenset({"source_val"})),
}
TS = {
    "ac+ts": (classic.AverageConfidenceTS, classic.AverageConfidence),
    "doc+ts": (classic.DifferenceOfConfidencesTS, classic.DifferenceOfConfidences),
    "atc-mc+ts": (classic.ATCMaxConfTS, classic.ATCMaxConf),
    "atc-ne+ts": (classic.ATCNegEntropyTS, classic.ATCNegEntropy),
    "cot+ts": (classic.COTTS, classic.COT),
}
SCORES = {
    "nuclear": (scores.NuclearNorm, frozenset()),
    "mano": (scores.MaNo, frozenset()),
    "mde": (scores.MDE, frozenset()),
    "dispersion": (scores.Dispersion, frozenset({"features"})),
}
ALL = {
    **{n: c for n, (c, _) in DIRECT.items()},
    **{n: c for n, (c, _) in TS.items()},
    **{n: c for n, (c, _) in SCORES.items()},
    "aetta": aetta.AETTA,
}


@pytest.fixture(scope="module")
def outputs() -> tuple[Outputs, Outputs]:
    """The tiny model's outputs (with features) on a noisy split and on source val."""
    model = load_tiny_cnn()
    suite = TinySuite(n_examples=128)
    features: list[torch.Tensor] = []
    hook = model.module.net.fc.register_forward_hook(lambda m, i, o: features.append(i[0]))

    def run(dataset: torch.utils.data.TensorDataset) -> Outputs:
        images, labels = dataset.tensors
        features.clear()
        with torch.no_grad():
            logits = model.module(images.float() / 255.0)
        return Outputs(logits=logits, labels=labels, features=features[0])

    target = run(suite.dataset(suite.splits()[-1]))
    val = run(suite.source_val())
    hook.remove()
    return Outputs(logits=target.logits, features=target.features), val


def test_entry_points_name_these_classes() -> None:
    registered = {ep.name: ep for ep in entry_points(group="ttabench.estimators")}
    for name, cls in ALL.items():
        assert registered[name].load() is cls
        assert cls.name == name


@pytest.mark.parametrize("name", DIRECT)
def test_direct_declarations_and_values(name: str, outputs: tuple[Outputs, Outputs]) -> None:
    cls, needs = DIRECT[name]
    assert (cls.target, cls.kind, cls.needs) == ("source", "direct", needs)
    result = cls().estimate(*outputs)
    assert result.value == result.estimate
    assert 0.0 <= result.value <= 1.0


@pytest.mark.parametrize("name", SCORES)
def test_score_declarations_and_values(name: str, outputs: tuple[Outputs, Outputs]) -> None:
    cls, needs = SCORES[name]
    assert issubclass(cls, StaticEstimator)
    assert (cls.target, cls.kind, cls.needs) == ("source", "score", needs)
    result = cls().estimate(*outputs)
    assert result.estimate is None and math.isfinite(result.value)


def test_score_values_are_the_functions(outputs: tuple[Outputs, Outputs]) -> None:
    target, val = outputs
    assert scores.NuclearNorm().estimate(target, val).value == functional.nuclear_norm_score(target.logits)
    assert scores.MDE(temperature=2.0).estimate(target, val).value == functional.mde_score(target.logits, 2.0)
    score, branch = functional.mano_score(target.logits, return_branch=True)
    result = scores.MaNo().estimate(target, val)
    assert (result.value, result.extras["branch"]) == (score, branch)
    assert scores.Dispersion().estimate(target, val).value == functional.dispersion_score(
        target.features, target.logits
    )


def test_dispersion_without_features_raises(outputs: tuple[Outputs, Outputs]) -> None:
    with pytest.raises(TTABenchError, match="features"):
        scores.Dispersion().estimate(Outputs(logits=outputs[0].logits), None)


@pytest.mark.parametrize("name", ["doc", "atc-mc", "cott", "ac+ts", "cot+ts"])
def test_missing_source_val_raises(name: str, outputs: tuple[Outputs, Outputs]) -> None:
    with pytest.raises(TTABenchError, match="source-validation"):
        ALL[name]().estimate(outputs[0], None)


@pytest.mark.parametrize("name", TS)
def test_ts_declarations(name: str) -> None:
    cls, plain = TS[name]
    assert issubclass(cls, plain)
    assert (cls.target, cls.kind) == ("source", "direct")
    assert cls.needs == frozenset({"source_val"})


def _calibrated_val(scale: float) -> Outputs:
    """Labels drawn exactly as the softmax of ``logits / scale`` says: the NLL optimum is T = scale."""
    logits = torch.tensor([[math.log(3.0), 0.0]] * 4 + [[0.0, math.log(4.0)]] * 5) * scale
    return Outputs(logits=logits, labels=torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0]))


@pytest.mark.parametrize("name", TS)
def test_ts_equals_plain_when_t_is_one(name: str, outputs: tuple[Outputs, Outputs]) -> None:
    cls, plain = TS[name]
    target = Outputs(logits=outputs[0].logits[:, :2])
    val = _calibrated_val(1.0)
    scaled = cls().estimate(target, val)
    assert scaled.extras["temperature"] == pytest.approx(1.0, abs=1e-6)
    assert scaled.value == pytest.approx(plain().estimate(target, val).value, abs=1e-5)


@pytest.mark.parametrize("name", TS)
def test_ts_applies_t_to_target_and_val(name: str, outputs: tuple[Outputs, Outputs]) -> None:
    cls, plain = TS[name]
    target = Outputs(logits=outputs[0].logits[:, :2])
    val = _calibrated_val(3.0)
    scaled = cls().estimate(target, val)
    temperature = scaled.extras["temperature"]
    assert temperature == pytest.approx(3.0, abs=1e-5)
    by_hand = plain().estimate(
        Outputs(logits=target.logits / temperature),
        Outputs(logits=val.logits / temperature, labels=val.labels),
    )
    assert scaled.value == pytest.approx(by_hand.value)


def test_ts_differs_from_plain_when_t_is_not_one(outputs: tuple[Outputs, Outputs]) -> None:
    target = Outputs(logits=outputs[0].logits[:, :2])
    val = _calibrated_val(3.0)
    plain = classic.AverageConfidence().estimate(target, val).value
    assert classic.AverageConfidenceTS().estimate(target, val).value < plain - 1e-3


def test_cot_params_and_marginal(outputs: tuple[Outputs, Outputs]) -> None:
    assert classic.COT().params() == {"source_marginal": "uniform"}
    marginal = [0.4, 0.3, 0.2, 0.1]
    result = classic.COT(source_marginal=marginal).estimate(*outputs)
    assert result.value == pytest.approx(functional.cot(outputs[0].logits, torch.tensor(marginal)))
