"""The configuration reference, read from ``ttabench.config_schema`` and the plugins.

What the page lists is what the schema checks: the sections of a config file
(``config_schema.SECTIONS``, plus the ``[quick]`` table the loader splits off), every ``[run]``
key with the values it accepts (``RUN_KEYS``), every executor table's keys (``EXECUTORS``), and,
for every registered suite, adapter and estimator, the parameters its section accepts
(``config_schema.plugin_parameters``: the constructor's or factory's keyword parameters, with
their annotations and defaults). A ``[run]`` key is explained by the ``ttabench run`` option
that replaces it (that option's help text); the few keys with no such option, and the executor
keys, are explained in ``MEANINGS`` here, and a key with neither is an error of the build, so a
new key cannot go undocumented.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import click

from docsite.markdown import code, escape, table

#: What a key means where no ``ttabench run`` option replaces it (``section.key``).
MEANINGS: dict[str, str] = {
    "run.baselines": "Estimators always scored beside the candidates, on the same cells (a "
                     "name also given as a candidate is scored once); `--no-baselines` leaves "
                     "them out of a run.",
    "executor.ray.num_cpus": "CPUs Ray reserves for each cell's task (default 1).",
    "executor.ray.num_gpus": "GPUs Ray reserves for each cell's task (default 0); a fraction "
                             "lets several cells share one device.",
    "executor.ray.num_cpus_total": "CPUs of the local Ray instance a run starts when no "
                                   "`--ray-address` is given.",
    "executor.ray.log_to_driver": "Whether the workers' output is printed by the driver "
                                  "(default false).",
}


class ReferenceError(Exception):
    """A key or plugin cannot be documented."""


@dataclass(frozen=True)
class Parameter:
    """One parameter a plugin section accepts."""

    name: str
    annotation: str
    default: str


def _run_command() -> click.Command:
    from ttabench.runner.command import run

    return run


def run_option(key: str) -> click.Option | None:
    """The ``ttabench run`` option that replaces ``[run] key`` (``seeds`` -> ``--seed``)."""
    flag = "--" + key.replace("_", "-")
    candidates = (flag, flag[:-1]) if flag.endswith("s") else (flag,)
    for param in _run_command().params:
        if isinstance(param, click.Option) and any(c in param.opts for c in candidates):
            return param
    return None


def _meaning(section: str, key: str) -> str:
    if section == "run":
        option = run_option(key)
        if option is not None:
            help_text = " ".join((option.help or "").split())
            flag = max(option.opts, key=len)
            return f"{code(flag)}: {escape(help_text)}" if help_text else code(flag)
    meaning = MEANINGS.get(f"{section}.{key}")
    if meaning is None:
        raise ReferenceError(f"[{section}] {key} has no `ttabench run` option and no entry in "
                             "docsite/config_reference.py MEANINGS: say there what it means")
    return meaning


def _defaults(target: Any, skip: int) -> dict[str, Any]:
    """Default values of a plugin's keyword parameters along its constructor chain."""
    chain: list[Any] = [target]
    if isinstance(target, type):
        chain += [vars(base)["__init__"] for base in target.__mro__[1:]
                  if "__init__" in vars(base) and base is not object]
    out: dict[str, Any] = {}
    for depth, function in enumerate(chain):
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            break
        for parameter in parameters[(1 if depth else 0) + skip:]:
            if parameter.default is not inspect.Parameter.empty:
                out.setdefault(parameter.name, parameter.default)
    return out


def plugin_parameters(kind: str, name: str, skip: int) -> list[Parameter] | None:
    """The parameters ``[section.name]`` accepts, as the schema checks them; None when the
    plugin takes any keyword."""
    from ttabench import registry
    from ttabench.config_schema import describe
    from ttabench.config_schema import plugin_parameters as accepted_by

    target = registry.get(kind, name)
    accepted = accepted_by(target, skip)
    if accepted is None:
        return None
    defaults = _defaults(target, skip)
    return [Parameter(key, describe(annotation) if annotation is not Any else "any",
                      toml_value(defaults[key]) if key in defaults else "required")
            for key, annotation in accepted.items()]


def toml_value(value: Any) -> str:
    """A default as it would be written in TOML; None (no TOML spelling) as ``unset``."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def summary(obj: Any) -> str:
    """The first sentence of an object's docstring (its first paragraph, lines joined)."""
    from docsite.snippets import first_sentence

    return first_sentence(inspect.getdoc(obj) or "")


def _option_meaning(option: Any) -> str:
    """A ``[run]`` key's meaning: its own flag and help (``ttabench.spec.RUN_OPTIONS``), else
    ``MEANINGS``."""
    if option.flags:
        flag = max(option.flags[0].split("/"), key=len)
        return f"{code(flag)}: {escape(option.help)} Default: {code(toml_value(option.default))}."
    return _meaning("run", ".".join(option.path))


def _run_section() -> list[str]:
    from ttabench.spec import RUN_OPTIONS

    rows = [(code(".".join(o.path)), escape(o.rule.text), _option_meaning(o))
            for o in RUN_OPTIONS]
    return ["## `[run]` {#run}", "",
            "The run's roster and protocol, every key defined once in `ttabench.spec` "
            "(`RUN_OPTIONS`). A `ttabench run` option given on the command line replaces the key "
            "it names (the run prints which file values it replaced). `stream.KEY` is a key of "
            "the `[run.stream]` table; `stream = \"continual\"` is short for its `kind`.", "",
            *table(("key", "accepted values", "meaning"), rows), ""]


def _executor_sections() -> list[str]:
    from ttabench.config_schema import EXECUTORS

    lines = []
    for name, rules in EXECUTORS.items():
        rows = [(code(key), escape(rule.text), _meaning(f"executor.{name}", key))
                for key, rule in rules.items()]
        lines += [f"## `[executor.{name}]` {{#executor-{name}}}", "",
                  f"Read by `ttabench run --executor {name}`.", "",
                  *table(("key", "accepted values", "meaning"), rows), ""]
    return lines


def _plugin_sections() -> list[str]:
    from ttabench import registry
    from ttabench.config_schema import PLUGIN_SECTIONS
    lines = []
    for section, (kind, skip) in PLUGIN_SECTIONS.items():
        lines += [f"## `[{section}.NAME]` {{#{section}}}", "",
                  f"One table per registered {kind[:-1]} (`ttabench ls {kind}`); its keys are "
                  "the keyword parameters of the plugin's "
                  + ("factory" if kind == "suites" else "constructor")
                  + (", after the leading ones the host passes itself" if skip else "")
                  + ", checked against their annotations.", ""]
        for name in registry.names(kind):
            info = registry.info(kind, name)
            lines += [f"### `[{section}.{_toml_key(name)}]` {{#{section}-{_slug(name)}}}", "",
                      f"{escape(summary(registry.get(kind, name)))} ({code(info.target)}, "
                      "distribution "
                      f"`{info.distribution or 'none'}`)", ""]
            params = plugin_parameters(kind, name, skip)
            if params is None:
                lines += ["Takes any keyword parameter (its constructor forwards `**kwargs` "
                          "beyond what the schema can read).", ""]
            elif not params:
                lines += ["Takes no parameter.", ""]
            else:
                lines += [*table(("key", "type", "default"),
                                 [(code(p.name), escape(p.annotation), code(p.default))
                                  for p in params]), ""]
    return lines


def _toml_key(name: str) -> str:
    """A plugin name as a TOML table key (quoted when it is not a bare key)."""
    bare = all(char.isalnum() or char in "-_" for char in name)
    return name if bare else f'"{name}"'


def _slug(name: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in name.lower())


def section_names() -> list[str]:
    """The top-level tables a config file may hold (as this page documents them)."""
    from ttabench.config_schema import SECTIONS

    return [*SECTIONS, "quick"]


def page() -> str:
    """The Markdown of the configuration reference page."""
    from ttabench.config_schema import EXECUTORS, PLUGIN_SECTIONS, SECTIONS

    described = {"run": "the run's roster and protocol ([below](#run))",
                 "executor": "one table per executor: "
                             + ", ".join(f"[`[executor.{n}]`](#executor-{n})" for n in EXECUTORS),
                 **{s: f"one table per registered {kind[:-1]}, its parameters "
                       f"([below](#{s}))" for s, (kind, _) in PLUGIN_SECTIONS.items()}}
    missing = [s for s in SECTIONS if s not in described]
    if missing:
        raise ReferenceError(f"sections {missing} of ttabench.config_schema.SECTIONS are not "
                             "described in docsite/config_reference.py")
    rows = [(code(f"[{s}]"), described[s]) for s in SECTIONS]
    rows.append((code("[quick]"), "overrides applied by `--quick`, laid out as the file "
                 "itself (no nested `[quick]`); checked like the rest even when not applied"))
    lines = [
        "# Configuration reference",
        "",
        "Generated from `ttabench.config_schema` and the registered plugins when this site "
        "was built (`docsite/config_reference.py`). The same schema checks a config file, its "
        "`[quick]` table and every `--set section.name.key=value` before any plugin is built "
        "or any data read; an unknown section, key or plugin name, or a value of the wrong "
        "type, is one `error:` line naming where it came from, with a \"did you mean\". "
        "A plugin parameter's default is the one its signature declares (`unset`: None, the "
        "plugin decides); a type of `any` is not checked by the schema.",
        "",
        *table(("section", "holds"), rows),
        "",
    ]
    return "\n".join(lines + _run_section() + _executor_sections() + _plugin_sections()) + "\n"
