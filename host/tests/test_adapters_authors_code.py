"""The host's built-in adapters side by side with references that re-state their authors' code.

Each reference below follows, in this test's own words, what the named file and function of the
authors' repository computes; it runs on its own copy of the trained ``tiny-cnn`` with the same
stream as the project's adapter, and logits and adapted parameters must agree within 1e-5 at
every step, across a reset (or the method's own restore/memory event). Random draws: the
references use torch's global generator, as the authors' code does; the adapters their own
generator seeded with the same seed (the same draws in the same order). The augmentation is
checked against torchvision's ops, which the authors' code calls (``support/authors_references.py``).

- BN-EMA, BN-alpha: mariodoebler/test-time-adaptation ``methods/norm.py`` ``BNEMA``,
  ``BNAlpha`` and ``methods/bn.py`` ``EMABatchNorm``, ``AlphaBatchNorm``;
- LAME: fiveai/LAME ``src/adaptation/lame.py`` ``LAME.run_step``, ``rbf_affinity``,
  ``kNN_affinity``, ``laplacian_optimization``;
- CoTTA: qinenergy/cotta ``cifar/cotta.py`` and ``imagenet/cotta.py``
  (``CoTTA.forward_and_adapt``, ``configure_model``, ``collect_params``,
  ``get_tta_transforms``; ``my_transforms.py`` ``ColorJitterPro``);
- RoTTA: BIT-DA/RoTTA ``core/adapter/rotta.py`` (``RoTTA.forward_and_adapt``,
  ``update_model``), ``core/utils/memory.py`` (``CSTU``), ``core/utils/bn_layers.py``
  (``RobustBN2d``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from authors_references import close, stream, tta_transforms
from torch import nn

from ttabench import registry
from ttabench.adaptation.augment import TTAugment
from ttabench.adapters.bn_stats import BNAlpha, BNEMA
from ttabench.adapters.cotta import CoTTA
from ttabench.adapters.lame import LAME
from ttabench.adapters.rotta import RoTTA
from ttabench.errors import TTABenchError
from ttabench.models.tiny import load_tiny_cnn

SEED = 11


@pytest.fixture(scope="module")
def pretrained() -> nn.Module:
    return load_tiny_cnn().module


def same_parameters(ours: nn.Module, theirs: nn.Module, what: str) -> None:
    pairs = list(zip(ours.parameters(), theirs.parameters(), strict=True))
    assert pairs
    for a, b in pairs:
        close(a.detach(), b.detach(), what)


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("size", [16, 28, 15])
@pytest.mark.parametrize("cotta_augs", [True, False])
def test_augmentation_matches_torchvision_and_the_draw_order(size, cotta_augs):
    mode = "edge" if cotta_augs else "reflect"
    ours = TTAugment(padding_mode=mode, blur_and_noise=cotta_augs)
    reference = tta_transforms(size, mode, cotta_augs)
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    changed = 0.0
    for trial in range(8):
        x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(trial))
        expected = reference(x)
        got = ours(x, generator)
        close(got, expected, f"augmentation {trial}")
        changed = max(changed, float((got - x).abs().max()))
    assert changed > 0.1  # it does augment
    # the same number of draws: both generators are still in step
    assert torch.rand(1).item() == torch.rand(1, generator=generator).item()


# --------------------------------------------------------------------------- BN-EMA / BN-alpha


def test_bn_ema_matches_ema_batchnorm_across_a_reset(pretrained):
    """EMABatchNorm.forward: train-mode pass (statistics stored, output discarded), then the
    eval-mode pass with the stored statistics."""
    batches = stream(12, 16)
    adapter = BNEMA(copy.deepcopy(pretrained))
    reference = copy.deepcopy(pretrained).eval().requires_grad_(False)
    for step, x in enumerate(batches):
        if step == 6:
            adapter.reset()
            reference = copy.deepcopy(pretrained).eval().requires_grad_(False)
        with torch.no_grad():
            reference.train()
            reference(x)
            reference.eval()
            expected = reference(x)
        close(adapter(x), expected, f"bn-ema logits, step {step}")
        for (name, a), b in zip(adapter.model.state_dict().items(), reference.state_dict().values()):
            if a.is_floating_point():
                close(a, b, f"bn-ema {name}, step {step}")
        close(adapter.predict(x), expected, "bn-ema predict")
    moved = adapter.model.state_dict()["net.features.1.running_mean"]
    assert not torch.allclose(moved, pretrained.state_dict()["net.features.1.running_mean"])
    assert adapter.counters() == {"steps": 12, "steps_since_reset": 6, "resets": 1}
    assert adapter.params()["layer_momenta"] == [0.1]


def alpha_batchnorm(layer: nn.BatchNorm2d, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """AlphaBatchNorm.forward: a momentum-1 BatchNorm2d in train mode records the batch
    statistics, mixed (1 - alpha) source + alpha batch, then F.batch_norm in eval mode."""
    norm = nn.BatchNorm2d(layer.num_features, affine=False, momentum=1.0)

    def forward(x: torch.Tensor) -> torch.Tensor:
        norm(x)
        mean = (1 - alpha) * layer.running_mean + alpha * norm.running_mean
        var = (1 - alpha) * layer.running_var + alpha * norm.running_var
        return F.batch_norm(x, mean, var, layer.weight, layer.bias, False, 0, layer.eps)

    return forward


def test_bn_alpha_matches_alpha_batchnorm(pretrained):
    adapter = BNAlpha(copy.deepcopy(pretrained), alpha=0.3)
    reference = copy.deepcopy(pretrained).eval()
    for index in (1, 5):
        layer = reference.net.features[index]
        reference.net.features[index] = type("Alpha", (nn.Module,), {
            "forward": staticmethod(alpha_batchnorm(layer, 0.3))})()
    source = copy.deepcopy(pretrained).eval()
    for step, x in enumerate(stream(10, 8)):
        with torch.no_grad():
            expected = reference(x)
            assert not torch.allclose(expected, source(x), atol=1e-3)  # the batch counts
        close(adapter(x), expected, f"bn-alpha logits, step {step}")
        close(adapter.predict(x), expected, "bn-alpha predict")
    assert adapter.params() == {"alpha": 0.3, "variance": "unbiased", "adapted_layers": 2}
    with pytest.raises(TTABenchError, match="alpha"):
        BNAlpha(copy.deepcopy(pretrained), alpha=2)
    with pytest.raises(TTABenchError, match="BatchNorm"):
        BNEMA(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


# --------------------------------------------------------------------------- LAME


def lame_reference(model: nn.Module, x: torch.Tensor, affinity: str, knn: int) -> torch.Tensor:
    """LAME.run_step: probas and backbone features of the frozen model, the affinity over the
    L2-normalized features, laplacian_optimization (at most 100 steps, energy tolerance)."""
    feats: list[torch.Tensor] = []
    handle = model.net.fc.register_forward_hook(lambda m, i, o: feats.append(i[0]))
    with torch.no_grad():
        probas = model(x).softmax(1)
    handle.remove()
    unary = -torch.log(probas + 1e-10)
    z = F.normalize(feats[0], p=2, dim=-1)
    n = z.size(0)
    dist = torch.norm(z.unsqueeze(0) - z.unsqueeze(1), dim=-1, p=2)
    if affinity == "rbf":
        sigma = dist.topk(k=min(knn, n), dim=-1, largest=False).values[:, -1].mean()
        kernel = torch.exp(-dist ** 2 / (2 * sigma ** 2))
    else:
        index = dist.topk(min(knn + 1, n), -1, largest=False).indices[:, 1:]
        kernel = torch.zeros(n, n).scatter_(-1, index, 1.0)
    return laplacian_reference(unary, kernel)


def laplacian_reference(unary: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """laplacian_optimization: at most 100 steps, stopping on the energy tolerance."""
    y = (-unary).softmax(-1)
    old = float("inf")
    for i in range(100):
        pairwise = kernel.matmul(y)
        y = (-unary + pairwise).softmax(-1)
        energy = (unary * y - pairwise * y + y * torch.log(y.clip(1e-20))).sum().item()
        if i > 1 and abs(energy - old) <= 1e-8 * abs(old):
            break
        old = energy
    return y


@pytest.mark.parametrize("affinity", ["rbf", "kNN"])
def test_lame_matches_laplacian_optimization(pretrained, affinity):
    adapter = LAME(copy.deepcopy(pretrained), affinity=affinity, knn=3)
    reference = copy.deepcopy(pretrained).eval()
    flips = 0
    for step, x in enumerate(stream(10, 24, noise=110.0)):
        expected = lame_reference(reference, x, affinity, 3)
        logits = adapter(x)
        close(logits.softmax(1), expected, f"lame assignment, step {step}")
        close(adapter.predict(x).softmax(1), expected, "lame predict")
        with torch.no_grad():
            flips += int((reference(x).argmax(1) != expected.argmax(1)).sum())
    assert flips > 0  # LAME changes some predictions of the source model
    assert adapter.counters()["last_iterations"] > 2
    assert adapter.params()["classifier"] == "net.fc"
    # one image: their rbf scale is 0 (NaN); here the rbf's diagonal, W = (1); kNN: W = 0
    with torch.no_grad():
        unary = -torch.log(reference(x[:1]).softmax(1) + 1e-10)
    kernel = torch.ones(1, 1) if affinity == "rbf" else torch.zeros(1, 1)
    close(adapter(x[:1]).softmax(1), laplacian_reference(unary, kernel), "lame on one image")
    with pytest.raises(TTABenchError, match="classifier"):
        LAME(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))


# --------------------------------------------------------------------------- CoTTA


class CoTTAReference:
    """qinenergy/cotta ``CoTTA`` (cifar/cotta.py; imagenet/cotta.py when ``imagenet``)."""

    def __init__(self, model: nn.Module, make_optimizer, mt: float, rst: float, ap: float,
                 n_aug: int, imagenet: bool) -> None:
        # configure_model: train mode, BatchNorm2d on batch statistics, everything trainable
        model.train()
        model.requires_grad_(False)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(True)
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
            else:
                m.requires_grad_(True)
        # collect_params: every module's own weight and bias
        params = [p for _, m in model.named_modules() for n, p in m.named_parameters()
                  if n in ("weight", "bias") and p.requires_grad]
        self.model, self.optimizer = model, make_optimizer(params)
        self.mt, self.rst, self.ap, self.n_aug, self.imagenet = mt, rst, ap, n_aug, imagenet
        self.transform = tta_transforms(16)
        self.copy_states()

    def copy_states(self) -> None:  # copy_model_and_optimizer
        self.model_state = copy.deepcopy(self.model.state_dict())
        self.optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        self.model_anchor = copy.deepcopy(self.model)
        self.model_ema = copy.deepcopy(self.model)
        for param in self.model_ema.parameters():
            param.detach_()

    def reset(self) -> None:
        self.model.load_state_dict(self.model_state, strict=True)
        self.optimizer.load_state_dict(self.optimizer_state)
        self.copy_states()

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)
        anchor_prob = torch.nn.functional.softmax(self.model_anchor(x), dim=1).max(1)[0]
        standard_ema = self.model_ema(x)
        outputs_emas = []
        to_aug = anchor_prob.mean(0) < self.ap
        if to_aug or not self.imagenet:
            for _ in range(self.n_aug):
                outputs_emas.append(self.model_ema(self.transform(x)).detach())
        outputs_ema = torch.stack(outputs_emas).mean(0) if to_aug else standard_ema
        if self.imagenet:
            target = outputs_ema.detach()
            loss = (-0.5 * (target.softmax(1) * outputs.log_softmax(1)).sum(1)
                    - 0.5 * (outputs.softmax(1) * target.log_softmax(1)).sum(1)).mean(0)
        else:
            loss = (-(outputs_ema.softmax(1) * outputs.log_softmax(1)).sum(1)).mean(0)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        for ema_param, param in zip(self.model_ema.parameters(), self.model.parameters()):
            ema_param.data[:] = self.mt * ema_param[:].data[:] + (1 - self.mt) * param[:].data[:]
        for nm, m in self.model.named_modules():
            for npp, p in m.named_parameters():
                if npp in ["weight", "bias"] and p.requires_grad:
                    mask = (torch.rand(p.shape) < self.rst).float()
                    with torch.no_grad():
                        p.data = self.model_state[f"{nm}.{npp}"] * mask + p * (1.0 - mask)
        return outputs_ema


@pytest.mark.parametrize("family", ["cifar10", "imagenet"])
def test_cotta_matches_the_authors_code_across_a_reset(pretrained, family):
    imagenet = family == "imagenet"
    # ImageNet's ap (0.1) never fires with 4 classes; at 0.62 some batches augment, some not
    ap, n_aug = (0.62, 8) if imagenet else (0.92, 8)  # 8 augmented passes (32 by default)
    if imagenet:
        def make(params):
            return torch.optim.SGD(params, lr=0.01, momentum=0.9, dampening=0.0,
                                   weight_decay=0.0, nesterov=True)
    else:
        def make(params):
            return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0)
    adapter = CoTTA(copy.deepcopy(pretrained), family=family, n_augmentations=n_aug, seed=SEED,
                    **({"ap": ap} if imagenet else {}))
    torch.manual_seed(SEED)
    reference = CoTTAReference(copy.deepcopy(pretrained), make, mt=0.999, rst=0.01 if not imagenet
                               else 0.001, ap=ap, n_aug=n_aug, imagenet=imagenet)
    source = [p.detach().clone() for p in pretrained.parameters()]
    restored = 0
    for step, x in enumerate(stream(12, 16, noise=100.0)):
        if step == 7:
            adapter.reset()
            torch.manual_seed(SEED)
            reference.reset()
        expected = reference.forward_and_adapt(x)
        close(adapter(x), expected.detach(), f"cotta {family} logits, step {step}")
        same_parameters(adapter.student, reference.model, f"cotta student, step {step}")
        same_parameters(adapter.model, reference.model_ema, f"cotta teacher, step {step}")
        if step > 0:
            restored += sum(int((a == s).sum()) for a, s in zip(adapter.student.parameters(), source))
        with torch.no_grad():
            close(adapter.predict(x), reference.model_ema.eval()(x), "cotta predict")
            reference.model_ema.train()
    assert restored > 0  # the stochastic restore put entries back to their source values
    counters = adapter.counters()
    assert counters["resets"] == 1 and counters["steps_since_reset"] == 5
    if imagenet:
        assert 0 < counters["augmented_steps"] < 12  # some batches, not all
    params = adapter.params()
    assert params["family"] == family and params["family_rule"] == "given"
    assert params["optimizer"]["method"] == ("SGD" if imagenet else "Adam")


def test_cotta_family_from_the_number_of_classes(pretrained):
    adapter = CoTTA(copy.deepcopy(pretrained), n_augmentations=1)
    assert adapter.params()["family"] is None
    adapter(stream(1, 8)[0])
    params = adapter.params()
    assert (params["family"], params["ap"], params["rst"]) == ("cifar10", 0.92, 0.01)
    assert params["optimizer"] == {"method": "Adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0}
    with pytest.raises(TTABenchError, match="family"):
        CoTTA(copy.deepcopy(pretrained), family="mnist")


# --------------------------------------------------------------------------- RoTTA


class RobustBN2dReference(nn.Module):
    """bn_layers.py ``RobustBN2d``."""

    def __init__(self, bn: nn.BatchNorm2d, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("source_mean", copy.deepcopy(bn.running_mean))
        self.register_buffer("source_var", copy.deepcopy(bn.running_var))
        self.weight = copy.deepcopy(bn.weight)
        self.bias = copy.deepcopy(bn.bias)
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            b_var, b_mean = torch.var_mean(x, dim=[0, 2, 3], unbiased=False, keepdim=False)
            mean = (1 - self.momentum) * self.source_mean + self.momentum * b_mean
            var = (1 - self.momentum) * self.source_var + self.momentum * b_var
            self.source_mean, self.source_var = copy.deepcopy(mean.detach()), copy.deepcopy(var.detach())
            mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        else:
            mean, var = self.source_mean.view(1, -1, 1, 1), self.source_var.view(1, -1, 1, 1)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class CSTUReference:
    """memory.py ``CSTU`` (items as [data, uncertainty, age] lists)."""

    def __init__(self, capacity: int, num_class: int, lambda_t: float = 1.0, lambda_u: float = 1.0):
        self.capacity, self.num_class = capacity, num_class
        self.per_class = capacity / num_class
        self.lambda_t, self.lambda_u = lambda_t, lambda_u
        self.data: list[list[list]] = [[] for _ in range(num_class)]

    def occupancy(self) -> int:
        return sum(len(c) for c in self.data)

    def heuristic_score(self, age, uncertainty):
        return (self.lambda_t * 1 / (1 + math.exp(-age / self.capacity))
                + self.lambda_u * uncertainty / math.log(self.num_class))

    def add_instance(self, x, prediction, uncertainty):
        if self.remove_instance(prediction, self.heuristic_score(0, uncertainty)):
            self.data[prediction].append([x, uncertainty, 0])
        for class_list in self.data:
            for item in class_list:
                item[2] += 1

    def remove_instance(self, cls, score):
        if len(self.data[cls]) < self.per_class:
            if self.occupancy() < self.capacity:
                return True
            dist = [len(c) for c in self.data]
            return self.remove_from_classes([i for i, o in enumerate(dist) if o == max(dist)], score)
        return self.remove_from_classes([cls], score)

    def remove_from_classes(self, classes, score_base):
        max_class = max_index = max_score = None
        for cls in classes:
            for idx, item in enumerate(self.data[cls]):
                score = self.heuristic_score(age=item[2], uncertainty=item[1])
                if max_score is None or score >= max_score:
                    max_score, max_index, max_class = score, idx, cls
        if max_class is None:
            return True
        if max_score > score_base:
            self.data[max_class].pop(max_index)
            return True
        return False

    def get_memory(self):
        data = [item[0] for c in self.data for item in c]
        ages = [item[2] / self.capacity for c in self.data for item in c]
        return data, ages


class RoTTAReference:
    """rotta.py ``RoTTA`` with its BaseAdapter and Adam optimizer."""

    def __init__(self, model: nn.Module, capacity: int, update_frequency: int, num_class: int) -> None:
        model.requires_grad_(False)
        for index in (1, 5):  # configure_model: every BatchNorm2d becomes a RobustBN2d
            bn = model.net.features[index]
            model.net.features[index] = RobustBN2dReference(bn, 0.05).requires_grad_(True)
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0)
        self.mem = CSTUReference(capacity, num_class)
        self.model_ema = copy.deepcopy(model)
        for param in self.model_ema.parameters():
            param.detach_()
        self.transform = tta_transforms(16)
        self.nu, self.update_frequency, self.current_instance = 0.001, update_frequency, 0

    @torch.enable_grad()
    def forward_and_adapt(self, batch_data: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.model.eval()
            self.model_ema.eval()
            ema_out = self.model_ema(batch_data)
            predict = torch.softmax(ema_out, dim=1)
            pseudo_label = torch.argmax(predict, dim=1)
            entropy = torch.sum(-predict * torch.log(predict + 1e-6), dim=1)
        for i, data in enumerate(batch_data):
            self.mem.add_instance(data, pseudo_label[i].item(), entropy[i].item())
            self.current_instance += 1
            if self.current_instance % self.update_frequency == 0:
                self.update_model()
        return ema_out

    def update_model(self) -> None:
        self.model.train()
        self.model_ema.train()
        sup_data, ages = self.mem.get_memory()
        if len(sup_data) > 0:
            sup_data = torch.stack(sup_data)
            strong_sup_aug = self.transform(sup_data)
            ema_sup_out = self.model_ema(sup_data)
            stu_sup_out = self.model(strong_sup_aug)
            ages = torch.tensor(ages).float()
            instance_weight = torch.exp(-ages) / (1 + torch.exp(-ages))
            loss = (-(ema_sup_out.softmax(1) * stu_sup_out.log_softmax(1)).sum(1) * instance_weight).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        for ema_param, param in zip(self.model_ema.parameters(), self.model.parameters()):
            ema_param.data[:] = (1 - self.nu) * ema_param[:].data[:] + self.nu * param[:].data[:]


def test_rotta_matches_the_authors_code_across_memory_updates_and_a_reset(pretrained):
    # a small bank and an update frequency that falls inside batches exercise the memory:
    # eviction from the majority classes, updates mid-batch
    capacity, frequency, batch = 12, 16, 10
    adapter = RoTTA(copy.deepcopy(pretrained), memory_size=capacity, update_frequency=frequency,
                    seed=SEED)
    torch.manual_seed(SEED)
    reference = RoTTAReference(copy.deepcopy(pretrained), capacity, frequency, 4)
    for step, x in enumerate(stream(14, batch, noise=100.0)):
        if step == 9:
            adapter.reset()
            torch.manual_seed(SEED)
            reference = RoTTAReference(copy.deepcopy(pretrained), capacity, frequency, 4)
        expected = reference.forward_and_adapt(x)
        close(adapter(x), expected, f"rotta logits, step {step}")
        same_parameters(adapter.student, reference.model, f"rotta student, step {step}")
        same_parameters(adapter.model, reference.model_ema, f"rotta teacher, step {step}")
        for a, b in zip(adapter.model.buffers(), reference.model_ema.buffers()):
            close(a, b, f"rotta teacher statistics, step {step}")
        ours, _ = adapter.memory.contents()
        theirs, ages = reference.mem.get_memory()
        assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
        assert adapter.memory.contents()[1] == ages
        with torch.no_grad():
            close(adapter.predict(x), reference.model_ema.eval()(x), "rotta predict")
    counters = adapter.counters()
    assert counters["updates"] == 5 + 3 and counters["resets"] == 1  # 90 images, reset, 50
    assert counters["memory_items"] == capacity


def test_rotta_refuses_a_model_without_batchnorm():
    with pytest.raises(TTABenchError, match="BatchNorm"):
        RoTTA(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


# --------------------------------------------------------------------------- every built-in


@pytest.mark.parametrize("name", ["bn-ema", "bn-alpha", "lame", "cotta", "rotta"])
def test_predict_changes_no_state_and_no_counter(pretrained, name):
    cls = registry.get("adapters", name)
    extra = {"n_augmentations": 2} if name == "cotta" else {}
    extra = {"memory_size": 8, "update_frequency": 8} if name == "rotta" else extra
    adapter = cls(copy.deepcopy(pretrained), **extra)
    batches = stream(3, 8)
    for x in batches[:2]:
        adapter(x)
    state = {k: v.clone() for k, v in adapter.state_dict().items()}
    counters = adapter.counters()
    memory = len(adapter.memory) if name == "rotta" else None
    first = adapter.predict(batches[2])
    assert torch.equal(first, adapter.predict(batches[2]))
    assert adapter.counters() == counters
    assert all(torch.equal(v, adapter.state_dict()[k]) for k, v in state.items())
    if name == "rotta":
        assert len(adapter.memory) == memory
