"""Presets: shipped, named protocols, each reproducing one published table.

A preset is a TOML file: a ``[preset]`` table that says what it reproduces, and a config layer
laid out as ``plugins.toml`` (``[run]``, ``[suite.NAME]``, ``[adapter.NAME]``,
``[estimator.NAME]``) holding its protocol::

    [preset]
    name = "tent-cifar10c"
    title = "..."                 # one line
    source = "..."                # paper, table, repository file
    model = "..."                 # the model spec it expects, and
    weights = "..."               # which weights
    fetch = ["ttabench fetch cifar10c", ...]
    free = ["run.seeds", ...]     # leaves of the layer a run may change (defaults, not facts)
    gaps = ["..."]                # where this implementation differs from the source
    [preset.facts]                # protocol facts given by run options, not config leaves
    precision = "fp32"
    [preset.expected]             # the source's numbers ("metric" says what they are)

Presets are found without importing any plugin: entry-point group ``ttabench.presets`` names
packages (``ttabench.preset_files`` for the host's own), and every ``*.toml`` in such a package's
folder is one preset.

``ttabench run --preset NAME`` (or ``[run] preset``) applies the layer above the config file
and below ``--set`` and the command-line options: a file value the preset replaces is named on
stderr. The protocol facts (``facts``) are the layer's leaves (less ``free`` and
``DEFAULT_FREE``), ``[preset.facts]``, and, for the suite, the adapters and the estimator
tables the preset names, the absence of any other parameter (a parameter the preset leaves at
its default is a fact too). Each is compared with the final run spec; a run whose spec differs
is refused, naming every deviation, unless ``--allow-deviation``. Every cell's protocol then
records ``preset`` (name, source and the deviations), so ``ttabench diff`` shows it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ttabench.errors import TTABenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GROUP = "ttabench.presets"
#: Layer leaves no preset fixes: where results go, how many processes, which estimators are
#: scored beside the protocol, the stream seeds, and the data location.
DEFAULT_FREE: tuple[str, ...] = ("run.estimators", "run.baselines", "run.seeds", "run.output",
                                 "run.jobs", "run.threads", "run.data_dir", "run.device",
                                 "run.map_kinds", "run.boot_unit", "run.splits")
#: ``[preset.facts]`` keys: run options that are not config leaves (the spec's attributes).
OPTION_FACTS: tuple[str, ...] = ("precision", "channels_last", "stream")
PLUGIN_SECTIONS: tuple[str, ...] = ("suite", "adapter", "estimator")


@dataclass(frozen=True)
class Preset:
    """One preset file, parsed (see the module docstring)."""

    name: str
    title: str
    source: str
    model: str
    weights: str
    layer: dict[str, Any]
    fetch: list[str] = field(default_factory=list)
    free: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


@dataclass(frozen=True)
class Fact:
    """A protocol fact: the config leaf (or option) it is, and the preset's value. ``closed``
    facts are whole parameter tables: every parameter the run sets must be one the preset
    sets."""

    keys: tuple[str, ...]
    value: Any
    closed: bool = False

    @property
    def name(self) -> str:
        return ".".join(self.keys)


@dataclass(frozen=True)
class Deviation:
    """A fact this run changes: the preset's value and the run's (None: unset)."""

    fact: str
    preset: Any
    run: Any

    def __str__(self) -> str:
        return f"{self.fact} (preset {self.preset!r}, this run {self.run!r})"


# --------------------------------------------------------------------------- discovery


def preset_folders() -> list[tuple[str, Path]]:
    """(distribution, folder) of every package named in group ``ttabench.presets``; found by
    module spec, so no plugin code is imported."""
    out = []
    for point in importlib.metadata.entry_points(group=GROUP):
        top, *rest = point.value.split(":")[0].split(".")
        spec = importlib.util.find_spec(top)
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location, *rest)
            if folder.is_dir():
                dist = point.dist.metadata["Name"] if point.dist is not None else point.name
                out.append((dist, folder))
    return sorted(set(out))


def parse(path: Path) -> Preset:
    """A preset file; a one-line error naming the file when it is malformed."""
    try:
        content = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise TTABenchError(f"preset file {path} is not valid TOML: {err}") from None
    head = content.pop("preset", None)
    if not isinstance(head, dict):
        raise TTABenchError(f"preset file {path} has no [preset] table")
    missing = [k for k in ("name", "title", "source", "model", "weights") if not head.get(k)]
    if missing:
        raise TTABenchError(f"preset file {path}: [preset] lacks {', '.join(missing)}")
    options = dict(head.get("facts", {}))
    unknown = [k for k in options if k not in OPTION_FACTS]
    if unknown:
        raise TTABenchError(f"preset file {path}: [preset.facts] {unknown[0]!r} is not one of "
                            f"{', '.join(OPTION_FACTS)}")
    return Preset(name=str(head["name"]), title=str(head["title"]), source=str(head["source"]),
                  model=str(head["model"]), weights=str(head["weights"]), layer=content,
                  fetch=list(head.get("fetch", [])), free=list(head.get("free", [])),
                  gaps=list(head.get("gaps", [])), options=options,
                  expected=dict(head.get("expected", {})), origin=str(path))


def available() -> dict[str, Preset]:
    """Every installed preset by name; two of one name are an error naming both files."""
    found: dict[str, Preset] = {}
    for _, folder in preset_folders():
        for path in sorted(folder.glob("*.toml")):
            preset = parse(path)
            if preset.name in found:
                raise TTABenchError(f"two presets are named {preset.name!r}: "
                                    f"{found[preset.name].origin} and {path}")
            found[preset.name] = preset
    return found


def load(name: str) -> Preset:
    """The preset ``name``; an unknown name lists the installed ones."""
    presets = available()
    if name not in presets:
        from ttabench.registry import unknown_error

        raise unknown_error("preset", name, sorted(presets))
    return presets[name]


# --------------------------------------------------------------------------- facts


def _leaves(table: dict[str, Any], prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += _leaves(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def facts(preset: Preset) -> list[Fact]:
    """The preset's protocol facts (see the module docstring), in layer order."""
    free = set(DEFAULT_FREE) | set(preset.free)
    out = [Fact(keys, value) for keys, value in _leaves(preset.layer, ())
           if ".".join(keys) not in free]
    for section, name in closed_tables(preset):
        given = preset.layer.get(section, {}).get(name, {})
        out.append(Fact((section, name), sorted(given), closed=True))
    out += [Fact(("options", key), value) for key, value in preset.options.items()]
    return out


def spec_value(spec: Any, keys: tuple[str, ...]) -> Any:
    """What the run spec holds for a fact's leaf (None when it holds nothing there)."""
    section, rest = keys[0], keys[1:]
    if section == "options":
        return spec.stream.name if rest[0] == "stream" else getattr(spec, rest[0], None)
    if section == "run":
        key = rest[0]
        if key == "adapter":
            return list(spec.adapters)
        if key == "estimators":
            return [e for e in spec.estimators if e not in spec.baselines]
        if key == "stream":  # ``stream = "continual"``, or a leaf of ``[run.stream]``
            field = rest[1] if len(rest) > 1 else "kind"
            return spec.stream.name if field == "kind" else getattr(spec.stream, field, None)
        return getattr(spec, key, None)
    name = rest[0]
    params = {"suite": {spec.suite: spec.suite_options}, "adapter": spec.adapter_params,
              "estimator": spec.estimator_params}[section].get(name)
    if len(rest) == 1:
        return params
    return None if params is None else params.get(rest[1])


def _same(expected: Any, actual: Any) -> bool:
    """Equal, a scalar counting as its one-element list (``adapter = "tent"`` is ``[tent]``)."""
    if isinstance(expected, (list, tuple)) or isinstance(actual, (list, tuple)):
        return _as_list(expected) == _as_list(actual)
    return bool(expected == actual)


def deviations(preset: Preset, spec: Any) -> list[Deviation]:
    """Every fact of ``preset`` the run ``spec`` changes, in fact order. A parameter of a
    suite, adapter or estimator the run does not use is not compared: the run's choice of
    plugin is the deviation (``run.suite``, ``run.adapter``)."""
    free = set(DEFAULT_FREE) | set(preset.free)
    out = []
    for fact in facts(preset):
        in_use = fact.keys[0] not in PLUGIN_SECTIONS or spec_value(spec, fact.keys[:2]) is not None
        if not in_use:  # a plugin the run does not use: its own fact (suite, adapter) differs
            continue
        actual = spec_value(spec, fact.keys)
        if not fact.closed:
            if not _same(fact.value, actual):
                out.append(Deviation(fact.name, fact.value, actual))
            continue
        for key in sorted(set(actual or {}) - set(fact.value)):
            if f"{fact.name}.{key}" not in free:
                out.append(Deviation(f"{fact.name}.{key}", "(the plugin's default)",
                                     (actual or {})[key]))
    return out


def record(preset: Preset, found: list[Deviation]) -> dict[str, Any]:
    """What every cell's protocol records of the preset."""
    return {"name": preset.name, "source": preset.source,
            "deviations": [{"fact": d.fact, "preset": d.preset, "run": d.run} for d in found]}


# --------------------------------------------------------------------------- the run hook


def closed_tables(preset: Preset) -> list[tuple[str, str]]:
    """The plugin tables whose whole content is protocol: the suite's, each adapter's, and
    every table the preset writes."""
    run = preset.layer.get("run", {})
    tables = {("suite", str(run["suite"]))} if "suite" in run else set()
    tables |= {("adapter", str(a)) for a in _as_list(run.get("adapter", []))}
    tables |= {(section, name) for section in PLUGIN_SECTIONS
               for name in preset.layer.get(section, {})}
    return sorted(tables)


def apply(config: Any, preset: Preset) -> list[str]:
    """Put the preset's layer into ``config`` (a ``RunConfig``) above the file and below its
    ``--set`` overrides: its ``[run]`` leaves replace the file's, its tables (``closed_tables``)
    replace the file's tables whole. Returns a note per file value the preset replaces."""
    from ttabench.config_schema import check_layer
    from ttabench.runner.config import Layer, apply_override, leaf_name

    layer = Layer(f"preset {preset.name} ({preset.origin})", preset.layer)
    check_layer(layer)
    notes = []
    for key, value in preset.layer.get("run", {}).items():
        found = config.file_value(["run", key])
        if found is not None and not _same(value, found[1]):
            notes.append(f"preset {preset.name} replaces [run] {key} = {found[1]!r} of "
                         f"{found[0]}")
        config.data.setdefault("run", {})[key] = value
    for section, name in closed_tables(preset):
        table = dict(preset.layer.get(section, {}).get(name, {}))
        found = config.file_value([section, name])
        for key, old in sorted((found[1] if found and isinstance(found[1], dict) else {}).items()):
            if key not in table or not _same(table[key], old):
                notes.append(f"preset {preset.name} replaces {leaf_name([section, name, key])} "
                             f"= {old!r} of {found[0] if found else ''} with "
                             + (repr(table[key]) if key in table else "the plugin's default"))
        config.data.setdefault(section, {})[name] = table
    for assignment in config.overrides:
        apply_override(config.data, assignment)
    position = next((i for i, x in enumerate(config.layers) if x.origin.startswith("--set")),
                    len(config.layers))
    config.layers.insert(position, layer)
    return notes


def chosen(option: str | None, config: Any) -> Preset | None:
    """The preset of ``--preset``, else of ``[run] preset``, else None."""
    name = option or config.run.get("preset")
    return load(str(name)) if name else None


def check(preset: Preset, spec: Any, allow_deviation: bool) -> dict[str, Any]:
    """The preset record for the cells; refuses (one line) a run that deviates from it unless
    ``allow_deviation``."""
    found = deviations(preset, spec)
    if found and not allow_deviation:
        raise TTABenchError(
            f"preset {preset.name}: this run changes {len(found)} protocol fact(s): "
            + "; ".join(map(str, found))
            + " -- pass --allow-deviation to run it anyway (each cell records the deviations)")
    return record(preset, found)


def describe(preset: Preset, spec: Any | None = None) -> list[str]:
    """The preset's source, expectations and protocol facts (with the run's value of each
    when ``spec`` is given), as ``--dry-run`` and ``ttabench presets NAME`` print them."""
    lines = [f"preset {preset.name}: {preset.title}", f"  source: {preset.source}",
             f"  model: {preset.model} ({preset.weights})"]
    lines += [f"  fetch: {command}" for command in preset.fetch]
    if preset.expected:
        shown = ", ".join(f"{k} {v}" for k, v in preset.expected.items() if k != "metric")
        lines.append(f"  expected ({preset.expected.get('metric', 'as published')}): {shown}")
    else:
        lines.append("  expected: the source gives no number transcribed here")
    lines += [f"  gap: {gap}" for gap in preset.gaps]
    found = {d.fact: d for d in deviations(preset, spec)} if spec is not None else {}
    lines.append("  protocol facts:")
    for fact in facts(preset):
        value = ((f"only {', '.join(fact.value)} set" if fact.value else
                  "no parameter set (every one at its default)") if fact.closed
                 else repr(fact.value))
        deviated = [d for name, d in found.items() if name == fact.name
                    or (fact.closed and name.startswith(fact.name + "."))]
        mark = "; DEVIATES: " + "; ".join(str(d) for d in deviated) if deviated else ""
        lines.append(f"    {fact.name} = {value}{mark}")
    return lines


@click.command("presets")
@click.argument("name", required=False)
def presets(name: str | None) -> None:
    """List the shipped protocol presets, or show one: its source, model, fetch commands,
    expected numbers, known gaps and protocol facts."""
    if name:
        click.echo("\n".join(describe(load(name))))
        return
    for preset in available().values():
        click.echo(f"{preset.name:24} {preset.title}")
        click.echo(f"{'':24} source: {preset.source}")
