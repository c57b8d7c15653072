"""Plugin discovery: entry points from real (temporary) dist-info folders, laziness, errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fake_distribution import make_dist

from ttabench import registry
from ttabench.api import LoadedModel, StaticEstimator, Suite
from ttabench.errors import TTABenchError

ROOT = Path(__file__).resolve().parents[1]

GOOD_MODULE = '''
from ttabench.api import EstimateResult, StaticEstimator

class Good(StaticEstimator):
    name = "good-one"
    def estimate(self, target, source_val):
        return EstimateResult(value=0.5)

def load_thing(arg=None, *, cache_dir=None, num_classes=None):
    return "not a LoadedModel"
'''


def declared() -> dict[str, dict[str, str]]:
    """Entry points declared in pyproject.toml, read independently of importlib.metadata."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = data["project"]["entry-points"]
    return {kind: groups.get(f"ttabench.{kind}", {}) for kind in registry.KINDS}


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path for fake distributions; registry state reset around the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(registry.AUTOLOAD_ENV, raising=False)
    registry.refresh(keep_explicit=False)
    yield tmp_path
    registry.refresh(keep_explicit=False)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_lists_every_declared_plugin_without_importing(site):
    every = registry.list_plugins(load=False)
    listed = {(p.kind, p.name): p for p in every if p.distribution == "ttabench"}
    expected = {(k, n): t for k, entries in declared().items() for n, t in entries.items()}
    assert {key: p.target for key, p in listed.items()} == expected
    assert {p.status for p in every} == {"not loaded"}
    source = listed[("adapters", "source")]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (source.distribution, source.version) == ("ttabench", version)


def test_listing_is_lazy_and_get_imports_only_one():
    code = (
        "import sys\n"
        "from ttabench import registry\n"
        "registry.list_plugins(load=False)\n"
        "before = sorted(m for m in sys.modules if m.startswith(('ttabench.', 'ttabench_')))\n"
        "registry.get('suites', 'tiny')\n"
        "after = sorted(m for m in sys.modules if m.startswith(('ttabench.', 'ttabench_')))\n"
        "print(before); print(after)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.splitlines()
    before, after = eval(out[0]), eval(out[1])
    # the package's own __init__ reads its version (stdlib only); nothing a plugin names
    assert before == ["ttabench.errors", "ttabench.registry", "ttabench.version"]
    assert "ttabench.suites.tiny" in after
    assert not any(m.startswith("ttabench_") for m in after)
    assert "ttabench.adapters" not in after and "ttabench.models.tiny" not in after


def test_builtins_load(site):
    from ttabench.adapters import SourceAdapter
    from ttabench.suites.tiny import TinySuite

    assert registry.get("adapters", "source") is SourceAdapter
    assert registry.get("suite", "tiny") is TinySuite  # the singular kind is accepted
    status = {p.name: p.status for p in registry.list_plugins("suites")}
    assert status["tiny"] == "ok"


def test_broken_plugins_are_listed_and_fail_clearly(site):
    make_dist(
        site,
        "fake-plugins",
        "1.2",
        {
            "ttabench.estimators": {
                "needs-lib": "fakebroken:Thing",
                "missing-attr": "fakegood:Nope",
                "wrong-type": "fakegood:load_thing",
                "gone": "fake_not_written.module:Thing",
            }
        },
        {"fakebroken": "raise ImportError('needs libfoo')\n", "fakegood": GOOD_MODULE},
    )
    status = {p.name: p.status for p in registry.list_plugins("estimators")}
    assert status["needs-lib"] == "broken: ImportError: needs libfoo"
    assert status["missing-attr"].startswith("broken: AttributeError: ")
    assert status["wrong-type"].startswith("broken: TypeError: ")
    assert status["gone"] == "broken: ModuleNotFoundError: No module named 'fake_not_written'"
    with pytest.raises(TTABenchError) as caught:
        registry.get("estimators", "needs-lib")
    assert str(caught.value) == (
        "estimator 'needs-lib' (fakebroken:Thing from fake-plugins 1.2) failed to load: "
        "ImportError: needs libfoo"
    )


def test_third_party_plugin_info(site):
    make_dist(
        site, "fake-good", "3.4", {"ttabench.estimators": {"good": "fakegood:Good"}},
        {"fakegood": GOOD_MODULE},
    )
    cls = registry.get("estimators", "good")
    assert issubclass(cls, StaticEstimator) and cls.name == "good-one"
    info = registry.info("estimators", "good", load=True)
    assert (info.target, info.distribution, info.version, info.status) == (
        "fakegood:Good", "fake-good", "3.4", "ok"
    )


def test_unknown_name_suggests_and_lists(site):
    # every installed distribution's adapters (the plugin's too, when it is installed)
    adapters = sorted({ep.name for ep in importlib.metadata.entry_points(group="ttabench.adapters")})
    with pytest.raises(TTABenchError) as caught:
        registry.get("adapters", "sourc")
    assert str(caught.value) == (
        f"unknown adapter 'sourc'; did you mean 'source'? available: {', '.join(adapters)}"
    )
    with pytest.raises(TTABenchError) as caught:
        registry.get("adapters", "zzzzzz")
    assert str(caught.value) == (
        "unknown adapter 'zzzzzz' (is the plugin that registers it installed? see `ttabench ls "
        f"adapters`); available: {', '.join(adapters)}"
    )
    with pytest.raises(TTABenchError, match="unknown plugin kind 'widgets'"):
        registry.get("widgets", "x")


def test_duplicates_warn_and_first_distribution_wins(site):
    make_dist(
        site, "zeta-plug", "1.0", {"ttabench.adapters": {"dup": "fakezeta:Adapter"}},
        {"fakezeta": "from ttabench.adapters import SourceAdapter as Adapter\n"},
    )
    make_dist(
        site, "alpha-plug", "2.0", {"ttabench.adapters": {"dup": "fakealpha:Adapter"}},
        {"fakealpha": "from ttabench.adapters import SourceAdapter\n"
                      "class Adapter(SourceAdapter):\n    name = 'dup'\n"},
    )
    with pytest.warns(registry.PluginWarning) as record:
        names = registry.names("adapters")
    message = str(record[0].message)
    assert "alpha-plug" in message and "zeta-plug" in message and "'dup'" in message
    assert "dup" in names
    info = registry.info("adapters", "dup")
    assert (info.distribution, info.target) == ("alpha-plug", "fakealpha:Adapter")
    assert registry.get("adapters", "dup").__module__ == "fakealpha"


def test_autoload_switch_keeps_only_host_builtins(site, monkeypatch):
    make_dist(
        site, "fake-good", "3.4", {"ttabench.estimators": {"good": "fakegood:Good"}},
        {"fakegood": GOOD_MODULE},
    )
    assert "good" in registry.names("estimators")
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")
    for kind, entries in declared().items():
        host = sorted(n for n, t in entries.items() if t.startswith("ttabench."))
        assert registry.names(kind) == host
    # an explicit plugin still works with autoload off
    registry.add_plugin(None, "fakegood:Good")
    assert registry.get("estimators", "good-one").__name__ == "Good"
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "0")
    assert "good" in registry.names("estimators")


def test_add_plugin(site):
    (site / "fakegood.py").write_text(GOOD_MODULE)
    info = registry.add_plugin(None, "fakegood:Good")
    assert (info.kind, info.name, info.status) == ("estimators", "good-one", "ok")
    assert registry.get("estimators", "good-one").__name__ == "Good"
    info = registry.add_plugin_spec("models=fakegood:load_thing")
    assert (info.kind, info.name) == ("models", "load_thing")
    with pytest.raises(TTABenchError, match="cannot tell the plugin kind"):
        registry.add_plugin(None, "fakegood:load_thing")
    with pytest.raises(TTABenchError, match="not a valid adapter"):
        registry.add_plugin("adapters", "fakegood:Good")
    with pytest.raises(TTABenchError, match="ModuleNotFoundError"):
        registry.add_plugin("suites", "no_such_module_here:X")
    # explicit wins over an entry point of the same name
    registry.add_plugin("suites", "ttabench.suites.tiny:TinySuite", name="cifar10c")
    assert registry.get("suites", "cifar10c").__name__ == "TinySuite"
    # a model source returning the wrong type is reported by load_model
    with pytest.raises(TTABenchError, match="returned str, not a LoadedModel"):
        registry.load_model("load_thing", site)


def test_model_spec(site):
    existing = site / "weights.bin"
    existing.write_bytes(b"x")
    assert registry.model_spec("timm:resnet50") == ("timm", "resnet50")
    assert registry.model_spec("mnist-cnn") == ("mnist-cnn", None)
    assert registry.model_spec("runs/model.pt") == ("checkpoint", "runs/model.pt")
    assert registry.model_spec("x.safetensors") == ("checkpoint", "x.safetensors")
    assert registry.model_spec(str(existing)) == ("checkpoint", str(existing))
    assert registry.model_spec("checkpoint:/a/b.pth") == ("checkpoint", "/a/b.pth")
    assert registry.model_spec("tiny-cnn:3") == ("tiny-cnn", "3")
    assert registry.model_spec("nosuch:thing") == ("nosuch", "thing")


def test_make_suite_and_load_model(site, tmp_path):
    suite = registry.make_suite("tiny", n_examples=8)
    assert isinstance(suite, Suite) and suite.record()["n_examples"] == 8
    with pytest.raises(TTABenchError) as caught:
        registry.make_suite("tiny", severity=3)
    assert "suite 'tiny'" in str(caught.value)
    assert str(caught.value).endswith("accepted options: n_examples, seed")
    model = registry.load_model("tiny-cnn", tmp_path)
    assert isinstance(model, LoadedModel) and model.model_id == "tiny-cnn:0"


ACME_MODULE = '''
from typing import Literal

from ttabench.api import Adapter, EstimateResult, StaticEstimator
from ttabench.suites.tiny import TinySuite

class Acme(StaticEstimator):
    name = "acme"
    def __init__(self, alpha: float = 0.5, mode: Literal["fast", "slow"] = "fast") -> None:
        self.alpha, self.mode = alpha, mode
    def estimate(self, target, source_val):
        return EstimateResult(value=self.alpha)

class AcmeAdapter(Adapter):
    name = "acme-adapt"
    source_data_param = "fisher"
    def __init__(self, model, lr: float = 1e-3, steps: int = 1, fisher=None) -> None:
        super().__init__(model)
    def forward(self, x):
        return self.model(x)
    def reset(self):
        pass

def acme_suite(data_dir, *, size: int = 8):
    return TinySuite(data_dir, n_examples=size)
'''


@pytest.mark.parametrize("table, sets, expected", [
    ("[estimator.acme]\nalpa = 1.0\n", [],
     "[estimator.acme]: unknown parameter of estimator acme 'alpa'; did you mean 'alpha'?"),
    ("[estimator.acme]\nalpha = \"high\"\n", [], "[estimator.acme] alpha: expected float, got 'high'"),
    ("", ["estimator.acme.mode=\"medium\""],
     "[estimator.acme] mode: expected 'fast' | 'slow', got 'medium'"),
    ("[adapter.acme-adapt]\nsteps = 1.5\n", [], "[adapter.acme-adapt] steps: expected int, got 1.5"),
    ("[adapter.acme-adapt]\nfisher = 1\n", [],  # the host hands it the source data itself
     "unknown parameter of adapter acme-adapt 'fisher'"),
    ("[suite.acme-suite]\nsise = 4\n", [], "did you mean 'size'?"),
    ("[suite.acme-suite]\ndata_dir = \"x\"\n", [], "unknown parameter of suite acme-suite 'data_dir'"),
    ("[estimator.acmee]\nalpha = 1.0\n", [], "unknown estimator 'acmee'; did you mean 'acme'?"),
])
def test_a_third_party_plugins_section_is_checked_against_its_signature(site, table, sets,
                                                                       expected):
    from ttabench.api import load_config, validate_config

    make_dist(site, "acme-tta", "0.1", {
        "ttabench.estimators": {"acme": "acmeplug:Acme"},
        "ttabench.adapters": {"acme-adapt": "acmeplug:AcmeAdapter"},
        "ttabench.suites": {"acme-suite": "acmeplug:acme_suite"},
    }, {"acmeplug": ACME_MODULE})
    path = site / "plugins.toml"
    path.write_text('[estimator.acme]\nalpha = 0.2\nmode = "slow"\n[adapter.acme-adapt]\n'
                    "lr = 0.01\nsteps = 3\n[suite.acme-suite]\nsize = 4\n")
    validate_config(load_config(path))  # every declared parameter, of its declared type
    path.write_text(table)
    with pytest.raises(TTABenchError) as info:
        validate_config(load_config(path, overrides=sets))
    assert expected in str(info.value) and "\n" not in str(info.value)
