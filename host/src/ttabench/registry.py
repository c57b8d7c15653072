"""Plugin discovery: entry points, lazily loaded, with clear errors for unknown or broken ones.

Six kinds of plugin, one entry-point group each (``ttabench.<kind>``):

========== ========================================================================
kind        what the entry point names
========== ========================================================================
adapters    an ``Adapter`` subclass, built as ``cls(model, **params)``
estimators  an ``Estimator`` subclass, built as ``cls(**params)``
suites      a factory ``(data_dir, **options) -> Suite``
models      a factory ``(arg, *, cache_dir, num_classes) -> LoadedModel``
commands    a ``click.Command`` added to the ``ttabench`` CLI
adapter_wrappers  a callable ``(adapter_cls) -> Adapter subclass`` (see below)
========== ========================================================================

An adapter name ``<wrapper>:<adapter>`` (e.g. ``guard:tent``) resolves through group
``ttabench.adapter_wrappers``: its entry point ``<wrapper>`` names a callable that takes the
adapter class ``<adapter>`` (itself resolved by name, so wrappers nest) and returns the wrapped
``Adapter`` subclass; the result is cached like any plugin.

Rules:

- Listing (``names``, ``list_plugins(load=False)``) reads entry-point metadata only; it never
  imports plugin code. ``get(kind, name)`` imports that one plugin and caches it.
  ``list_plugins(load=True)`` imports each and reports ``ok`` or ``broken: <Type>: <message>``
  without raising.
- Two distributions declaring the same name in one group: a ``PluginWarning`` names both, and
  the entry of the distribution whose name sorts first wins (deterministic).
- ``TTABENCH_DISABLE_PLUGIN_AUTOLOAD=1`` ignores every entry point whose target module is not
  part of the host package, i.e. only targets starting with ``ttabench.`` stay (the host's
  built-ins). Plugins can still be given explicitly with ``add_plugin`` (CLI ``--plugin``).
- ``add_plugin(kind, "module:attr")`` registers one plugin explicitly; it takes precedence over
  an entry point with the same name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttabench.errors import TTABenchError

if TYPE_CHECKING:
    from ttabench.api import LoadedModel, Suite

KINDS: tuple[str, ...] = ("adapters", "estimators", "suites", "models", "commands",
                          "adapter_wrappers")
AUTOLOAD_ENV = "TTABENCH_DISABLE_PLUGIN_AUTOLOAD"
HOST_PREFIX = "ttabench."
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".safetensors")
#: The kind of adapter wrappers, ``wrapper(adapter_cls) -> cls`` (group ``ttabench.adapter_wrappers``).
WRAPPER_GROUP = "adapter_wrappers"


class PluginWarning(UserWarning):
    """A plugin problem that does not stop the run (e.g. a duplicate name)."""


@dataclass
class PluginInfo:
    """What is known about one plugin; recorded in every cell that uses it.

    ``target`` is the ``module:attr`` object path; ``distribution`` and ``version`` name the
    installed distribution that declared it (None for an explicit plugin outside any
    distribution). ``status`` is ``"ok"``, ``"broken: <Type>: <message>"`` or ``"not loaded"``.
    """

    kind: str
    name: str
    target: str
    distribution: str | None
    version: str | None
    status: str = "not loaded"


@dataclass
class _Entry:
    kind: str
    name: str
    target: str
    distribution: str | None
    version: str | None


_discovered: dict[tuple[str, bool], dict[str, _Entry]] = {}
_explicit: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
_loaded: dict[tuple[str, str], object] = {}
_failed: dict[tuple[str, str], str] = {}


def normalize_kind(kind: str) -> str:
    """``"estimator"`` or ``"estimators"`` -> ``"estimators"``; anything else is an error."""
    plural = kind if kind.endswith("s") else kind + "s"
    if plural not in KINDS:
        raise TTABenchError(f"unknown plugin kind '{kind}'; use one of: {', '.join(KINDS)}")
    return plural


def _singular(kind: str) -> str:
    return kind[:-1]


def autoload_disabled() -> bool:
    """True when ``TTABENCH_DISABLE_PLUGIN_AUTOLOAD`` is set to a true value (1, true, yes)."""
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def refresh(keep_explicit: bool = True) -> None:
    """Forget discovered entry points and loaded objects (after installing a plugin, in tests)."""
    _discovered.clear()
    _loaded.clear()
    _failed.clear()
    if not keep_explicit:
        for table in _explicit.values():
            table.clear()


def _discover(kind: str) -> dict[str, _Entry]:
    """Entry points of group ``ttabench.<kind>``, duplicates resolved; metadata only."""
    disabled = autoload_disabled()
    key = (kind, disabled)
    if key in _discovered:
        return _discovered[key]
    candidates: dict[str, list[_Entry]] = {}
    for point in importlib.metadata.entry_points(group=f"ttabench.{kind}"):
        if disabled and not point.value.startswith(HOST_PREFIX):
            continue
        dist = point.dist
        entry = _Entry(
            kind=kind,
            name=point.name,
            target=point.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        candidates.setdefault(point.name, []).append(entry)
    table: dict[str, _Entry] = {}
    for name, entries in candidates.items():
        entries.sort(key=lambda e: ((e.distribution or "").lower(), e.target))
        winner = entries[0]
        for other in entries[1:]:
            if (other.distribution, other.target) == (winner.distribution, winner.target):
                continue
            warnings.warn(
                f"{_singular(kind)} '{name}' is declared by two distributions: "
                f"{winner.distribution} ({winner.target}) and {other.distribution} "
                f"({other.target}); using {winner.distribution}",
                PluginWarning,
                stacklevel=3,
            )
        table[name] = winner
    _discovered[key] = table
    return table


def _entries(kind: str) -> dict[str, _Entry]:
    """Discovered entries overlaid with explicit ones (explicit wins)."""
    return {**_discover(kind), **_explicit[kind]}


def names(kind: str) -> list[str]:
    """Sorted plugin names of one kind, without importing any plugin."""
    return sorted(_entries(normalize_kind(kind)))


def _import_target(target: str) -> object:
    """Import ``module:attr`` (``attr`` may be dotted) and return the object."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise TTABenchError(f"'{target}' is not a 'module:attr' object path")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_type(kind: str, obj: object) -> None:
    """Raise TypeError when a loaded object is not what its kind promises."""
    from ttabench.api import Adapter, Estimator

    if kind == "adapters" and not (isinstance(obj, type) and issubclass(obj, Adapter)):
        raise TypeError(f"{obj!r} is not a subclass of ttabench.api.Adapter")
    if kind == "estimators" and not (isinstance(obj, type) and issubclass(obj, Estimator)):
        raise TypeError(f"{obj!r} is not a subclass of ttabench.api.Estimator")
    if kind in ("suites", "models", WRAPPER_GROUP) and not callable(obj):
        raise TypeError(f"{obj!r} is not callable")
    if kind == "commands":
        import click

        if not isinstance(obj, click.Command):
            raise TypeError(f"{obj!r} is not a click.Command")


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _load(entry: _Entry) -> object:
    """Import an entry (cached); raises TTABenchError naming the plugin if it is broken."""
    key = (entry.kind, entry.name)
    if key in _loaded:
        return _loaded[key]
    if key not in _failed:
        try:
            obj = _import_target(entry.target)
            _check_type(entry.kind, obj)
        except Exception as exc:  # a broken plugin of any sort must not stop the host
            _failed[key] = _one_line(exc)
        else:
            _loaded[key] = obj
            return obj
    origin = entry.target
    if entry.distribution:
        origin += f" from {entry.distribution} {entry.version}"
    raise TTABenchError(
        f"{_singular(entry.kind)} '{entry.name}' ({origin}) failed to load: {_failed[key]}"
    )


def not_installed_hint(what: str) -> str:
    """The advice for a name no installed distribution registers (no close match either)."""
    return f" (is the plugin that registers it installed? see `ttabench ls {what}s`);"


def unknown_error(what: str, name: str, available: list[str]) -> TTABenchError:
    """``unknown <what> '<name>'; did you mean '<closest>'? available: a, b, ...`` (difflib)."""
    message = f"unknown {what} '{name}'"
    close = difflib.get_close_matches(name, available, n=1)
    if close:
        message += f"; did you mean '{close[0]}'?"
    else:
        message += not_installed_hint(what)
    listing = ", ".join(available) if available else "none installed"
    return TTABenchError(f"{message} available: {listing}")


def _entry(kind: str, name: str) -> _Entry:
    kind = normalize_kind(kind)
    table = _entries(kind)
    if name not in table:
        raise unknown_error(_singular(kind), name, sorted(table))
    return table[name]


def _wrapper_entry(name: str) -> tuple[_Entry, str]:
    """The wrapper entry and the inner adapter name of ``<wrapper>:<adapter>``."""
    prefix, _, inner = name.partition(":")
    wrappers = _entries(WRAPPER_GROUP)
    if prefix not in wrappers:
        raise unknown_error("adapter wrapper", prefix, sorted(wrappers))
    return wrappers[prefix], inner


def wrapped_parts(name: str) -> tuple[str, str] | None:
    """``("guard", "tent")`` for the wrapped adapter name ``guard:tent`` (the wrapper must be
    registered, else the one-line unknown-wrapper error); None for a plain name."""
    if ":" not in name:
        return None
    entry, inner = _wrapper_entry(name)
    return entry.name, inner


def _wrapped_adapter(name: str) -> Any:
    """The class ``wrapper(inner adapter class)`` for ``name = "<wrapper>:<adapter>"``."""
    key = ("adapters", name)
    if key in _loaded:
        return _loaded[key]
    entry, inner = _wrapper_entry(name)
    wrapper = _load(entry)
    inner_cls = get("adapters", inner)
    try:
        cls = wrapper(inner_cls)
        _check_type("adapters", cls)
    except Exception as exc:  # a broken wrapper must not stop the host
        raise TTABenchError(f"adapter wrapper '{entry.name}' ({entry.target}) failed on "
                            f"'{inner}': {_one_line(exc)}") from None
    _loaded[key] = cls
    return cls


def get(kind: str, name: str) -> Any:
    """The loaded plugin object; imports only this plugin (and, for ``<wrapper>:<adapter>``,
    the wrapper and the adapter).

    Raises TTABenchError for an unknown name (with a "did you mean" suggestion and the list of
    available names) or a plugin that fails to import.
    """
    if normalize_kind(kind) == "adapters" and ":" in name:
        return _wrapped_adapter(name)
    return _load(_entry(kind, name))


def _info(entry: _Entry, status: str) -> PluginInfo:
    return PluginInfo(
        entry.kind, entry.name, entry.target, entry.distribution, entry.version, status
    )


def _status(entry: _Entry) -> str:
    try:
        _load(entry)
    except TTABenchError:
        return f"broken: {_failed[(entry.kind, entry.name)]}"
    return "ok"


def info(kind: str, name: str, load: bool = False) -> PluginInfo:
    """Name, target, distribution and version of one plugin (status only if ``load``); a
    wrapped adapter's target is ``<wrapper target>(<adapter target>)``."""
    if normalize_kind(kind) == "adapters" and ":" in name:
        wrapper, inner = _wrapper_entry(name)
        inner_info = info("adapters", inner)
        status = "not loaded"
        if load:
            try:
                _wrapped_adapter(name)
                status = "ok"
            except TTABenchError as exc:
                status = f"broken: {exc}"
        return PluginInfo("adapters", name, f"{wrapper.target}({inner_info.target})",
                          wrapper.distribution, wrapper.version, status)
    entry = _entry(kind, name)
    return _info(entry, _status(entry) if load else "not loaded")


def list_plugins(kind: str | None = None, load: bool = True) -> list[PluginInfo]:
    """Every plugin (of one kind, or all), sorted by kind then name; never raises for a broken one.

    With ``load=False`` nothing is imported and every status is ``"not loaded"``.
    """
    kinds = [normalize_kind(kind)] if kind else list(KINDS)
    out = []
    for k in kinds:
        for _, entry in sorted(_entries(k).items()):
            out.append(_info(entry, _status(entry) if load else "not loaded"))
    return out


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    """importlib.metadata's top-level-package map (slow: read once per process)."""
    return importlib.metadata.packages_distributions()


def _distribution_of(module_name: str) -> tuple[str | None, str | None]:
    top = module_name.split(".")[0]
    dists = _packages_distributions().get(top, [])
    if not dists:
        return None, None
    return dists[0], importlib.metadata.version(dists[0])


def _infer_kind(obj: object, target: str) -> str:
    import click

    from ttabench.api import Adapter, Estimator, Suite

    if isinstance(obj, type):
        for base, kind in ((Adapter, "adapters"), (Estimator, "estimators"), (Suite, "suites")):
            if issubclass(obj, base):
                return kind
    if isinstance(obj, click.Command):
        return "commands"
    raise TTABenchError(
        f"cannot tell the plugin kind of '{target}'; give it explicitly as KIND=module:attr "
        f"with KIND one of {', '.join(KINDS)}"
    )


def add_plugin(kind: str | None, target: str, name: str | None = None) -> PluginInfo:
    """Register ``module:attr`` explicitly (it wins over an entry point of the same name).

    ``kind`` may be None when the object says it: an Adapter, Estimator or Suite subclass, or a
    click command; a plain function (a model source, a suite factory) needs it. ``name``
    defaults to the object's ``name`` attribute, else the attribute name. The object is
    imported now, so a bad path fails here with a TTABenchError.
    """
    try:
        obj = _import_target(target)
    except TTABenchError:
        raise
    except Exception as exc:
        raise TTABenchError(f"plugin '{target}' failed to load: {_one_line(exc)}") from exc
    kind = normalize_kind(kind) if kind else _infer_kind(obj, target)
    try:
        _check_type(kind, obj)
    except TypeError as exc:
        raise TTABenchError(f"plugin '{target}' is not a valid {_singular(kind)}: {exc}") from exc
    if name is None:
        own = getattr(obj, "name", None)
        name = own if isinstance(own, str) and own else target.rpartition(":")[2].split(".")[-1]
    distribution, version = _distribution_of(target.partition(":")[0])
    entry = _Entry(kind, name, target, distribution, version)
    _explicit[kind][name] = entry
    _loaded[(kind, name)] = obj
    _failed.pop((kind, name), None)
    return _info(entry, "ok")


def add_plugin_spec(spec: str) -> PluginInfo:
    """Parse a CLI ``--plugin`` value, ``KIND=module:attr`` or ``module:attr``, and register it."""
    kind, sep, target = spec.partition("=")
    if not sep:
        return add_plugin(None, spec)
    return add_plugin(kind.strip(), target.strip())


def model_spec(spec: str) -> tuple[str, str | None]:
    """Split a model spec into (model source name, argument).

    ``"timm:resnet50"`` -> ``("timm", "resnet50")``; ``"mnist-cnn"`` -> ``("mnist-cnn", None)``;
    an existing file, or a path ending in .pt/.pth/.ckpt/.safetensors -> ``("checkpoint", path)``.
    A registered source name always wins over the file rules.
    """
    sources = names("models")
    source, sep, arg = spec.partition(":")
    if sep and source in sources:
        return source, arg or None
    if spec in sources:
        return spec, None
    if Path(spec).is_file() or spec.lower().endswith(CHECKPOINT_SUFFIXES):
        return "checkpoint", spec
    if sep and len(source) > 1:  # an unknown source: get() reports it; "C:" is a drive
        return source, arg or None
    return spec, None


def _bind_or_explain(what: str, factory: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    """Raise TTABenchError naming the accepted options when the call would not bind."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        accepted = [
            p.name
            for p in list(signature.parameters.values())[len(args):]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise TTABenchError(
            f"{what}: {exc}; accepted options: {', '.join(accepted) or 'none'}"
        ) from exc


def load_model(
    spec: str,
    cache_dir: Path | str,
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model from a spec (see ``model_spec``) through its registered model source.

    ``options`` are extra keyword options of the source (e.g. the checkpoint source's
    ``trust_pickle``); one the source does not take is a TTABenchError naming those it does.
    """
    from ttabench.api import LoadedModel

    source, arg = model_spec(spec)
    factory = get("models", source)
    kwargs = {"cache_dir": Path(cache_dir), "num_classes": num_classes, **(options or {})}
    _bind_or_explain(f"model source '{source}'", factory, (arg,), kwargs)
    loaded = factory(arg, **kwargs)
    if not isinstance(loaded, LoadedModel):
        raise TTABenchError(
            f"model source '{source}' returned {type(loaded).__name__}, not a LoadedModel"
        )
    return loaded


def make_suite(name: str, data_dir: Path | str | None = None, **options: Any) -> Suite:
    """Build a suite through its registered factory, ``factory(data_dir, **options)``."""
    from ttabench.api import Suite

    factory = get("suites", name)
    path = Path(data_dir) if data_dir is not None else None
    _bind_or_explain(f"suite '{name}'", factory, (path,), options)
    suite = factory(path, **options)
    if not isinstance(suite, Suite):
        raise TTABenchError(f"suite '{name}' returned {type(suite).__name__}, not a Suite")
    return suite


__all__ = [
    "AUTOLOAD_ENV",
    "KINDS",
    "WRAPPER_GROUP",
    "PluginInfo",
    "PluginWarning",
    "add_plugin",
    "add_plugin_spec",
    "autoload_disabled",
    "get",
    "info",
    "list_plugins",
    "load_model",
    "make_suite",
    "model_spec",
    "names",
    "normalize_kind",
    "refresh",
    "unknown_error",
]
