"""The schema of a run's configuration: what ``plugins.toml`` and ``--set`` may hold, and where.

A public module (its names are re-exported by ``ttabench.api``: ``validate_config``,
``ConfigRule``, ``plugin_parameters``, ``RunConfig`` and ``load_config``), so a plugin's own
tests can check that a config naming the plugin is accepted or refused as the host will do.

One check serves the file, its ``[quick]`` table and every ``--set`` (``validate``), before any
plugin is built or any data read. Each layer is checked on its own, so an error names where the
value came from (the file and its table, or the ``--set`` assignment):

==================== =========================================================================
section               what it may hold
==================== =========================================================================
``[run]``             the keys of ``RUN_KEYS``, each of its type
``[suite.NAME]``      NAME a registered suite; keys: the keyword options of its factory
``[adapter.NAME]``    NAME a registered adapter; keys: the keyword parameters of its constructor
``[estimator.NAME]``  NAME a registered estimator; keys: its constructor's keyword parameters
``[executor.ray]``    the keys of ``RAY_KEYS``
``[quick]``           the same layout (no nested ``[quick]``), applied by ``--quick``
==================== =========================================================================

Plugin parameters are checked against the plugin's own signature: an unknown name is an error
unless the constructor takes ``**kwargs`` all the way down its base classes; a value is checked
against the parameter's annotation when that is built from plain types (bool, int, float, str,
paths, lists, unions, Literal), and left to the plugin otherwise. Unknown names get a "did
you mean" suggestion (difflib, as ``registry.unknown_error``).

What a plugin author declares is therefore what the schema accepts, for a built-in or a
third-party plugin alike (registered by entry point, ``--plugin`` or ``registry.add_plugin``):

- an estimator ``class Mine(StaticEstimator): def __init__(self, alpha: float = 0.5)`` makes
  ``[estimator.mine] alpha = 0.2`` valid, ``alpha = "high"`` a type error and ``alpa = 1`` an
  unknown parameter with "did you mean 'alpha'?";
- an adapter's first parameter (the model) and its ``Adapter.source_data_param`` are the
  host's, never the config's; a suite factory's first parameter (the data folder) likewise;
- ``**kwargs`` forwarded to a base class accept exactly the base's parameters.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import pathlib
import types
import typing
from typing import Any

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.runner.config import Layer, RunConfig
from ttabench.spec import MAX_SEED, MAX_THREADS, RUN_OPTIONS, Option, Rule, is_int, is_number


def _rules(options: tuple[Option, ...]) -> dict[str, Any]:
    """``{key: Rule}`` of the ``[run]`` table, ``{"stream": {key: Rule}}`` nested."""
    out: dict[str, Any] = {}
    for opt in options:
        node = out
        for key in opt.path[:-1]:
            node = node.setdefault(key, {})
        node[opt.path[-1]] = opt.rule
    return out


#: ``[run]``'s keys and their rules (``ttabench.spec.RUN_OPTIONS``); ``stream`` is a table of
#: its own rules, or a string (its kind).
RUN_KEYS: dict[str, Any] = _rules(RUN_OPTIONS)
RAY_KEYS: dict[str, Rule] = {
    "num_cpus": Rule(lambda v: is_number(v) and v > 0, "a positive number"),
    "num_gpus": Rule(lambda v: is_number(v) and v >= 0, "a non-negative number"),
    "num_cpus_total": Rule(lambda v: is_int(v) and v >= 1, "a positive integer"),
    "log_to_driver": Rule(lambda v: isinstance(v, bool), "true or false"),
}
#: Plugin sections: section name -> (registry kind, leading positional parameters the host
#: passes itself: the model of an adapter, the data folder of a suite factory).
PLUGIN_SECTIONS: dict[str, tuple[str, int]] = {"suite": ("suites", 1), "adapter": ("adapters", 1),
                                               "estimator": ("estimators", 0)}
SECTIONS: tuple[str, ...] = ("run", *PLUGIN_SECTIONS, "executor")
EXECUTORS: dict[str, dict[str, Rule]] = {"ray": RAY_KEYS}


def _unknown(what: str, name: str, choices: list[str]) -> str:
    """``unknown <what> 'name'; did you mean 'x'? known: a, b`` (one line); a plugin name with
    no close match asks whether the plugin that registers it is installed."""
    close = difflib.get_close_matches(name, choices, n=1)
    plugin = what in {kind[:-1] for kind in registry.KINDS}
    hint = f"; did you mean '{close[0]}'?" if close else (
        registry.not_installed_hint(what) if plugin else ";")
    return f"unknown {what} '{name}'{hint} known: {', '.join(choices) or 'none'}"


def _fail(origin: str, where: str, problem: str) -> TTABenchError:
    return TTABenchError(f"{origin}: {where}: {problem}")


def validate(config: RunConfig) -> None:
    """Check every layer of ``config`` (the file, its ``[quick]`` table, each ``--set``);
    raise a one-line TTABenchError naming the origin and key of the first problem."""
    for layer in config.layers:
        check_layer(layer)


def check_layer(layer: Layer) -> None:
    """Check one layer's sections, keys and values against the schema."""
    for section, content in layer.data.items():
        if section not in SECTIONS:
            raise TTABenchError(f"{layer.origin}: {_unknown('section', section, list(SECTIONS))}")
        if not isinstance(content, dict):
            raise _fail(layer.origin, section, f"must be a table ([{section}]), got {content!r}")
        if section == "run":
            _check_keys(layer.origin, "[run]", content, RUN_KEYS)
        elif section == "executor":
            for name, table in content.items():
                if name not in EXECUTORS:
                    raise _fail(layer.origin, "[executor]", _unknown("executor", name,
                                                                     list(EXECUTORS)))
                if not isinstance(table, dict):
                    raise _fail(layer.origin, f"[executor.{name}]", "must be a table")
                _check_keys(layer.origin, f"[executor.{name}]", table, EXECUTORS[name])
        else:
            for name, params in content.items():
                _check_plugin(layer.origin, section, name, params)


def _check_keys(origin: str, where: str, table: dict[str, Any], rules: dict[str, Any]) -> None:
    for key, value in table.items():
        if key not in rules:
            raise _fail(origin, where, _unknown("key", key, list(rules)))
        rule = rules[key]
        if isinstance(rule, dict):  # a table of its own: [run.stream], or its kind as a string
            if isinstance(value, dict):
                _check_keys(origin, f"[{where[1:-1]}.{key}]", value, rule)
                continue
            key, rule = f"{key} (its kind)", rule["kind"]
        try:
            fits_rule = rule.check(value)
        except TTABenchError as err:
            raise _fail(origin, f"{where} {key}", str(err)) from None
        if not fits_rule:
            raise _fail(origin, f"{where} {key}", f"expected {rule.text}, got {value!r}")


def _check_plugin(origin: str, section: str, name: str, params: Any) -> None:
    kind, skip = PLUGIN_SECTIONS[section]
    where = f"[{section}.{name}]"
    if kind == "adapters" and ":" in name:  # a wrapped adapter, e.g. guard:tent
        try:
            registry.get(kind, name)
        except TTABenchError as err:
            raise _fail(origin, where, str(err)) from None
    else:
        available = registry.names(kind)
        if name not in available:
            raise _fail(origin, where, _unknown(kind[:-1], name, available))
    if not isinstance(params, dict):
        raise _fail(origin, where, f"must be a table of parameters, got {params!r}")
    accepted = _accepted(kind, name, skip)
    if accepted is None:  # takes any keyword
        return
    for key, value in params.items():
        if key not in accepted:
            raise _fail(origin, where, _unknown(f"parameter of {section} {name}", key,
                                                sorted(accepted)))
        annotation = accepted[key]
        if fits(value, annotation) is False:
            raise _fail(origin, f"{where} {key}",
                        f"expected {describe(annotation)}, got {value!r}")


def _accepted(kind: str, name: str, skip: int) -> dict[str, Any] | None:
    """The parameters ``[<section>.<name>]`` may set: the plugin's (``plugin_parameters``); for
    a wrapped adapter ``<wrapper>:<inner>`` the wrapper's own keywords and its inner adapter's
    (its ``**kwargs`` go to the inner adapter, which inherits ``[adapter.<inner>]``)."""
    parts = registry.wrapped_parts(name) if kind == "adapters" else None
    if parts is None:
        return plugin_parameters(registry.get(kind, name), skip)
    inner = _accepted(kind, parts[1], skip)
    if inner is None:
        return None
    cls = registry.get(kind, name)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: names are still checked
        hints = {}
    own = list(inspect.signature(cls).parameters.values())[skip:]
    return {**inner, **{p.name: hints.get(p.name, Any) for p in own
                        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}}


def plugin_parameters(target: Any, skip: int) -> dict[str, Any] | None:
    """Keyword parameters (name -> annotation, ``Any`` when unknown) a plugin's constructor or
    factory accepts after its ``skip`` leading positional parameters.

    A constructor that takes ``**kwargs`` forwards them to its base class, so the bases'
    ``__init__`` parameters are collected too; None when no signature bounds them (the chain
    ends in ``**kwargs`` of a class outside the plugin, or no signature can be read).
    """
    chain: list[Any] = [target]
    if isinstance(target, type):
        chain += [vars(base)["__init__"] for base in target.__mro__[1:]
                  if "__init__" in vars(base) and base is not object]
    accepted: dict[str, Any] = {}
    for depth, function in enumerate(chain):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None
        try:
            hints = typing.get_type_hints(function.__init__ if isinstance(function, type)
                                          else function)
        except Exception:  # unresolvable annotations: names are still checked
            hints = {}
        parameters = list(signature.parameters.values())[(1 if depth else 0) + skip:]
        open_ended = False
        for parameter in parameters:
            if parameter.kind is parameter.VAR_KEYWORD:
                open_ended = True
            elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                accepted.setdefault(parameter.name, hints.get(parameter.name, Any))
        if not open_ended:
            return _without_host_supplied(target, accepted)
    return None


def _without_host_supplied(target: Any, accepted: dict[str, Any]) -> dict[str, Any]:
    """Drop the parameter through which the host hands an adapter its source data
    (``Adapter.source_data_param``); other plugins get every parameter from the config."""
    from ttabench.api import Adapter  # the api re-exports this module: imported when needed

    if not (isinstance(target, type) and issubclass(target, Adapter)):
        return accepted
    return {k: v for k, v in accepted.items() if k != target.source_data_param}


_PATHS = (str, pathlib.Path, pathlib.PurePath, os.PathLike)
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable,
              collections.abc.Collection, collections.abc.MutableSequence)


def fits(value: Any, annotation: Any) -> bool | None:
    """Whether a TOML value fits a parameter annotation: True, False, or None (cannot tell)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [fits(value, arg) for arg in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return is_int(value)
    if annotation is float:
        return is_number(value)
    if annotation in _PATHS:
        return isinstance(value, str)
    if origin in _SEQUENCES or annotation in (list, tuple):
        if not isinstance(value, list):
            return False
        if not args:
            return True
        verdicts = [fits(item, args[0]) for item in value]
        return False if False in verdicts else (None if None in verdicts else True)
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return isinstance(value, dict)
    return None


def describe(annotation: Any) -> str:
    """An annotation as a reader knows it: ``float | str | None``, ``list of int``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in _SEQUENCES:
        return f"list of {describe(args[0])}" if args else "list"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


__all__ = ["MAX_SEED", "MAX_THREADS", "RAY_KEYS", "RUN_KEYS", "Rule", "SECTIONS", "check_layer",
           "describe", "fits", "plugin_parameters", "validate"]
