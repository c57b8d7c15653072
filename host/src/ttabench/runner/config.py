"""The run configuration: ``plugins.toml`` plus command-line overrides.

``plugins.toml`` is the roster a run compares and the parameters it uses::

    [run]
    suite = "mnist-c"            # suite name (ttabench.suites)
    model = "mnist-cnn"          # model spec (ttabench.models), e.g. "timm:resnet50"
    adapter = "rdumb"            # optional; default: the estimator's preferred adapter
    estimators = ["..."]         # estimators under test when --estimator is not given
    baselines = ["ac", "cot"]    # always scored on the same cells
    seeds = [0]
    batch_size = 64
    steps = 0                    # 0: stop at the last checkpoint any estimator needs
    threads = 1                  # CPU threads per process
    jobs = 0                     # cells in parallel processes; 0: one per CPU core
    output = "runs/default"

    [suite.mnist-c]              # keyword options of the suite factory
    [adapter.rdumb]              # keyword parameters of the adapter
    [estimator.NAME]             # keyword parameters of an estimator
    [quick]                      # overrides applied by --quick: same layout as above
    [executor.ray]               # resources per cell for --executor ray

``--set section.name.key=value`` overrides any leaf (value parsed as TOML, else a string).
"""

from __future__ import annotations

import copy
import sys
from contextlib import ExitStack
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttabench.errors import TTABenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG = "plugins.toml"
#: The host's packaged default config (host built-ins only), used when ./plugins.toml is absent.
PACKAGED_CONFIG = "defaults.toml"

DEFAULTS: dict[str, Any] = {
    "run": {
        "suite": "tiny",
        "model": "tiny-cnn",
        "adapter": None,
        "estimators": [],
        "baselines": [],
        "seeds": [0],
        "batch_size": 64,
        "steps": 0,
        "threads": None,
        "jobs": 1,
        "output": "runs/default",
    },
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
        data = _merge(data, content)
        if quick:
            data = _merge(data, quick_table)
    for assignment in overrides or []:
        keys, value = parse_override(assignment)
        layers.append(Layer(f"--set {assignment}", nested(keys, value)))
        apply_override(data, assignment)
    return RunConfig(data=data, source=source, overrides=list(overrides or []), layers=layers,
                     quick_applied=quick)
