"""Typed configs: every key a command reads, with its type and range, checked once on the composed config before
any model loads or any file is written (``check(cfg, command)``; the CLIs call it in their preflight and again at
the top of each job, which is where SLURM/multirun jobs start).

A slip is one ``ConfigError`` line naming the key, the value, what is allowed and, for a misspelt key, the
nearest one. Sections that belong to other code (a zoo entry's ``net``, a solver's options, a metric's keyword
arguments) are checked against that code: the family, the solver's table below, the metric class's signature.
"""
import difflib
import inspect
import math
import re

from omegaconf import DictConfig, ListConfig, OmegaConf

from tstitch.errors import ConfigError


def _show(value):
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return repr(value) if isinstance(value, str) else str(value).replace(" ", "")


def _fail(key, value, allowed):
    raise ConfigError(f"{key}={_show(value)} is not allowed: {allowed}")


class Int:
    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi

    def describe(self):
        if self.hi is not None:
            return f"an integer in [{self.lo}, {self.hi}]"
        return "an integer" + (f" >= {self.lo}" if self.lo is not None else "")

    def __call__(self, value, key):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, f"give {self.describe()}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            _fail(key, value, f"give {self.describe()}")
        return value


class Num:
    """A finite number (int or float; NaN and inf are refused)."""

    def __init__(self, lo=None, hi=None, open_lo=False):
        self.lo, self.hi, self.open_lo = lo, hi, open_lo

    def describe(self):
        if self.lo is not None and self.hi is not None:
            return f"a number in {'(' if self.open_lo else '['}{self.lo}, {self.hi}]"
        if self.lo is not None:
            return f"a number {'>' if self.open_lo else '>='} {self.lo}"
        return "a finite number"

    def __call__(self, value, key):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, value, f"give {self.describe()}")
        if not math.isfinite(value):
            _fail(key, value, f"give {self.describe()} (NaN and inf are refused)")
        low = self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo)
        if low or (self.hi is not None and value > self.hi):
            _fail(key, value, f"give {self.describe()}")
        return value


class Bool:
    def describe(self):
        return "true or false"

    def __call__(self, value, key):
        if not isinstance(value, bool):
            _fail(key, value, "give true or false")
        return value


class Str:
    def describe(self):
        return "a string"

    def __call__(self, value, key):
        if not isinstance(value, str) or not value:
            _fail(key, value, "give a non-empty string")
        return value


class Choice:
    def __init__(self, *values):
        self.values = values

    def describe(self):
        return "one of " + ", ".join(map(str, self.values))

    def __call__(self, value, key):
        if isinstance(value, bool) or value not in self.values:
            near = difflib.get_close_matches(str(value), [str(v) for v in self.values], n=1)
            _fail(key, value, self.describe() + (f" (did you mean {near[0]}?)" if near else ""))
        return value


class Opt:
    """``field`` or null."""

    def __init__(self, field):
        self.field = field

    def describe(self):
        return f"{self.field.describe()} or null"

    def __call__(self, value, key):
        return None if value is None else self.field(value, key)


class Either:
    def __init__(self, *fields):
        self.fields = fields

    def describe(self):
        return " or ".join(f.describe() for f in self.fields)

    def __call__(self, value, key):
        for f in self.fields:
            try:
                return f(value, key)
            except ConfigError:
                pass
        _fail(key, value, f"give {self.describe()}")


class Seq:
    def __init__(self, field, min_len=0):
        self.field, self.min_len = field, min_len

    def describe(self):
        return f"a list of {self.field.describe().removeprefix('a ').removeprefix('an ')}s"

    def __call__(self, value, key):
        if not isinstance(value, (list, tuple, ListConfig)) or len(value) < self.min_len:
            _fail(key, value, f"give {self.describe()}" + (f", at least {self.min_len}" if self.min_len else "")
                  + f", e.g. {key}=[...]")
        return [self.field(v, f"{key}[{i}]") for i, v in enumerate(value)]


class Any:
    def describe(self):
        return "anything"

    def __call__(self, value, key):
        return value


class Section:
    """A mapping with known keys; unknown keys are refused with the nearest known one (``extra=True``: kept)."""

    def __init__(self, fields, extra=False):
        self.fields, self.extra = fields, extra

    def describe(self):
        return "a section"

    def __call__(self, value, key):
        if not isinstance(value, (dict, DictConfig)):
            _fail(key, value, f"give a section with keys {', '.join(self.fields)}")
        prefix = f"{key}." if key else ""
        for name in value:
            if name not in self.fields and not self.extra:
                unknown(f"{prefix}{name}", list(self.fields), prefix)
        for name, field in self.fields.items():
            if name in value and (raw := _raw(value, name)) is not MISSING:
                field(raw, f"{prefix}{name}")
        return value


def _raw(section, name):
    """A value as given. A ``???`` (missing) value, or one that reads Hydra's own config (``${hydra:...}``, set only
    once Hydra runs the job), is left to the code that needs it."""
    if isinstance(section, DictConfig):
        if OmegaConf.is_missing(section, name):
            return MISSING
        if OmegaConf.is_interpolation(section, name) and "${hydra:" in str(section._get_node(name)._value()):
            return MISSING
    return section[name]


class _Missing:
    def __repr__(self):
        return "???"


MISSING = _Missing()


def unknown(key, known, prefix=""):
    """The one-line error for a key a section does not have."""
    name, known = key[len(prefix):], [k for k in known if not str(k).startswith("_")]  # not Hydra's _target_
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean {prefix}{near[0]}? " if near else ""
    raise ConfigError(f"unknown key {key}; {hint}{'the keys of ' + prefix.rstrip('.') if prefix else 'keys'}: "
                      f"{', '.join(sorted(known))}")


# ---------------------------------------------------------------------------------------------------------------
# The sections

DEVICE = re.compile(r"cpu|cuda(:\d+)?")
SCHEDULE = Section({"name": Str(), "num_timesteps": Int(1)})
SPACE = Section({"name": Str(), "shape": Seq(Int(1), 1), "scale": Num(0, open_lo=True), "clip": Bool()})
MEMBER = Section({"name": Str(), "family": Str(), "net": Any(), "checkpoint": Any(), "schedule": SCHEDULE,
                  "space": SPACE, "codec": Any(), "cfg_channels": Opt(Int(1)), "classes": Opt(Str())}, extra=True)
STITCH = Section({"members": Any(), "fractions": Any(), "rule": Choice("steps", "official"), "codec": Any()})
SOLVER = Section({"name": Str(), "steps": Either(Int(1), Str()), "options": Opt(Section({}, extra=True))})
GUIDANCE = Section({"scale": Num(0), "channels": Opt(Either(Int(1), Choice("all")))})
FAST = Section({"precision": Choice("fp32", "bf16", "fp16"), "tf32": Bool(), "compile": Bool(), "graphs": Bool(),
                "channels_last": Bool(), "offload": Bool(), "force": Bool()})
LOGGER = Section({"mode": Choice("offline", "online", "disabled"), "project": Str(), "entity": Opt(Str()),
                  "name": Opt(Str()), "group": Opt(Str()), "tags": Opt(Seq(Str()))})
PROMPTS = Section({"path": Str(), "column": Opt(Str()), "captions": Choice("first", "all"),
                   "limit": Opt(Int(1)), "seed": Int(0)})
SWEEP = Section({"first": Opt(Seq(Num(0, 1), 1)), "allocations": Opt(Seq(Seq(Num(0, 1), 1), 1))})
TRAINER = Section({"accelerator": Choice("cpu", "gpu", "cuda", "auto"),
                   "devices": Either(Choice(-1), Int(1), Str(), Seq(Int(0), 1)),
                   "num_nodes": Int(1), "strategy": Str()}, extra=True)
SEARCH = Section({"grid": Num(0, 1, open_lo=True), "budget": Opt(Num(0, open_lo=True)), "objective": Str(),
                  "maximize": Opt(Bool()), "target": Opt(Num()), "cost_samples": Int(1), "num_samples": Int(1),
                  "confirm_samples": Int(1)})

TIMING = Section({"rounds": Int(1), "tolerance": Num(0, open_lo=True)})

SAMPLING = {"stitch": STITCH, "solver": SOLVER, "guidance": GUIDANCE, "fast": FAST, "metric": Opt(Any()),
            "prompts": Opt(PROMPTS), "seed": Int(0, 2 ** 62), "batch_size": Int(1),
            "labels": Choice("random", "balanced"), "threads": Int(1), "grid_columns": Int(0),
            "nonfinite": Choice("error", "warn"), "paper": Any()}
COMMANDS = {
    "tstitch": {**SAMPLING, "logger": LOGGER, "sweep": Opt(SWEEP), "num_samples": Int(1), "device": Str(),
                "workers": Opt(Int(1)), "timing": TIMING},
    "generate": {**SAMPLING, "logger": LOGGER, "trainer": TRAINER, "num_samples": Int(1), "png": Bool(),
                 "timing": Section({**TIMING.fields, "rounds": Int(0)})},  # rounds=0: no speedup measured
    "search": {**SAMPLING, "search": SEARCH, "sweep": Opt(SWEEP), "device": Str(), "workers": Opt(Int(1)),
               "timing": TIMING},
    "evaluate": {"_target_": Str(), "samples": Str(), "reference": Str(),
                 "metrics": Seq(Choice("fid", "isc", "kid", "prc"), 1), "extractor": Str(), "weights": Opt(Str()),
                 "kid_subset_size": Int(2), "prc_neighborhood": Int(1), "batch_size": Int(1),
                 "cache_root": Opt(Str()), "float_range": Choice("auto", "unit", "byte")},
    "reference": {"source": Str(), "out": Opt(Str()), "metrics": Seq(Choice("fid", "kid", "prc"), 1),
                  "extractor": Str(), "weights": Opt(Str()), "batch_size": Int(1),
                  "float_range": Choice("auto", "unit", "byte")},
}
# Solver options: key -> field (a solver not listed here takes the keyword arguments of its function)
SOLVER_OPTIONS = {"ddim": {"eta": Num(0, 1)}, "ddpm": {"variance": Choice("learned", "small", "large")},
                  "dpmpp_2m": {}, "dpm_solver": {},
                  "scheduler": {"scheduler": Opt(Str()), "config": Opt(Section({}, extra=True)), "eta": Num(0, 1)},
                  "diffusers": {"scheduler": Str(), "config": Opt(Section({}, extra=True)), "eta": Num(0, 1)}}


def check(cfg, command, machine=True):
    """Check the composed config of ``command`` (``tstitch``, ``generate``, ``search``, ``evaluate``); returns it.
    ``machine``: also that the devices it asks for are on this machine (not when the jobs run elsewhere, e.g.
    submitted to SLURM from a login node). Commands without a schema here (``train``) pass unchecked."""
    fields = COMMANDS.get(command)
    if fields is None:
        return cfg
    Section(fields)(cfg, "")
    if command in ("evaluate", "reference"):
        return cfg
    names = members(cfg)
    fractions(cfg.stitch.fractions, names, "stitch.fractions")
    sweep = cfg.get("sweep") or {}
    if sweep.get("first") is not None and len(names) < 2:
        raise ConfigError("sweep.first needs two or more members; set sweep=null for a single model")
    for i, row in enumerate(sweep.get("allocations") or []):
        fractions(row, names, f"sweep.allocations[{i}]")
    solver(cfg.solver, cfg.stitch.members)
    if cfg.get("metric"):
        metric(cfg.metric)
    if "device" in cfg:
        device(cfg.device, "device", machine)
    if "trainer" in cfg and machine:
        accelerator(cfg.trainer)
    return cfg


def members(cfg):
    """The member names of ``stitch.members``, each a zoo entry checked for its keys and family."""
    from tstitch.models.zoo import REQUIRED, families

    entries = cfg.stitch.get("members")
    if not isinstance(entries, (dict, DictConfig)) or not entries:
        raise ConfigError("stitch.members must name one or more zoo entries (stitch=toy, or "
                          "model@stitch.members.small=dit/s2 ...)")
    known = None
    for name, entry in entries.items():
        key = f"stitch.members.{name}"
        if not isinstance(entry, (dict, DictConfig)):
            _fail(key, entry, "give a zoo entry, e.g. model@stitch.members.small=toy/small")
        lacking = [k for k in REQUIRED if k not in entry]
        if lacking:
            raise ConfigError(f"{key} lacks {', '.join(lacking)}; a zoo entry needs name, family, net, schedule and "
                              "space (see conf/model/toy/large.yaml)")
        MEMBER(entry, key)
        known = known or families()
        if entry.family not in known:
            _fail(f"{key}.family", entry.family, "one of " + ", ".join(sorted(known)))
    return list(entries)


def fractions(value, names, key):
    """A list of finite fractions in [0, 1], one per member, summing to 1."""
    example = "[" + ",".join(["0.4", "0.6"] if len(names) == 2 else [f"{1 / len(names):.2g}"] * len(names)) + "]"
    fix = f"give one fraction per member ({len(names)}: {', '.join(names)}) summing to 1, e.g. {key}={example}"
    if not isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"{key}={_show(value)} is not a list; {fix}")
    values = Seq(Num())(value, key)
    if len(values) != len(names):
        raise ConfigError(f"{key}={_show(value)}: {len(values)} stitch fractions for {len(names)} members; {fix}")
    if any(v < 0 for v in values) or any(v > 1 for v in values):
        raise ConfigError(f"{key}={_show(value)} has a negative entry or one above 1; each must be in [0, 1]; {fix}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{key}={_show(value)}: fractions sum to {sum(values):g}, not 1; {fix}")
    return values


def solver(cfg, entries):
    """A registered solver, a step count its grid can make on the members' schedules, and known options. (What
    depends on the loaded members, e.g. the scheduler a model ships, is checked once they are loaded:
    ``tstitch.sampling.sample.check``.)"""
    from tstitch.models.schedules import space_timesteps
    from tstitch.sampling import solvers

    spec = solvers.entry(cfg.name)
    steps, horizon = cfg.steps, min(int(e.schedule.get("num_timesteps", 1000)) for e in entries.values())
    if isinstance(steps, int) and steps > horizon:
        _fail("solver.steps", steps, f"give at most {horizon} steps (the members' schedules have {horizon} timesteps)")
    if not spec.respaced:
        Int(1)(steps, "solver.steps")  # a grid of its own: a step count
    else:
        try:
            space_timesteps(horizon, steps)
        except (ValueError, TypeError) as e:
            _fail("solver.steps", steps, f"give a step count or an ADM respacing string such as ddim50 or 10,20 "
                  f"({e})")
    options = cfg.get("options") or {}
    table = SOLVER_OPTIONS.get(cfg.name)
    if table is None:
        params = inspect.signature(spec.solve).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        table = {k: Any() for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in INTERNAL}
    Section(table)(options, "solver.options")


INTERNAL = ("randn_like", "clip", "callback", "schedule", "steps", "shipped")  # what the sampler passes itself


def metric(cfg):
    """The metric's ``_target_`` is a class whose keyword arguments are the section's keys."""
    from hydra.utils import get_class

    target = cfg.get("_target_")
    if target is None:
        return
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - Hydra raises several types for a bad path
        _fail("metric._target_", target, "a metric class such as tstitch.metrics.FidelityMetric (metric=fid|fashion"
              "|clip|none)")
    params = inspect.signature(cls.__init__).parameters
    keys = [k for k in params if k != "self"]
    for k in cfg:
        if k not in keys and not k.startswith("_"):
            unknown(f"metric.{k}", keys, "metric.")


def device(value, key, machine=True):
    """``cpu``, ``cuda`` or ``cuda:N``, and (``machine``) present on this machine."""
    import torch

    if not isinstance(value, str) or not DEVICE.fullmatch(value):
        _fail(key, value, "give cpu, cuda or cuda:N")
    if value.startswith("cuda") and machine:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= count:
            raise ConfigError(f"{key}={value}, but torch sees {count} CUDA GPU{'' if count == 1 else 's'} on this "
                              f"machine; use {key}=cpu" + (f" or {key}=cuda:0" if count else ""))


def accelerator(trainer):
    """Lightning's accelerator must exist on this machine (``trainer=cpu`` otherwise)."""
    import torch

    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={trainer.accelerator}, but torch sees no CUDA GPU on this machine; "
                          "use trainer=cpu")
