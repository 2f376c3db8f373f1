"""Spellings the commands take besides their own, turned into their own before Hydra reads the command line.

- ``+experiment=NAME`` and ``+debug=tiny``: a command's config lists these groups as ``group: null``
  (conf/tstitch.yaml, conf/generate.yaml), so ``experiment=NAME`` chooses one like any other group; Hydra refuses
  ``+`` for a group its defaults list already holds ("Multiple values for experiment"), so the ``+`` is dropped
  here and both spellings compose the same config.
- The ``--flag`` dialect that ``tstitch-report`` and ``tstitch-train-features`` had before they were Hydra commands:
  translated to ``key=value``, with one line on stderr naming the new spelling.
"""
import re
import shlex
import sys
from pathlib import Path

from omegaconf import OmegaConf

# Hydra's own flags that take the next argument as their value (--info's value is optional)
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
PLAIN = re.compile(r"[A-Za-z0-9_./:+-]+")  # a value Hydra reads as the same string without quotes (if not a number)


def optional_groups(config_name):
    """The groups that ``conf/<config_name>.yaml`` lists as ``group: null`` in its defaults (chosen or not)."""
    from tstitch.cli import CONF

    path = Path(CONF) / f"{config_name}.yaml"
    entries = (OmegaConf.load(path).get("defaults") or []) if path.exists() else []
    return {k for e in entries if not isinstance(e, str) for k, v in e.items() if v is None}


def plain_groups(argv, config_name):
    """``argv`` with ``+group=...`` written ``group=...`` for the optional groups of the command's config."""
    groups = optional_groups(config_name)
    out = []
    for a in argv:
        key = a.split("=", 1)[0]
        out.append(a[1:] if "=" in a and key.startswith("+") and not key.startswith("++") and key[1:] in groups
                   else a)
    return out


def value(text):
    """``text`` as a Hydra override value that reads back as exactly this string: bare where that is safe, else
    quoted (``'``, a backslash before a quote or at the end, and ``${`` escaped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if PLAIN.fullmatch(text):
        try:
            if OverridesParser.create().parse_override(f"k={text}").value() == text:
                return text
        except Exception:  # noqa: BLE001 - Hydra's grammar errors come in several types: quote it instead
            pass
    quoted = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'").replace("${", "\\${")
    return f"'{quoted}'"


def _split(argv, flags):
    """(what Hydra takes as it is, {old flag: its value}, bare words) of ``argv``: a bare word is one that is not an
    override, a flag or a Hydra flag's value."""
    kept, given, bare, i = [], {}, [], 0
    while i < len(argv):
        a, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        name, eq, rest = a.partition("=")
        if name in flags:
            given[name] = rest if eq else nxt  # None: no value, which the command's own check then names
            i += 1 if eq or nxt is None else 2
        elif nxt is not None and (a in HYDRA_VALUE_FLAGS or (a in ("--info", "-i") and nxt in INFO_VALUES)):
            kept += [a, nxt]
            i += 2
        else:
            (kept if a.startswith("-") or eq else bare).append(a)
            i += 1
    return kept, given, bare


def translate(command, argv, flags, paths=(), bare_key=None):
    """``argv`` in the command's own spelling. ``flags`` maps each old ``--flag`` to its key (the keys in ``paths``
    take their value as a string, quoted where needed; the others as Hydra reads it, e.g. a number); bare words
    (paths) go to ``bare_key`` (one value, or a list of several). When anything was translated, one line on stderr
    names the new spelling. Returns the new argument list."""
    kept, given, bare = _split(argv, flags)
    if not given and not bare:
        return list(argv)
    new = [f"{flags[f]}={'???' if v is None else value(v) if flags[f] in paths else v}" for f, v in given.items()]
    if bare:
        if bare_key is None:
            return list(argv)  # a bare word this command has no key for: Hydra says what is wrong with it
        words = [value(b) for b in bare]
        new.insert(0, f"{bare_key}={words[0] if len(words) == 1 else '[' + ','.join(words) + ']'}")
    args = [*new, *kept]
    print(f"{command}: the --flag spelling is deprecated; this runs as: {shlex.join([command, *args])}",
          file=sys.stderr, flush=True)
    return args
