"""The run specification, defined once: every option of a run, its default, its check and its
command-line flag; the stream a run feeds its adapters; the scoring options.

``RUN_OPTIONS`` (the ``[run]`` table) and ``STREAM_OPTIONS`` (its ``[run.stream]`` table) are the
one place each default is written. From them derive

- the built-in configuration (``config_defaults``, under ``plugins.toml``; ``ttabench.runner.config``),
- the configuration schema (``ttabench.config_schema`` checks ``[run]`` against the rules),
- the command-line options of ``ttabench run`` and ``ttabench estimate`` (``ttabench.runner.command``
  makes one click option per flagged option, its help closed by the default),
- ``RunSpec``, the typed run a ``Benchmark`` executes: its protocol record, the cells' keys and
  ``--dry-run`` are made from it (``ttabench.runner.benchmark``).

Torch-free and plugin-free: scoring and the configuration read it without loading a model.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import click

from ttabench.errors import TTABenchError


@dataclass(frozen=True)
class Rule:
    """A value's expected form: ``check(value)`` is True when it fits (or raises a
    TTABenchError that says why); ``text`` says what fits."""

    check: Callable[[Any], bool]
    text: str


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def _ints(minimum: int, maximum: int | None = None) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        items = value if isinstance(value, list) else [value]
        return bool(items) and all(is_int(v) and minimum <= v and (maximum is None or v <= maximum)
                                   for v in items)

    return check


def _int_range(minimum: int, maximum: int | None = None) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and v >= minimum and (maximum is None or v <= maximum)


#: Seeds go to torch's generators (64 bits); the thread count to torch's intra-op pool.
MAX_SEED = 2**63 - 1
MAX_THREADS = 1024
#: ``precision`` values: full float32, or bfloat16 autocast (CUDA only).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: What a leaderboard's bootstrap resamples: datasets (then splits within them), or splits.
BOOT_UNITS: tuple[str, ...] = ("dataset", "split")
#: Kinds of score-to-accuracy maps (``ttabench.scoring.map_kinds`` fits them).
MAP_KINDS: tuple[str, ...] = ("lin", "quad", "iso", "logit-lin", "logit-quad")

STRING = Rule(lambda v: isinstance(v, str), "a string")
NAMES = Rule(_names, "a name or a list of names")


def check_map_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """``kinds`` (a list of names of ``MAP_KINDS``, or one string of them separated by commas,
    as ``--map-kinds lin,quad`` gives it) as a tuple; TTABenchError naming the closest known
    kind for an unknown one, and for an empty list or a repeat."""
    names = ([k.strip() for k in kinds.split(",") if k.strip()] if isinstance(kinds, str)
             else list(kinds))
    if not names:
        raise TTABenchError(f"no map kind given; choose from {', '.join(MAP_KINDS)}")
    for name in names:
        if name not in MAP_KINDS:
            close = difflib.get_close_matches(str(name), MAP_KINDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ";"
            raise TTABenchError(f"unknown map kind {name!r}{hint} known: {', '.join(MAP_KINDS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TTABenchError(f"map kind {repeated[0]!r} is given twice")
    return tuple(names)


# --------------------------------------------------------------------------- streams

#: The stream kinds (``--stream``), named as mariodoebler/test-time-adaptation names its settings
#: (``classification/conf.py`` ``SETTING``; see ``ttabench.runner.streams`` for each one).
STREAM_KINDS: tuple[str, ...] = ("reset-each-split", "continual", "gradual", "mixed")
#: Label shift inside the stream, combinable with every kind: ``continual+correlated``.
CORRELATED = "correlated"
#: That repository's spellings, accepted and recorded as ours: its ``reset_each_shift`` is our
#: ``reset-each-split``, ``mixed_domains`` is ``mixed``, and ``correlated`` alone is the continual
#: setting sorted by class (its README: "same as the continual setting but ... sorted by class").
STREAM_ALIASES: dict[str, str] = {"reset-each-shift": "reset-each-split",
                                  "mixed-domains": "mixed",
                                  CORRELATED: f"continual+{CORRELATED}"}


def parse_stream_kind(text: str) -> tuple[str, bool]:
    """``"continual+correlated"`` -> ``("continual", True)``; ``_`` and ``-`` are the same, so
    ``mixed_domains_correlated`` reads as ``mixed+correlated``. A one-line error with the closest
    known kind for anything else."""
    if not isinstance(text, str):
        raise TTABenchError(f"a stream kind is a string like 'continual', got {text!r}")
    name = text.strip().lower().replace("_", "-")
    name = STREAM_ALIASES.get(name, name)
    correlated = False
    for suffix in (f"+{CORRELATED}", f"-{CORRELATED}"):
        if name.endswith(suffix):
            name, correlated = name[: -len(suffix)], True
    name = STREAM_ALIASES.get(name, name)
    if name not in STREAM_KINDS:
        known = [*STREAM_KINDS, CORRELATED]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        raise TTABenchError(f"unknown stream kind {text!r}{hint} known: {', '.join(known)}, "
                            f"each combinable as KIND+{CORRELATED}")
    return name, correlated


#: How a continual or gradual stream orders its splits: ``randperm`` seeded by each order seed,
#: or the suite's own order (the authors' loops over their corruption lists).
SPLIT_ORDERS: tuple[str, ...] = ("seeded", "suite")


def _stream_kind(value: Any) -> bool:
    parse_stream_kind(value)
    return True


def _finite_non_negative(value: Any) -> bool:
    return is_number(value) and math.isfinite(value) and value >= 0


# --------------------------------------------------------------------------- the option tables


@dataclass(frozen=True)
class Option:
    """One option of a run: its leaf under ``[run]`` (``("stream", "window")`` is
    ``[run.stream] window``), default, check and help, and its command-line flags (none: a
    configuration key only). ``param`` names the command's parameter (default: the last key);
    ``multiple``: a repeatable flag whose values (each also a comma list when ``names``) are
    collected into a list; ``kind``: the flag's value type (``int``, ``float``, ``str``,
    ``bool`` for an on/off flag, or a tuple of choices); ``bounds``: an integer's range (the
    rule checks it; the flag's type is that range)."""

    path: tuple[str, ...]
    default: Any
    rule: Rule
    help: str
    flags: tuple[str, ...] = ()
    param: str | None = None
    multiple: bool = False
    names: bool = False
    kind: Any = str
    bounds: tuple[int, int | None] | None = None

    @property
    def name(self) -> str:
        return self.param or self.path[-1]

    @property
    def leaf(self) -> list[str]:
        """The configuration leaf, ``["run", ...path]``."""
        return ["run", *self.path]


def _opt(path: str, default: Any, rule: Rule, help: str, *flags: str, **more: Any) -> Option:
    return Option(tuple(path.split(".")), default, rule, help, tuple(flags), **more)


def _int_opt(path: str, default: Any, bounds: tuple[int, int | None], help: str, *flags: str,
             text: str = "", **more: Any) -> Option:
    """An integer option (a list of them when ``multiple``) within ``bounds``."""
    low, high = bounds
    what = (f"an integer in {low}..{high}" if high is not None else
            "a positive integer" if low == 1 else "a non-negative integer")
    check = _ints(low, high) if more.get("multiple") else _int_range(low, high)
    rule = Rule(check, (what + (" or a list of them" if more.get("multiple") else "")
                        + (f" ({text})" if text else "")))
    return _opt(path, default, rule, help, *flags, kind=int, bounds=bounds, **more)


STREAM_OPTIONS: tuple[Option, ...] = (
    _opt("stream.kind", "reset-each-split", Rule(_stream_kind, "a stream kind"),
         "Stream kind: reset-each-split, continual, gradual, mixed, each combinable as "
         "KIND+correlated (correlated alone: continual+correlated).", "--stream", param="stream"),
    _int_opt("stream.window", 20, (1, None),
             "Steps per window of the per-window scoring (every estimator against each "
             "window's online accuracy).", "--window"),
    _int_opt("stream.steps_per_split", 0, (0, None),
             "Steps each split feeds a continual, gradual or mixed stream (0: one pass over "
             "its images).", "--steps-per-split"),
    _int_opt("stream.order_seeds", [0], (0, MAX_SEED),
             "Seed(s) of the split order of a continual or gradual stream; repeatable (one "
             "cell per order).", "--order-seed", param="order_seed", multiple=True),
    _opt("stream.delta", 0.1, Rule(_finite_non_negative, "a non-negative number"),
         "Dirichlet concentration of a correlated stream's class order (small: long runs of one "
         "class; 0: sorted by class).", "--delta", kind=float),
    _opt("stream.split_order", "seeded", Rule(lambda v: v in SPLIT_ORDERS,
                                              f"one of {', '.join(SPLIT_ORDERS)}"),
         "Split order of a continual or gradual stream: seeded (a permutation per --order-seed) "
         "or suite (the suite's own order, e.g. CIFAR-10-C's gaussian_noise ... "
         "jpeg_compression, as the authors' loops; one cell per role).", "--split-order",
         kind=SPLIT_ORDERS),
    _opt("stream.shuffle", True, Rule(lambda v: isinstance(v, bool), "true or false"),
         "Shuffle each split's images (seeded epochs); --no-shuffle: the files' order, as the "
         "authors' loaders read them (robustbench load_cifar10c(shuffle=False)).",
         "--shuffle/--no-shuffle", kind=bool),
    _int_opt("stream.stats_window", 0, (0, None),
             "Batch statistics over a sliding window of this many recent images, for batches "
             "smaller than it (0: each batch's own; a batch of 1 on a model with batch norm "
             "needs one, e.g. 64).", "--stats-window"),
)

RUN_OPTIONS: tuple[Option, ...] = (
    _opt("suite", "tiny", STRING, "Suite name (see `ttabench ls suites`).", "--suite", "-s"),
    _opt("model", "tiny-cnn", NAMES, "Model spec(s), e.g. mnist-cnn, timm:resnet50, path.pt; "
         "repeatable or comma list, a pool name (mnist-pool) stands for its members.",
         "--model", "-m", multiple=True, names=True),
    _opt("adapter", None, NAMES, "Adapter(s); repeatable or comma list (default: the first "
         "estimator's preferred one, else source).", "--adapter", "-a", multiple=True,
         names=True),
    _opt("estimators", [], NAMES, "Estimator(s) to score; repeatable or comma list.",
         "--estimator", "-e", param="estimator", multiple=True, names=True),
    _opt("baselines", [], NAMES, "Estimators every run adds as baselines (--no-baselines: none)."),
    _int_opt("seeds", [0], (0, MAX_SEED), "Stream seed(s); repeatable.", "--seed",
             param="seed", multiple=True),
    _int_opt("batch_size", 64, (1, None), "Stream batch size.", "--batch-size"),
    _int_opt("steps", 0, (0, None), "Adaptation steps of a reset-each-split stream: exactly "
             "this many (at least the last checkpoint an estimator needs); 0: stop at that "
             "last checkpoint.", "--steps", text="0: the last checkpoint an estimator needs"),
    _opt("splits", [], NAMES, "Split or dataset glob(s), e.g. 'fog-*,clean' (default: all).",
         "--splits", multiple=True, names=True),
    _int_opt("severities", [], (1, None), "Keep only these severities (of the suite's).",
             "--severities", multiple=True),
    _opt("data_dir", None, STRING, "Dataset root (else $TTABENCH_DATA_DIR).", "--data-dir"),
    _opt("device", None, STRING, "cpu, cuda, cuda:1 ... (default: CUDA when present).",
         "--device"),
    _int_opt("threads", None, (0, MAX_THREADS), "CPU threads per process (0 or unset: CPU "
             "cores // parallel jobs).", "--threads", text="0: torch's default"),
    _int_opt("jobs", 1, (0, None), "Cells run in parallel processes (0: one per CPU core).",
             "--jobs", "-j", text="0: one per core"),
    _int_opt("workers", None, (0, None), "Data-loading worker processes per cell (unset: "
             "min(4, cores // jobs) for a suite that streams from disk, else 0).", "--workers"),
    _int_opt("cache_mib", 2048, (0, None), "MiB of decoded images a cell keeps for its "
             "adaptation stream (0: the probe only); recorded in the cell's protocol.",
             "--cache-mib"),
    _opt("precision", "fp32", Rule(lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
         "bf16: bfloat16 autocast (CUDA only; recorded, changes the numbers).", "--precision",
         kind=PRECISIONS),
    _opt("channels_last", False, Rule(lambda v: isinstance(v, bool), "true or false"),
         "channels_last memory format (CUDA only).", "--channels-last/--no-channels-last",
         kind=bool),
    _opt("deterministic", False, Rule(lambda v: isinstance(v, bool), "true or false"),
         "CUDA: deterministic kernels (cuDNN deterministic, no benchmark): the same seed on the "
         "same GPU gives the same numbers; recorded. The CPU is already.",
         "--deterministic/--no-deterministic", kind=bool),
    _opt("output", "runs/default", STRING, "Run folder (cells/, leaderboard files).",
         "--output", "-o"),
    _opt("preset", None, STRING, "A named published protocol (see `ttabench presets`).",
         "--preset"),
    _opt("map_kinds", ["lin", "quad"], Rule(lambda v: bool(check_map_kinds(v)),
                                            f"map kinds from {', '.join(MAP_KINDS)}"),
         f"Map kinds fitted for every score estimator, comma-separated, from "
         f"{', '.join(MAP_KINDS)}.", "--map-kinds"),
    _opt("logit_cache", True, Rule(lambda v: isinstance(v, bool), "true or false"),
         "Keep every view's outputs in <output>/logits (content-addressed safetensors), so "
         "`ttabench leaderboard --rescore` adds static and pool estimators without a forward "
         "pass.", "--logit-cache/--no-logit-cache", kind=bool),
    _int_opt("n_boot", 1000, (1, None), "Bootstrap resamples for the intervals.", "--n-boot"),
    _opt("boot_unit", "dataset", Rule(lambda v: v in BOOT_UNITS, "'dataset' or 'split' (the "
                                      "bootstrap's resampling unit)"),
         "What the bootstrap resamples: datasets, then splits within them, or splits.",
         "--boot-unit", kind=BOOT_UNITS),
    _int_opt("boot_seed", 0, (0, MAX_SEED), "Seed of the bootstrap's resampling (not a "
             "stream seed).", "--boot-seed"),
    *STREAM_OPTIONS,
)


def option(name: str) -> Option:
    """The option whose command parameter is ``name``."""
    return next(o for o in RUN_OPTIONS if o.name == name)


def config_defaults() -> dict[str, Any]:
    """The ``[run]`` table every configuration starts from."""
    run: dict[str, Any] = {}
    for opt in RUN_OPTIONS:
        node = run
        for key in opt.path[:-1]:
            node = node.setdefault(key, {})
        node[opt.path[-1]] = list(opt.default) if isinstance(opt.default, list) else opt.default
    return run


def _default(path: str) -> Any:
    found = next(o for o in RUN_OPTIONS if o.path == tuple(path.split(".")))
    return list(found.default) if isinstance(found.default, list) else found.default


@dataclass(frozen=True)
class StreamSpec:
    """What stream a run feeds its adapters (see ``ttabench.runner.streams``); defaults from
    ``STREAM_OPTIONS``. ``kind`` is one of ``STREAM_KINDS``; ``correlated`` adds label shift;
    ``split_order`` is one of ``SPLIT_ORDERS``; ``shuffle`` False reads each split in the
    files' order. A combination that contradicts itself is a TTABenchError."""

    kind: str = _default("stream.kind")
    correlated: bool = False
    window: int = _default("stream.window")
    steps_per_split: int = _default("stream.steps_per_split")
    order_seeds: tuple[int, ...] = tuple(_default("stream.order_seeds"))
    delta: float = _default("stream.delta")
    stats_window: int = _default("stream.stats_window")
    split_order: str = _default("stream.split_order")
    shuffle: bool = _default("stream.shuffle")

    def __post_init__(self) -> None:
        if self.split_order not in SPLIT_ORDERS:
            raise TTABenchError(f"split_order must be one of {', '.join(SPLIT_ORDERS)}, got "
                                f"{self.split_order!r}")
        if self.split_order == "suite" and self.kind not in ("continual", "gradual"):
            raise TTABenchError(f"split order 'suite' orders the splits of a continual or "
                                f"gradual stream; this stream is {self.name}")
        if not self.shuffle and self.correlated:
            raise TTABenchError(f"a {self.name} stream orders each split by class; "
                                "--no-shuffle (the files' order) contradicts it")

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> StreamSpec:
        """From a ``[run.stream]`` table (or a kind given as a string)."""
        table = {"kind": table} if isinstance(table, str) else dict(table)
        kind, correlated = parse_stream_kind(table.pop("kind", cls.kind))
        seeds = table.pop("order_seeds", list(cls.order_seeds))
        return cls(kind=kind, correlated=correlated,
                   order_seeds=tuple(seeds if isinstance(seeds, list) else [seeds]),
                   **{k: v for k, v in table.items() if k in _STREAM_FIELDS})

    @property
    def name(self) -> str:
        """The kind as recorded: ``continual+correlated``."""
        return self.kind + (f"+{CORRELATED}" if self.correlated else "")

    @property
    def resets(self) -> bool:
        """Whether each split is a stream of its own, the adapter reset before it."""
        return self.kind == "reset-each-split"


_STREAM_FIELDS = {f.name for f in fields(StreamSpec)} - {"kind", "correlated", "order_seeds"}


@dataclass(frozen=True)
class ScoringSpec:
    """How finished cells are scored (recorded in ``run.json``; ``ttabench leaderboard`` reuses
    it)."""

    map_kinds: tuple[str, ...] = tuple(_default("map_kinds"))
    n_boot: int = _default("n_boot")
    boot_unit: str = _default("boot_unit")
    boot_seed: int = _default("boot_seed")

    def __post_init__(self) -> None:
        object.__setattr__(self, "map_kinds", check_map_kinds(self.map_kinds))
        for name in ("n_boot", "boot_unit", "boot_seed"):
            rule = next(o for o in RUN_OPTIONS if o.path == (name,)).rule
            if not rule.check(getattr(self, name)):
                raise TTABenchError(f"{name} must be {rule.text}, got {getattr(self, name)!r}")

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> ScoringSpec:
        """From a ``[run]`` table (or the ``scoring`` record of a ``run.json``)."""
        return cls(map_kinds=check_map_kinds(run.get("map_kinds", cls.map_kinds)),
                   n_boot=int(run.get("n_boot", cls.n_boot)),
                   boot_unit=str(run.get("boot_unit", cls.boot_unit)),
                   boot_seed=int(run.get("boot_seed", cls.boot_seed)))


@dataclass
class RunSpec:
    """Everything that defines a benchmark run; plain data, so it can travel to workers
    (``to_dict`` / ``from_dict``). Defaults are ``RUN_OPTIONS``'."""

    suite: str
    #: The model this Benchmark loads (one of ``models``).
    model: str
    adapters: list[str]
    estimators: list[str]
    suite_options: dict[str, Any] = field(default_factory=dict)
    #: Resolved parameters per adapter: a wrapped adapter's (``guard:tent``) are its inner
    #: adapter's section overridden by its own (``ttabench.runner.config.adapter_parameters``).
    adapter_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    estimator_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: _default("seeds"))
    batch_size: int = _default("batch_size")
    steps: int = _default("steps")
    splits: list[str] = field(default_factory=lambda: _default("splits"))
    severities: list[int] = field(default_factory=lambda: _default("severities"))
    data_dir: str | None = _default("data_dir")
    device: str | None = _default("device")
    #: DataLoader workers per cell; None: ``default_workers``.
    num_workers: int | None = _default("workers")
    plugins: list[str] = field(default_factory=list)
    #: CPU threads per process; None: ``default_threads(cores, jobs)``.
    threads: int | None = _default("threads")
    #: Cells running in parallel processes on this machine (sizes threads and workers).
    jobs: int = _default("jobs")
    cache_mib: int = _default("cache_mib")
    precision: str = _default("precision")
    channels_last: bool = _default("channels_last")
    #: CUDA: deterministic kernels (``ttabench.runner.device_facts``); the CPU is already.
    deterministic: bool = _default("deterministic")
    #: The device facts the cells are planned under (``device_facts``), found by the process
    #: that plans them; worker processes check theirs against them.
    device_facts: dict[str, Any] | None = None
    #: Extra keyword options of the model source (``trust_pickle`` from ``--trust-pickle``).
    model_options: dict[str, Any] = field(default_factory=dict)
    #: The estimators that are the configuration's baselines (role ``baseline``).
    baselines: list[str] = field(default_factory=list)
    stream: StreamSpec = field(default_factory=StreamSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    #: The protocol preset of the run and its deviations (``ttabench.preset.record``), or None.
    preset: dict[str, Any] | None = None
    #: Every model of the run, pools expanded (``ttabench.models.pools``); empty: ``[model]``.
    #: One ``Benchmark`` runs one of them (``for_model``).
    models: list[str] = field(default_factory=list)
    #: Whether cells keep their views' outputs in the run folder's logit cache.
    logit_cache: bool = _default("logit_cache")
    #: The run folder (set by ``ttabench run``; None: no folder, so no logit cache).
    output: str | None = None

    @property
    def model_list(self) -> list[str]:
        """The run's models: ``models``, or ``[model]``."""
        return list(self.models) or [self.model]

    def for_model(self, model: str) -> RunSpec:
        """This run's spec for one of its models."""
        return replace(self, model=model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        body = dict(data)
        stream = dict(body.pop("stream", {}))
        scoring = dict(body.pop("scoring", {}))
        return cls(**body, stream=StreamSpec(**{**stream, "order_seeds": tuple(
                       stream.get("order_seeds", StreamSpec.order_seeds))}),
                   scoring=ScoringSpec(**{**scoring, "map_kinds": tuple(
                       scoring.get("map_kinds", ScoringSpec.map_kinds))}))


# --------------------------------------------------------------------------- command-line options


def shown(value: Any) -> str:
    """A value as a flag takes it: ``3,4``, ``true``, ``unset``."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return "unset" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _click_option(opt: Option) -> Callable[[Any], Any]:
    """The click option of ``opt``: no default of its own (not given: the configuration's)."""
    kind: Any = opt.kind
    if opt.bounds is not None:
        kind = click.IntRange(*opt.bounds)
    elif isinstance(kind, tuple):
        kind = click.Choice(kind)
    extra: dict[str, Any] = {} if kind is bool else {"type": kind}
    help_text = f"{opt.help} [default: {shown(opt.default)}; config: {'.'.join(opt.leaf)}]"
    return click.option(*opt.flags, opt.name, multiple=opt.multiple, default=None,
                        help=help_text, **extra)


def spec_options(*names: str) -> Callable[[Any], Any]:
    """Decorate a command with the click options of the named run options (all flagged ones
    when none is named)."""
    chosen = [option(n) for n in names] if names else [o for o in RUN_OPTIONS if o.flags]

    def decorate(fn: Any) -> Any:
        for opt in reversed(chosen):
            fn = _click_option(opt)(fn)
        return fn

    return decorate


def trust_options(fn: Any) -> Any:
    """Decorate a command that loads a model file with ``--trust-pickle`` and
    ``--trust-torchscript``: the two opt-ins to loading a checkpoint that runs code."""
    fn = click.option(
        "--trust-torchscript", is_flag=True,
        help="Also load a checkpoint file that is a TorchScript program. Its program runs when "
             "the file is loaded and on every forward pass, and can read and write files "
             "(arbitrary code, with your rights): only for files you made or trust. Without "
             "it, such files are refused.")(fn)
    return click.option(
        "--trust-pickle", is_flag=True,
        help="Also load a checkpoint file that is a whole pickled nn.Module. Unpickling runs "
             "whatever code the file names (arbitrary code, with your rights): only for files "
             "you made or trust. Without it, files are read as tensors only.")(fn)


def given_options(params: dict[str, Any]) -> dict[str, Any]:
    """The run options the command line gave (by name), tuples as lists."""
    out = {}
    for opt in RUN_OPTIONS:
        value = params.get(opt.name)
        if value is not None and value != ():
            out[opt.name] = list(value) if isinstance(value, tuple) else value
    return out


def single_model(given: dict[str, Any], command: str) -> dict[str, Any]:
    """``given`` (``given_options``) with its ``model``, a list from the repeatable
    ``--model``, as the one model spec a command of one model takes; a TTABenchError when the
    command line names several (or a pool)."""
    from ttabench.models.pools import expand_models

    named = [m.strip() for value in given.get("model") or [] for m in str(value).split(",")
             if m.strip()]
    if not named:
        return given
    models = expand_models(named)
    if len(models) != 1:
        raise TTABenchError(f"{command} takes one --model, got {len(models)} "
                            f"({', '.join(models)})")
    return {**given, "model": models[0]}


__all__ = ["BOOT_UNITS", "CORRELATED", "MAP_KINDS", "MAX_SEED", "MAX_THREADS", "NAMES", "Option",
           "PRECISIONS", "RUN_OPTIONS", "Rule", "RunSpec", "SPLIT_ORDERS", "STREAM_KINDS",
           "STREAM_OPTIONS",
           "STRING", "ScoringSpec", "StreamSpec", "check_map_kinds", "config_defaults", "option",
           "given_options", "parse_stream_kind", "shown", "single_model", "spec_options",
           "trust_options"]
