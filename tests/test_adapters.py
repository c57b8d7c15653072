"""Tests of the entropy-minimization adapters against a deliberately plain implementation."""

from __future__ import annotations

import copy
import json
import math
from importlib.metadata import entry_points

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ttabench.api import to_unit_float
from ttabench.errors import TTABenchError
from ttabench.models.tiny import load_tiny_cnn
from ttabench.suites.tiny import make_images
from ttabench_enigma import EATA, ETA, RDumb, Tent, collect_params, configure_model
from ttabench_enigma.adapters import scaled_d_margin

BATCH = 64
STEPS = 11  # crosses the resets at steps 5 and 10 when reset_every = 5
LR = 5e-3
NOISE = 110.0  # tiny-suite noise at which both filters keep some samples and drop others


@pytest.fixture(scope="module")
def pretrained() -> nn.Module:
    return load_tiny_cnn().module


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    return [to_unit_float(make_images(BATCH, seed=500 + t, noise=NOISE)[0]) for t in range(STEPS)]


@pytest.fixture(scope="module")
def source_batches() -> list[torch.Tensor]:
    # noisy enough that the model is not certain everywhere, so the Fisher is not ~0
    return [make_images(32, seed=900 + b, noise=80.0)[0] for b in range(3)]


# --------------------------------------------------------------------------- plain reference


def plain_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(1)
    return -(p * logits.log_softmax(1)).sum(1)


def plain_setup(pretrained: nn.Module, types: tuple[type, ...] = (nn.BatchNorm2d,)):
    model = copy.deepcopy(pretrained)
    model.train()
    for p in model.parameters():
        p.requires_grad = False
    params = []
    for module in model.modules():
        if isinstance(module, types):
            module.weight.requires_grad = True
            module.bias.requires_grad = True
            params += [module.weight, module.bias]
            if isinstance(module, nn.BatchNorm2d):
                module.track_running_stats = False
                module.running_mean = None
                module.running_var = None
    return model, params


def plain_fisher(pretrained: nn.Module, images: list[torch.Tensor]):
    model, params = plain_setup(pretrained)
    total = [torch.zeros_like(p) for p in params]
    for x in images:
        logits = model(x.float() / 255.0)
        loss = F.cross_entropy(logits, logits.argmax(1))
        loss.backward()
        for t, p in zip(total, params):
            t += p.grad**2
            p.grad = None
    return [t / len(images) for t in total], [p.detach().clone() for p in params]


def plain_run(
    pretrained, batches, method, e0=0.0, d=0.0, reset_every=None, fisher=None, alpha=0.0,
    types=(nn.BatchNorm2d,),
):
    """Logits, parameters after each step, and (reliable, kept) counts per step."""
    logits_out, params_out, counts = [], [], []
    model = None
    for t, x in enumerate(batches):
        if model is None or (reset_every is not None and t % reset_every == 0):
            model, params = plain_setup(pretrained, types)
            optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9)
            m = None
        logits = model(x)
        ent = plain_entropy(logits)
        if method == "tent":
            loss = ent.mean()
            loss.backward()
            optimizer.step()
            counts.append((len(x), len(x)))
        else:
            ids1 = torch.where(ent < e0)[0]
            probs1 = logits[ids1].softmax(1).detach()
            if m is None:
                ids2 = torch.arange(len(ids1))
            else:
                cos = F.cosine_similarity(m.unsqueeze(0), probs1, dim=1)
                ids2 = torch.where(cos.abs() < d)[0]
            kept_ent = ent[ids1][ids2]
            kept_probs = probs1[ids2]
            if len(kept_probs) > 0:
                m = kept_probs.mean(0) if m is None else 0.9 * m + 0.1 * kept_probs.mean(0)
            loss = (kept_ent * (1 / torch.exp(kept_ent.detach() - e0))).mean()
            if fisher is not None:
                for f, p, p0 in zip(fisher[0], params, fisher[1]):
                    loss = loss + alpha * (f * (p - p0) ** 2).sum()
            if len(kept_ent) > 0:
                loss.backward()
                optimizer.step()
            counts.append((len(ids1), len(ids2)))
        optimizer.zero_grad()
        logits_out.append(logits.detach())
        params_out.append([p.detach().clone() for p in params])
    return logits_out, params_out, counts


def run_adapter(adapter, batches):
    logits_out, params_out, counts = [], [], []
    for x in batches:
        logits_out.append(adapter(x))
        params_out.append([p.detach().clone() for p in adapter.adapted_params])
        c = adapter.counters()
        counts.append((c["last_reliable"], c["last_kept"]))
    return logits_out, params_out, counts


def assert_same_trajectory(ours, reference):
    for step, (a, b) in enumerate(zip(ours[0], reference[0])):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=lambda s: f"logits step {step}: {s}")
    for step, (a, b) in enumerate(zip(ours[1], reference[1])):
        for pa, pb in zip(a, b, strict=True):
            torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0, msg=lambda s: f"params step {step}: {s}")
    assert ours[2] == reference[2]


def assert_filters_bite(counts):
    """Both filters keep some and drop some samples on at least one step."""
    assert any(0 < r < BATCH for r, _ in counts), counts
    assert any(0 < k < r for r, k in counts), counts


# --------------------------------------------------------------------------- exactness


def test_tent_matches_plain(pretrained, batches):
    reference = plain_run(pretrained, batches, "tent")
    ours = run_adapter(Tent(copy.deepcopy(pretrained), lr=LR), batches)
    assert_same_trajectory(ours, reference)
    assert not torch.equal(ours[1][-1][0], ours[1][0][0])  # the parameters moved


def test_eta_matches_plain(pretrained, batches):
    e0, d = 0.4 * math.log(4), 0.6
    reference = plain_run(pretrained, batches, "eta", e0, d)
    ours = run_adapter(ETA(copy.deepcopy(pretrained), lr=LR, e_margin=e0, d_margin=d), batches)
    assert_filters_bite(reference[2])
    assert_same_trajectory(ours, reference)


def test_eata_with_fisher_matches_plain(pretrained, batches, source_batches):
    e0, d, alpha = 0.4 * math.log(4), 0.6, 2000.0
    fisher = plain_fisher(pretrained, source_batches)
    assert all(f.abs().sum() > 0 for f in fisher[0])
    reference = plain_run(pretrained, batches, "eata", e0, d, fisher=fisher, alpha=alpha)
    adapter = EATA(
        copy.deepcopy(pretrained), lr=LR, e_margin=e0, d_margin=d,
        fisher_data=source_batches, fisher_alpha=alpha,
    )
    for ours_f, ref_f in zip(adapter.fisher, fisher[0]):
        torch.testing.assert_close(ours_f, ref_f, atol=1e-7, rtol=1e-5)
    ours = run_adapter(adapter, batches)
    assert_filters_bite(reference[2])
    assert_same_trajectory(ours, reference)
    # the regularizer changes the trajectory
    plain_eta = plain_run(pretrained, batches, "eta", e0, d)
    assert not torch.allclose(plain_eta[1][-1][0], reference[1][-1][0], atol=1e-6)


def test_rdumb_matches_plain_across_resets(pretrained, batches):
    e0, d = 0.4 * math.log(4), 0.6
    reference = plain_run(pretrained, batches, "rdumb", e0, d, reset_every=5)
    adapter = RDumb(copy.deepcopy(pretrained), lr=LR, e_margin=e0, d_margin=d, reset_every=5)
    ours = run_adapter(adapter, batches)
    assert_filters_bite(reference[2])
    assert_same_trajectory(ours, reference)
    counters = adapter.counters()
    assert counters["resets"] == 3  # at steps 0, 5 and 10
    assert counters["total_steps"] == STEPS and counters["steps_since_reset"] == 1
    assert counters["total_reliable"] == sum(r for r, _ in reference[2])
    assert counters["total_kept"] == sum(k for _, k in reference[2])


def test_one_adam_step_equals_the_adam_update_computed_by_hand(pretrained, batches):
    """Tent's CIFAR-10-C optimizer (DequanWang/tent cfgs/tent.yaml: Adam, lr 1e-3, betas
    (0.9, 0.999), weight decay 0). Adam's first update from an empty state is
    theta - lr * m_hat / (sqrt(v_hat) + eps) with m_hat = g and v_hat = g^2 (bias-corrected),
    i.e. theta - lr * g / (|g| + 1e-8), g the gradient of the mean entropy on the batch."""
    adapter = Tent(copy.deepcopy(pretrained), optimizer="Adam", lr=1e-3)
    model, params = plain_setup(pretrained)
    plain_entropy(model(batches[0])).mean().backward()
    expected = [(p - 1e-3 * p.grad / (p.grad.abs() + 1e-8)).detach() for p in params]
    adapter(batches[0])
    for ours, theirs in zip(adapter.adapted_params, expected, strict=True):
        torch.testing.assert_close(ours.detach(), theirs, atol=1e-7, rtol=0)
    assert adapter.params()["optimizer"] == "Adam" and adapter.params()["beta"] == 0.9
    assert "momentum" not in adapter.params()


@pytest.mark.parametrize("adapter_cls", [Tent, RDumb])
def test_adam_steps_match_torch_adam_across_a_reset(pretrained, batches, adapter_cls):
    """Four steps with beta 0.5 against torch.optim.Adam(betas=(0.5, 0.999)) on the same
    batches (RDumb with margins that keep every sample: its loss is the mean of
    E_i * exp(E0 - E_i)); after a reset the Adam moments are empty again (the same first
    step)."""
    e0 = 10.0
    options = {"e_margin": e0, "d_margin": 1.01} if adapter_cls is RDumb else {}
    adapter = adapter_cls(copy.deepcopy(pretrained), optimizer="Adam", lr=LR, beta=0.5, **options)
    model, params = plain_setup(pretrained)
    reference = torch.optim.Adam(params, lr=LR, betas=(0.5, 0.999), weight_decay=0.0)
    for x in batches[:4]:
        logits = model(x)
        entropy = plain_entropy(logits)
        weight = torch.exp(e0 - entropy.detach()) if adapter_cls is RDumb else 1.0
        (entropy * weight).mean().backward()
        reference.step()
        reference.zero_grad()
        torch.testing.assert_close(adapter(x), logits.detach(), atol=1e-6, rtol=0)
        for ours, theirs in zip(adapter.adapted_params, params, strict=True):
            torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=0)
        assert adapter.counters()["last_kept"] == len(x)
    sgd = adapter_cls(copy.deepcopy(pretrained), lr=LR, **options)
    sgd(batches[0])
    assert not torch.allclose(sgd.adapted_params[0], params[0], atol=1e-4)  # Adam is not SGD
    adapter.reset()
    first = adapter_cls(copy.deepcopy(pretrained), optimizer="Adam", lr=LR, beta=0.5, **options)
    adapter(batches[0])
    first(batches[0])
    for ours, theirs in zip(adapter.adapted_params, first.adapted_params, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("options, message", [
    ({"optimizer": "AdamW"}, "optimizer must be one of SGD, Adam, got 'AdamW'"),
    ({"optimizer": "Adam", "beta": 1.0}, "beta must be in"),
    ({"momentum": 1.5}, "momentum must be in"),
])
def test_optimizer_options_are_checked(pretrained, options, message):
    for adapter_cls in (Tent, EATA, ETA, RDumb):
        with pytest.raises(TTABenchError, match=message):
            adapter_cls(copy.deepcopy(pretrained), **options)


def test_reset_restores_pretrained_state(pretrained, batches):
    adapter = ETA(copy.deepcopy(pretrained), lr=LR)
    initial = [p.detach().clone() for p in adapter.adapted_params]
    frozen = {k: v.clone() for k, v in adapter.model.state_dict().items() if not k.endswith(("weight", "bias"))}
    for x in batches[:4]:
        adapter(x)
    assert adapter.ema is not None and adapter.optimizer.state
    adapter.reset()
    for p, p0 in zip(adapter.adapted_params, initial):
        assert torch.equal(p, p0)
    assert adapter.ema is None and not adapter.optimizer.state
    fresh = ETA(copy.deepcopy(pretrained), lr=LR)
    for a, b in zip(run_adapter(adapter, batches[:3])[0], run_adapter(fresh, batches[:3])[0]):
        assert torch.equal(a, b)
    for k, v in adapter.model.state_dict().items():  # the convolutions and the head never move
        if k in frozen:
            assert torch.equal(v, frozen[k])


# --------------------------------------------------------------------------- margins and params


def test_margins_resolve_from_the_output_width(pretrained, batches):
    adapter = RDumb(copy.deepcopy(pretrained))
    assert adapter.params()["e_margin"] is None
    adapter(batches[0])
    params = adapter.params()
    assert params["num_classes"] == 4
    assert params["e_margin"] == pytest.approx(0.4 * math.log(4))
    assert params["d_margin"] == pytest.approx(0.05 * math.sqrt(1000 / 4))
    assert params["lr"] == 2.5e-4 and params["momentum"] == 0.9 and params["reset_every"] == 1000
    assert params["adapted_layers"] == 2 and params["adapted_layer_kinds"] == {"batch": 2}
    assert json.loads(json.dumps(params)) == params
    assert RDumb(copy.deepcopy(pretrained), d_margin="reference", num_classes=4).params()["d_margin"] == 0.05
    with pytest.raises(TTABenchError, match="classes"):
        ETA(copy.deepcopy(pretrained), num_classes=10)(batches[0])


def test_scaled_d_margin_values():
    assert scaled_d_margin(1000) == pytest.approx(0.05)
    assert scaled_d_margin(10) == pytest.approx(0.5)
    assert scaled_d_margin(2) == 1.0
    # geometry: a one-hot p against a uniform mean has cos = 1/sqrt(K), below the margin
    for k in (4, 10, 100, 1000):
        cos = F.cosine_similarity(torch.full((1, k), 1 / k), F.one_hot(torch.tensor([0]), k).float())
        assert cos.item() == pytest.approx(1 / math.sqrt(k), rel=1e-5)
        assert cos.item() < scaled_d_margin(k)


def test_scaled_margin_lets_samples_pass_where_the_reference_margin_does_not(pretrained, batches):
    """After the first step (no redundancy filter yet), count kept vs reliable samples."""
    kept_share = {}
    for d_margin in (None, "reference"):
        adapter = RDumb(copy.deepcopy(pretrained), lr=LR, d_margin=d_margin)
        adapter(batches[0])
        first = adapter.counters()
        for x in batches[1:]:
            adapter(x)
        last = adapter.counters()
        reliable = last["total_reliable"] - first["total_reliable"]
        kept_share[d_margin] = (last["total_kept"] - first["total_kept"]) / reliable
    assert kept_share["reference"] < 0.1, kept_share  # measured 0.02: the model barely updates
    assert kept_share[None] > 0.5, kept_share


# --------------------------------------------------------------------------- edge cases


def test_everything_filtered_out_means_no_step(pretrained, batches):
    adapter = EATA(copy.deepcopy(pretrained), e_margin=1e-6)
    before = [p.detach().clone() for p in adapter.adapted_params]
    logits = adapter(batches[0])
    assert logits.shape == (BATCH, 4)
    for p, p0 in zip(adapter.adapted_params, before):
        assert torch.equal(p, p0)
    assert adapter.counters()["last_kept"] == 0 and adapter.counters()["updates"] == 0
    assert adapter.ema is None and not adapter.optimizer.state


def test_model_without_normalization_is_refused():
    with pytest.raises(TTABenchError, match="no normalization layer"):
        RDumb(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)))
    with pytest.raises(TTABenchError, match="unknown normalization"):
        Tent(nn.Sequential(nn.BatchNorm2d(3)), norms=("instance",))
    with pytest.raises(TTABenchError, match="lr"):
        Tent(nn.Sequential(nn.BatchNorm2d(3)), lr=-1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_stop_before_the_update(pretrained, batches, bad):
    adapter = Tent(copy.deepcopy(pretrained), lr=LR)
    adapter(batches[0])
    before = [p.detach().clone() for p in adapter.adapted_params]
    x = batches[1].clone()
    x[3, 0, 0, 0] = bad
    with pytest.raises(TTABenchError, match="NaN or infinite"):
        adapter(x)
    for p, p0 in zip(adapter.adapted_params, before):
        assert torch.equal(p, p0)


def test_predict_touches_nothing(pretrained, batches):
    adapter = RDumb(copy.deepcopy(pretrained), lr=LR)
    for x in batches[:3]:
        adapter(x)
    counters, ema = adapter.counters(), adapter.ema.clone()
    params = [p.detach().clone() for p in adapter.adapted_params]
    logits = adapter.predict(batches[5])
    assert adapter.counters() == counters and torch.equal(adapter.ema, ema)
    assert all(torch.equal(p, q) for p, q in zip(adapter.adapted_params, params))
    assert adapter.model.training
    # batch statistics in eval mode: the same as the train-mode forward of these weights
    with torch.no_grad():
        expected = adapter.model(batches[5])
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- library shape


def test_configure_and_collect(pretrained):
    model = configure_model(copy.deepcopy(pretrained))
    params, names = collect_params(model)
    assert names == ["net.features.1.weight", "net.features.1.bias", "net.features.5.weight", "net.features.5.bias"]
    assert model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 4 and all(any(p is q for q in params) for p in trainable)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert not module.track_running_stats and module.running_mean is None and module.running_var is None
    model.eval()  # still batch statistics in eval mode
    x = to_unit_float(make_images(8, seed=1)[0])
    with torch.no_grad():
        eval_out = model(x)
        model.train()
        torch.testing.assert_close(eval_out, model(x))


class NormNet(nn.Module):
    """conv-GroupNorm-ReLU-pool, LayerNorm, linear: no BatchNorm at all."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(F.relu(self.gn(self.conv(x))), 1).flatten(1)
        return self.fc(self.ln(h))


def test_layer_and_group_norm_option(batches):
    with pytest.raises(TTABenchError, match="no normalization layer"):
        Tent(NormNet())
    adapter = Tent(NormNet(), lr=LR, norms=("layer", "group"))
    assert adapter.param_names == ["gn.weight", "gn.bias", "ln.weight", "ln.bias"]
    params = adapter.params()
    assert params["adapted_layer_kinds"] == {"group": 1, "layer": 1} and params["adapted_layers"] == 2
    assert params["norms"] == ["group", "layer"]
    assert Tent(NormNet(), norms="layer").param_names == ["ln.weight", "ln.bias"]
    reference = plain_run(NormNet(), batches[:4], "tent", types=(nn.GroupNorm, nn.LayerNorm))
    ours = run_adapter(adapter, batches[:4])
    assert_same_trajectory(ours, reference)
    assert torch.equal(adapter.model.conv.weight, NormNet().conv.weight)


def test_entry_points_and_imports():
    loaded = {ep.name: ep.load() for ep in entry_points(group="ttabench.adapters")}
    assert loaded["tent"] is Tent and loaded["eata"] is EATA
    assert loaded["eta"] is ETA and loaded["rdumb"] is RDumb
    assert issubclass(RDumb, ETA) and issubclass(ETA, EATA)


@pytest.mark.parametrize("adapter_cls", [Tent, ETA, EATA, RDumb])
def test_a_step_under_no_grad_adapts_as_without_it(pretrained, batches, source_batches, adapter_cls):
    """An evaluation loop from another codebase calls adapters under torch.no_grad(): the step
    enables gradients itself (as tent's, EATA's and RDumb's own steps do), so the logits and
    the adapted parameters are those of a step outside it (EATA's Fisher too)."""
    extra = {"fisher_data": source_batches} if adapter_cls is EATA else {}
    free = adapter_cls(copy.deepcopy(pretrained), lr=LR, **extra)
    with torch.no_grad():
        guarded = adapter_cls(copy.deepcopy(pretrained), lr=LR, **extra)
        guarded_logits = [guarded(x) for x in batches[:3]]
    free_logits = [free(x) for x in batches[:3]]
    assert guarded.updates == free.updates > 0
    for a, b in zip(guarded_logits, free_logits):
        assert torch.equal(a, b)
    for a, b in zip(guarded.adapted_params, free.adapted_params):
        assert torch.equal(a, b)
    start = [p.detach() for p in adapter_cls(copy.deepcopy(pretrained), lr=LR).adapted_params]
    assert any(not torch.equal(a, b) for a, b in zip(guarded.adapted_params, start))
