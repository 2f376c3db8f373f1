"""The house rules of config values, and ``validate``: a composed config checked against a structured config.

A structured config (``tstitch.config``) declares each field's Python type, which OmegaConf checks (``int``,
``float``, ``bool``, ``str``, ``Optional``, ``list``, ``dict``, a nested dataclass), and its range or choices as the
field's metadata (``integer(1)``, ``number(0, 1)``, ``one_of("fp32", "bf16")``, ``either(...)`` for what OmegaConf
2.3 cannot type, a ``Union``). ``validate`` merges the config into the structured config, so OmegaConf checks the
keys and types, then applies the house rules that OmegaConf's conversions do not: a bool is ``true`` or ``false``
(OmegaConf reads ``yes`` and ``1`` as true), an integer is not ``"3"``, a string is not empty, numbers are finite
and in range, a choice is one of its values. Every slip is one ``ConfigError`` line naming the key, the value, what
is allowed and, for a misspelt key, the nearest one; OmegaConf's own errors are rewritten into that line here.
"""
import dataclasses
import difflib
import functools
import math
import re
import typing
from dataclasses import field

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from tstitch.errors import ConfigError


def show(value):
    """A value as the error lines write it: strings quoted, lists and sections without spaces."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return repr(value) if isinstance(value, str) else str(value).replace(" ", "")


def fail(key, value, allowed):
    raise ConfigError(f"{key}={show(value)} is not allowed: {allowed}")


def unknown(key, known, prefix=""):
    """The one-line error for a key a section does not have."""
    name, known = key[len(prefix):], [k for k in known if not str(k).startswith("_")]  # not Hydra's _target_
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean {prefix}{near[0]}? " if near else ""
    raise ConfigError(f"unknown key {key}; {hint}{'the keys of ' + prefix.rstrip('.') if prefix else 'keys'}: "
                      f"{', '.join(sorted(known))}")


class Int:
    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi

    def describe(self):
        if self.hi is not None:
            return f"an integer in [{self.lo}, {self.hi}]"
        return "an integer" + (f" >= {self.lo}" if self.lo is not None else "")

    def __call__(self, value, key):
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, value, f"give {self.describe()}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            fail(key, value, f"give {self.describe()}")
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
            fail(key, value, f"give {self.describe()}")
        if not math.isfinite(value):
            fail(key, value, f"give {self.describe()} (NaN and inf are refused)")
        low = self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo)
        if low or (self.hi is not None and value > self.hi):
            fail(key, value, f"give {self.describe()}")
        return value


class Bool:
    def describe(self):
        return "true or false"

    def __call__(self, value, key):
        if not isinstance(value, bool):
            fail(key, value, "give true or false")
        return value


class Str:
    def describe(self):
        return "a string"

    def __call__(self, value, key):
        if not isinstance(value, str) or not value:
            fail(key, value, "give a non-empty string")
        return value


class Choice:
    def __init__(self, *values):
        self.values = values

    def describe(self):
        return "one of " + ", ".join(map(str, self.values))

    def __call__(self, value, key):
        if isinstance(value, bool) or value not in self.values:
            near = difflib.get_close_matches(str(value), [str(v) for v in self.values], n=1)
            fail(key, value, self.describe() + (f" (did you mean {near[0]}?)" if near else ""))
        return value


class Opt:
    """``rule`` or null."""

    def __init__(self, rule):
        self.rule = rule

    def describe(self):
        return f"{self.rule.describe()} or null"

    def __call__(self, value, key):
        return None if value is None else self.rule(value, key)


class Either:
    def __init__(self, *rules):
        self.rules = rules

    def describe(self):
        return " or ".join(r.describe() for r in self.rules)

    def __call__(self, value, key):
        for r in self.rules:
            try:
                return r(value, key)
            except ConfigError:
                pass
        fail(key, value, f"give {self.describe()}")


class Seq:
    def __init__(self, rule, min_len=0):
        self.rule, self.min_len = rule, min_len

    def describe(self):
        return f"a list of {self.rule.describe().removeprefix('a ').removeprefix('an ')}s"

    def __call__(self, value, key):
        if not isinstance(value, (list, tuple, ListConfig)) or len(value) < self.min_len:
            fail(key, value, f"give {self.describe()}" + (f", at least {self.min_len}" if self.min_len else "")
                 + f", e.g. {key}=[...]")
        return [self.rule(v, f"{key}[{i}]") for i, v in enumerate(value)]


class Anything:
    def describe(self):
        return "anything"

    def __call__(self, value, key):
        return value


class Section:
    """A mapping with the fields of a structured config (or ``{name: rule}``); a key it lacks is refused with the
    nearest known one, unless the dataclass is ``OPEN`` (extra keys belong to other code: a family's, Lightning's).
    A dataclass's ``check_section(given, key)``, if it has one, then checks what no one field's rule sees: keys
    together (``given``: its fields as given, unset ones left out)."""

    def __init__(self, fields, extra=False):
        self.whole = None
        if dataclasses.is_dataclass(fields):
            self.whole = getattr(fields, "check_section", None)
            fields, extra = rules(fields), getattr(fields, "OPEN", False)
        self.fields, self.extra = fields, extra

    def describe(self):
        return "a section"

    def __call__(self, value, key):
        if not isinstance(value, (dict, DictConfig)):
            fail(key, value, f"give a section with keys {', '.join(self.fields)}")
        prefix = f"{key}." if key else ""
        for name in value:
            if name not in self.fields and not self.extra:
                unknown(f"{prefix}{name}", list(self.fields), prefix)
        for name, rule in self.fields.items():
            if name in value and (raw := _raw(value, name)) is not UNSET:
                rule(raw, f"{prefix}{name}")
        if self.whole is not None:
            self.whole({name: raw for name in self.fields if name in value and (raw := _raw(value, name)) is not UNSET},
                       key)
        return value


def _raw(section, name):
    """A value as given. A ``???`` (missing) value, or one that reads Hydra's own config (``${hydra:...}``, set only
    once Hydra runs the job), is left to the code that needs it."""
    if isinstance(section, DictConfig):
        if OmegaConf.is_missing(section, name):
            return UNSET
        if OmegaConf.is_interpolation(section, name) and "${hydra:" in str(section._get_node(name)._value()):
            return UNSET
    return section[name]


UNSET = object()  # a value left unchecked (``_raw``)


def integer(lo=None, hi=None, **more):
    return field(default=MISSING, metadata={"lo": lo, "hi": hi, **more})


def number(lo=None, hi=None, open_lo=False, **more):
    return field(default=MISSING, metadata={"lo": lo, "hi": hi, "open_lo": open_lo, **more})


def one_of(*values, **more):
    return field(default=MISSING, metadata={"choices": values, **more})


def either(*alternatives):
    """An ``Any`` field that is one of several rules (OmegaConf 2.3 has no ``Union`` of types)."""
    return field(default=MISSING, metadata={"rule": Either(*alternatives)})


def section(cls):
    return field(default_factory=cls)


def rule_of(kind, meta):
    """The house rule of a field of type ``kind`` with ``meta`` (its range, choices, minimum length)."""
    if "rule" in meta:
        return meta["rule"]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union and type(None) in args:
        return Opt(rule_of(next(a for a in args if a is not type(None)), meta))
    if origin is list:
        return Seq(rule_of(args[0], meta), meta.get("min_len", 0))
    if origin is dict:
        return Section({}, extra=True)
    if dataclasses.is_dataclass(kind):
        return Section(kind)
    if "choices" in meta:
        return Choice(*meta["choices"])
    simple = {int: lambda: Int(meta.get("lo"), meta.get("hi")), bool: Bool, str: Str,
              float: lambda: Num(meta.get("lo"), meta.get("hi"), meta.get("open_lo", False))}
    return simple[kind]() if kind in simple else Anything()


@functools.cache
def rules(cls):
    """``{field: rule}`` of a structured config."""
    return {f.name: rule_of(f.type, f.metadata) for f in dataclasses.fields(cls)}


@functools.cache
def template(cls):
    """The structured config of ``cls`` as OmegaConf holds it (``merge`` copies it), its ``OPEN`` sections and
    ``dict`` fields taking keys of their own."""
    node = OmegaConf.structured(cls)

    def relax(node, cls):
        OmegaConf.set_struct(node, not getattr(cls, "OPEN", False))
        for f in dataclasses.fields(cls):
            kind, child = _unwrap(f.type), node._get_node(f.name)
            if not isinstance(child, DictConfig):
                continue
            if dataclasses.is_dataclass(kind) and not child._is_missing() and not child._is_none():
                relax(child, kind)
            elif typing.get_origin(kind) is dict:
                OmegaConf.set_struct(child, False)

    relax(node, cls)
    return node


def _unwrap(kind):
    """``X`` of ``Optional[X]``."""
    args = typing.get_args(kind)
    return next(a for a in args if a is not type(None)) if typing.get_origin(kind) is typing.Union else kind


def validate(cfg, cls, key=""):
    """``cfg`` (a section at ``key``; "" for a whole config) checked against the structured config ``cls``: by
    OmegaConf (keys and types), then by the house rules (see the module docstring). Returns ``cfg``."""
    try:
        OmegaConf.merge(template(cls), cfg)
    except OmegaConfBaseException as e:
        _rewrite(e, cfg, cls, key)
    return Section(cls)(cfg, key)


def _rewrite(error, cfg, cls, key):
    """OmegaConf's error as the house's line: the rule at the key it names, given the value as written there (or,
    where the key is not in the config as given, the whole section's rules)."""
    prefix = f"{key}." if key else ""
    full = getattr(error, "full_key", None) or ""
    rule, value, path = Section(cls), cfg, prefix.rstrip(".")
    try:
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", full):
            while isinstance(rule, Opt):
                rule = rule.rule
            if part.startswith("["):
                rule, value, path = rule.rule, value[int(part[1:-1])], f"{path}{part}"
            else:
                if isinstance(error, ConfigKeyError) and part not in rule.fields and not rule.extra:
                    unknown(f"{path}.{part}" if path else part, list(rule.fields), f"{path}." if path else "")
                rule, value, path = rule.fields[part], _raw(value, part), f"{path}.{part}" if path else part
        if value is not UNSET:
            rule(value, path)
        Section(cls)(cfg, key)
    except (KeyError, IndexError, AttributeError, TypeError):
        Section(cls)(cfg, key)
    where = ".".join(filter(None, [key, full]))
    raise ConfigError(f"{where or 'the config'}: {' '.join(str(error).splitlines()[0].split())}")
