"""The run configuration: ``plugins.toml`` plus command-line overrides, merged into a ``RunSpec``.

``plugins.toml`` is the roster a run compares and the parameters it uses::

    [run]                        # the keys of ttabench.spec.RUN_OPTIONS (defaults there)
    suite = "mnist-c"            # suite name (ttabench.suites)
    model = "mnist-cnn"          # model spec (ttabench.models), e.g. "timm:resnet50"; a list
                                 # or a pool name ("mnist-pool") runs several models
    adapter = "rdumb"            # optional; default: the estimator's preferred adapter
    estimators = ["..."]         # estimators under test when --estimator is not given
    baselines = ["ac", "cot"]    # always scored on the same cells
    seeds = [0]
    stream = "continual"         # or a table: [run.stream] kind = "continual", window = 20 ...

    [suite.mnist-c]              # keyword options of the suite factory
    [adapter.rdumb]              # keyword parameters of the adapter
    [adapter."guard:rdumb"]      # a wrapped adapter: [adapter.rdumb], then these on top
    [estimator.NAME]             # keyword parameters of an estimator
    [quick]                      # overrides applied by --quick: same layout as above
    [executor.ray]               # resources per cell for --executor ray

``--set section.name.key=value`` overrides any leaf (value parsed as TOML, else a string), the
one grammar of every command; a ``--set`` for an adapter or estimator the run does not use is
refused (``check_set_names``).
"""

from __future__ import annotations

import copy
import sys
from contextlib import ExitStack
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.models.pools import expand_models
from ttabench.spec import (
    STREAM_OPTIONS,
    RunSpec,
    ScoringSpec,
    StreamSpec,
    config_defaults,
    option,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG = "plugins.toml"
#: The host's packaged default config (host built-ins only), used when ./plugins.toml is absent.
PACKAGED_CONFIG = "defaults.toml"

DEFAULTS: dict[str, Any] = {
    "run": config_defaults(),
    "suite": {},
    "adapter": {},
    "estimator": {},
    "executor": {},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``extra`` wins on leaves."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _stream_table(data: dict[str, Any]) -> dict[str, Any]:
    """``[run] stream = "continual"`` as the table ``[run.stream]`` with that kind (the other
    stream keys at their defaults), so ``--set run.stream.window=10`` finds a table."""
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("stream"), str):
        run["stream"] = {**DEFAULTS["run"]["stream"], "kind": run["stream"]}
    return data


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax if it parses (``3``, ``0.5``, ``[0, 100]``, ``true``),
    else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise TTABenchError(f"--set value {text[:40]!r}... is nested too deeply") from None


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> ``(["a", "b", "c"], parsed value)``."""
    if "=" not in assignment:
        raise TTABenchError(f"--set expects section.key=value, got {assignment!r}")
    path, text = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if len(keys) < 2:
        raise TTABenchError(f"--set expects section.key=value, got {assignment!r}")
    return keys, parse_value(text.strip())


def nested(keys: list[str], value: Any) -> dict[str, Any]:
    """``(["a", "b"], 1)`` -> ``{"a": {"b": 1}}``."""
    for key in reversed(keys):
        value = {key: value}
    return value


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override in place."""
    keys, value = parse_override(assignment)
    node = config
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise TTABenchError(f"--set {'.'.join(keys)}: {key!r} is not a section")
    node[keys[-1]] = value


@dataclass
class Layer:
    """One source of configuration values, in the order they apply: the file, its ``[quick]``
    table, one ``--set``. ``origin`` names it in messages."""

    origin: str
    data: dict[str, Any]


@dataclass
class RunConfig:
    """The resolved configuration of a run and where it came from.

    ``layers`` are the file, the ``[quick]`` table (always listed, so it is validated too;
    ``applied`` False without ``--quick``) and each ``--set``, as they were given.
    """

    data: dict[str, Any]
    source: str = "built-in defaults"
    overrides: list[str] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    quick_applied: bool = False

    @property
    def run(self) -> dict[str, Any]:
        return self.data["run"]

    def section(self, kind: str, name: str) -> dict[str, Any]:
        """Parameters of one plugin: ``[suite.NAME]``, ``[adapter.NAME]``, ``[estimator.NAME]``."""
        value = self.data.get(kind, {}).get(name, {})
        if not isinstance(value, dict):
            raise TTABenchError(f"[{kind}.{name}] in {self.source} must be a table")
        return dict(value)

    def file_value(self, keys: list[str]) -> tuple[str, Any] | None:
        """``(origin, value)`` of the leaf at ``keys`` as the file (and its applied ``[quick]``
        table) set it, or None when the file does not set it."""
        found = None
        for layer in self.layers:
            if layer.origin.startswith("--set") or (
                layer.origin.endswith(QUICK_ORIGIN) and not self.quick_applied
            ):
                continue
            node: Any = layer.data
            for key in keys:
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None:
                found = (layer.origin, node)
        return found


QUICK_ORIGIN = " [quick]"


def leaf_name(keys: list[str]) -> str:
    """``["adapter", "rdumb", "lr"]`` -> ``"[adapter.rdumb] lr"``."""
    return f"[{'.'.join(keys[:-1])}] {keys[-1]}"


def override_notes(config: RunConfig, options: list[tuple[str, list[str]]]) -> list[str]:
    """What the command line replaces of the file: ``options`` are (how the option was given,
    the config leaf it stands for); every ``--set`` counts too. One note per replaced value."""
    given = options + [(f"--set {a}", parse_override(a)[0]) for a in config.overrides]
    notes = []
    for label, keys in given:
        found = config.file_value(keys)
        if found is not None:
            notes.append(f"{label} replaces {leaf_name(keys)} = {found[1]!r} of {found[0]}")
    return notes


def load_config(
    path: str | Path | None = None, quick: bool = False, overrides: list[str] | None = None
) -> RunConfig:
    """Built-in defaults, then the TOML file (``path``, else ./plugins.toml when present, else
    the host's packaged ``defaults.toml``), then its ``[quick]`` table when ``quick``, then
    ``--set`` overrides."""
    with ExitStack() as stack:
        if path:
            file = Path(path)
            if not file.exists():
                raise TTABenchError(f"config file not found: {file}")
        elif Path(DEFAULT_CONFIG).exists():
            file = Path(DEFAULT_CONFIG)
        else:
            packaged = resources.files("ttabench") / PACKAGED_CONFIG
            file = stack.enter_context(resources.as_file(packaged))
        return _load_file(file, quick, overrides)


def _load_file(file: Path, quick: bool, overrides: list[str] | None) -> RunConfig:
    data = copy.deepcopy(DEFAULTS)
    source = "built-in defaults"
    layers: list[Layer] = []
    if file.exists():
        try:
            content = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as err:
            raise TTABenchError(f"{file} is not valid TOML: {' '.join(str(err).split())}") from None
        except RecursionError:
            raise TTABenchError(f"{file} is not valid TOML: nested too deeply") from None
        except (OSError, UnicodeDecodeError) as err:
            raise TTABenchError(f"cannot read config file {file}: {err}") from None
        source = str(file)
        quick_table = content.pop("quick", {})
        if not isinstance(quick_table, dict):
            raise TTABenchError(f"{file}: quick must be a table ([quick], laid out as the file), "
                                f"got {quick_table!r}")
        layers += [Layer(source, content), Layer(source + QUICK_ORIGIN, quick_table)]
        data = _stream_table(_merge(data, content))
        if quick:
            data = _stream_table(_merge(data, quick_table))
    for assignment in overrides or []:
        keys, value = parse_override(assignment)
        layers.append(Layer(f"--set {assignment}", nested(keys, value)))
        apply_override(data, assignment)
        data = _stream_table(data)
    return RunConfig(data=data, source=source, overrides=list(overrides or []), layers=layers,
                     quick_applied=quick)


# --------------------------------------------------------------------------- the run spec


def names(values: Any) -> list[str]:
    """Names from repeatable and comma-separated values (a name, a list, or a tuple of
    either), in order, without duplicates."""
    items = [] if values is None else [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for value in items:
        for name in str(value).split(","):
            if name.strip() and name.strip() not in out:
                out.append(name.strip())
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def choose_adapters(given: list[str], config: RunConfig, estimators: list[str]) -> list[str]:
    """``--adapter``, else ``[run].adapter``, else the first trajectory estimator's
    ``default_adapter``, else ``source`` (no adaptation)."""
    if given:
        return given
    if config.run.get("adapter"):
        return names(config.run["adapter"])
    for name in estimators:
        default = registry.get("estimators", name).default_adapter
        if default:
            return [default]
    return ["source"]


def adapter_parameters(config: RunConfig, name: str) -> dict[str, Any]:
    """An adapter's parameters: ``[adapter.NAME]``; for a wrapped adapter ``<wrapper>:<inner>``
    its inner adapter's parameters (resolved the same way) with ``[adapter."<wrapper>:<inner>"]``
    on top, so ``guard:tent`` adapts at ``[adapter.tent]``'s learning rate unless its own
    section says otherwise."""
    parts = registry.wrapped_parts(name)
    inherited = adapter_parameters(config, parts[1]) if parts else {}
    return {**inherited, **config.section("adapter", name)}


def _uses(name: str, adapters: list[str]) -> bool:
    """Whether ``[adapter.NAME]`` reaches one of ``adapters`` (itself, or wrapped)."""
    for adapter in adapters:
        while adapter is not None:
            if adapter == name:
                return True
            parts = registry.wrapped_parts(adapter)
            adapter = parts[1] if parts else None
    return False


def check_set_names(config: RunConfig, adapters: list[str], estimators: list[str]) -> None:
    """Refuse a ``--set adapter.NAME...`` or ``--set estimator.NAME...`` whose NAME the run does
    not use (a typo would otherwise be dropped), naming the closest one it uses."""
    import difflib

    for assignment in config.overrides:
        keys, _ = parse_override(assignment)
        if keys[0] not in ("adapter", "estimator") or len(keys) < 3:
            continue
        used = adapters if keys[0] == "adapter" else estimators
        name = keys[1]
        if _uses(name, adapters) if keys[0] == "adapter" else name in estimators:
            continue
        close = difflib.get_close_matches(name, used, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise TTABenchError(f"--set {assignment}: {keys[0]} '{name}' is not among this run's "
                            f"{keys[0]}s ({', '.join(used) or 'none'}){hint}")


def estimator_parameters(config: RunConfig, name: str, window: int) -> dict[str, Any]:
    """``[estimator.NAME]``; an estimator whose constructor takes ``window`` (steps per window
    of its per-window estimates, ``ttabench.api.TrajectoryEstimator.window_results``) gets the
    stream's window unless its section sets it, and a section that sets another is refused."""
    from ttabench.config_schema import plugin_parameters

    params = config.section("estimator", name)
    if "window" not in (plugin_parameters(registry.get("estimators", name), 0) or {}):
        return params
    if params.setdefault("window", window) != window:
        raise TTABenchError(f"[estimator.{name}] window = {params['window']} contradicts the "
                            f"stream's window ({window}, --window); give one value")
    return params


def build_spec(config: RunConfig, *, baselines: bool = True, trust_pickle: bool = False,
               trust_torchscript: bool = False, n_examples: int | None = None,
               accuracy_only: bool = False, **given: Any) -> RunSpec:
    """Merge the command line's ``given`` values (by option name, ``ttabench.spec.RUN_OPTIONS``;
    None or empty: not given) over the configuration into a ``RunSpec``.

    A run without any estimator is refused (it would score nothing and exit 0), unless
    ``accuracy_only`` (a preset's protocol that measures accuracy only)."""
    def value(name: str) -> Any:
        opt = option(name)
        found = given.get(name)
        if found is None or found == () or found == []:
            node: Any = config.run
            for key in opt.path:
                node = node.get(key) if isinstance(node, dict) else None
            return node
        return list(found) if isinstance(found, tuple) else found

    run = config.run
    estimators = names(value("estimator"))
    roster = [b for b in names(run.get("baselines")) if b not in estimators]
    if baselines:
        estimators += roster
    if not estimators and not accuracy_only:
        raise TTABenchError("nothing to run: name an --estimator, or [run] estimators or "
                            "baselines in the config (see `ttabench ls estimators`)")
    adapters = choose_adapters(names(given.get("adapter")), config, estimators)
    check_set_names(config, adapters, estimators)
    suite_name = str(value("suite"))
    suite_options = config.section("suite", suite_name)
    if n_examples is not None:
        suite_options["n_examples"] = n_examples
    stream = dict(run.get("stream") or {})
    for opt in STREAM_OPTIONS:
        if given.get(opt.name) not in (None, (), []):
            stream[opt.path[-1]] = value(opt.name)
    threads = value("threads")
    stream_spec = StreamSpec.from_table(stream)
    models = expand_models(names(value("model")))
    return RunSpec(
        suite=suite_name,
        model=models[0],
        models=models,
        logit_cache=bool(value("logit_cache")),
        adapters=adapters,
        estimators=estimators,
        suite_options=suite_options,
        adapter_params={name: adapter_parameters(config, name) for name in adapters},
        estimator_params={name: estimator_parameters(config, name, stream_spec.window)
                          for name in estimators},
        seeds=[int(s) for s in _as_list(value("seed"))],
        batch_size=int(value("batch_size")),
        steps=int(value("steps")),
        splits=names(value("splits")),
        severities=[int(s) for s in _as_list(value("severities"))],
        data_dir=value("data_dir"),
        device=value("device"),
        num_workers=value("workers"),
        threads=None if threads is None else int(threads),
        jobs=int(value("jobs")),
        cache_mib=int(value("cache_mib")),
        precision=str(value("precision")),
        channels_last=bool(value("channels_last")),
        deterministic=bool(value("deterministic")),
        model_options={**({"trust_pickle": True} if trust_pickle else {}),
                       **({"trust_torchscript": True} if trust_torchscript else {})},
        baselines=roster if baselines else [],
        stream=stream_spec,
        scoring=ScoringSpec.from_run({key: value(key) for key in
                                      ("map_kinds", "n_boot", "boot_unit", "boot_seed")}),
    )
