"""Command-line entry points: thin Hydra glue around plain functions."""
import functools
import os
import re
import sys
from pathlib import Path

from tstitch import config
from tstitch.cli.help import register as register_help
from tstitch.errors import ConfigError, command, error  # command, error: also as tstitch.cli.command, .error
from tstitch.searchpath import CONF, with_user_dirs  # CONF: the config_path of every command

register_help()  # the groups listed by each command's --help (conf/hydra/help/)
config.register()  # the structured configs in Hydra's ConfigStore (schema/<command>)


def guard(fn):
    """Run a Hydra main with the commands' logging set up (``tstitch.cli.logs``); turn a ConfigError, a ``???`` value
    the run reads, and a full disk into one line on stderr, prefixed with the command's name, and exit code 2, and
    a stop by a signal (``tstitch.jobs.engine.stop``) into its line and 128 + the signal, instead of a traceback."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        from tstitch.cli import logs
        from tstitch.jobs.engine.stop import Stopped

        logs.setup()
        try:
            return fn(*args, **kwargs)
        except (Stopped, Exception) as e:
            line, code = one_line(e)
            if line is None:
                raise
            print(f"{command(fn.__module__)}: {line}", file=sys.stderr, flush=True)
            if os.environ.get("SUBMITIT_FOLDER"):  # a submitit job: let submitit record the failure itself
                raise
            sys.exit(code)
    return wrapped


def one_line(e):
    """(the line, the exit code) of an error the commands report without a traceback; (None, None) for others."""
    from omegaconf.errors import MissingMandatoryValue

    from tstitch.files import FULL, disk_full
    from tstitch.jobs.engine.stop import Stopped

    if isinstance(e, Stopped):
        return f"stopped by {e.name}" + (f"; {e.detail}" if e.detail else ""), e.code
    if isinstance(e, MissingMandatoryValue):
        e = ConfigError(missing_value(e))
    if isinstance(e, OSError) and e.errno in FULL:  # written outside tstitch.files (a library, the lock)
        e = disk_full(e, e.filename) if e.filename else ConfigError(
            f"{FULL[e.errno]}; free space on the run directory's disk and run the same command again")
    return (f"error: {e}", 2) if isinstance(e, ConfigError) else (None, None)


def missing_value(e):
    """The one line for OmegaConf's MissingMandatoryValue: a ``???`` left for a key that the run reads."""
    key = getattr(e, "full_key", None) or str(e).split(":")[-1].strip()
    return f"{key} has no value (???): give {key}=VALUE on the command line"


def run_dir_of(argv):
    """The ``hydra.run.dir=`` an argument list gives (the last one), or None."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    return given[-1].strip("'\"") if given else None


def check_run_dir(argv, default="outputs", name="tstitch"):
    """Fail early, in one line, when the run directory cannot be written (Hydra would raise a traceback); nothing
    is created here: the nearest existing folder on the path must be a writable directory."""
    target = run_dir_of(argv)
    target = default if target is None else target
    path = Path(target.split("${")[0] or ".").expanduser().absolute()  # the part before any ${...}
    existing = next(p for p in [path, *path.parents] if p.exists())
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    if problem:
        fail(f"output directory {path} cannot be made ({problem}); choose another with hydra.run.dir=...", name)


LAUNCHER = ("hydra/launcher", "hydra.launcher", "hydra.searchpath")  # composed in the preflight too


def preflight(config_name, argv):
    """Compose the config once before Hydra runs or launches anything, and check it (``tstitch.cli.schema.check``),
    so that an unknown group option or key (also inside an ``+experiment=...``), a value of the wrong type or range
    and every swept value fail now, in one line, before a file is written: a multirun is composed with the first
    value of each swept override, and once more for each other value."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from tstitch.cli import schema

    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
        first, others = [], []  # each override at its first value; the other values of swept ones
        for o in overrides:
            if o.key_or_group.startswith("hydra") and not o.key_or_group.startswith(LAUNCHER):
                continue  # Hydra's run settings are Hydra's; the launcher decides where devices are checked, the
                # search path where configs are found
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            if "???" in values:
                key = o.get_key_element().lstrip("+~")
                raise ConfigError(f"{key}=??? leaves {key} without a value: give {key}=VALUE, or leave the override "
                                  "out for its default")
            others += [(len(first), f"{o.get_key_element()}={v}") for v in values[1:]]
            first.append(f"{o.get_key_element()}={values[0]}" if o.is_sweep_override() else o.input_line)
        with initialize_config_dir(CONF, version_base=None):
            checked = None  # the first composition (every override at its first value), as the schema read it
            for k, line in [(None, None), *others]:
                lines = first if k is None else first[:k] + [line] + first[k + 1:]
                try:
                    cfg = compose(config_name, lines, return_hydra_config=True)
                except (HydraException, OmegaConfBaseException) as e:
                    raise ConfigError(_hydra_message(e, config_name, lines, compose)) from None
                # jobs a launcher submits elsewhere (SLURM) check their devices where they run
                here = "submitit" not in str(OmegaConf.select(cfg, "hydra.launcher._target_", default=""))
                with open_dict(cfg):
                    del cfg["hydra"]
                cfg = schema.check(cfg, config_name, machine=here)
                checked = cfg if checked is None else checked
        return checked
    except (HydraException, OmegaConfBaseException) as e:
        fail(_hydra_message(e), config_name)
    except ConfigError as e:
        fail(str(e), config_name)


def fail(message, name="tstitch"):
    """The command's one-line error (``error``) and exit code 2."""
    error(name, message)
    sys.exit(2)


def _hydra_message(error, config_name=None, lines=(), compose=None):
    """Hydra's error in one line; for an override of a key the config lacks, the nearest key and the section's keys
    instead of Hydra's advice to append it with ``+`` (which would set a key nothing reads)."""
    from omegaconf import DictConfig
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue):
        return missing_value(error)
    message = " ".join(str(error).split("Config search path")[0].split())
    missing = re.search(r"Could not override '([^']+)'", message)
    if missing and compose is not None:
        key = missing.group(1)
        parent, _, _ = key.rpartition(".")
        kept = [line for line in lines if not line.lstrip("+~").startswith(key + "=")]
        try:
            section = compose(config_name, kept)
            for part in filter(None, parent.split(".")):
                section = section[part]
        except Exception:  # noqa: BLE001 - fall back to Hydra's own words
            return message
        if isinstance(section, DictConfig):
            from tstitch.rules import unknown

            try:
                unknown(key, list(section), f"{parent}." if parent else "")
            except ConfigError as e:
                return str(e)
    return message


INFO_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion",
              "--version"}  # Hydra flags that only print


def entry_point(main, config_name=None, after=None):
    """The console-script function for a Hydra ``main``: given the config's name, the composed config is checked
    first (``preflight``; then ``after(cfg, argv)``, the command's own early checks), and the run directory."""
    def entry():
        name = main.__module__
        try:  # the user's config folders (TSTITCH_CONFIG_PATH) join Hydra's search path
            sys.argv[1:] = with_user_dirs(sys.argv[1:])
        except ConfigError as e:
            fail(str(e), name)
        flags = [a for a in sys.argv[1:] if a.startswith("-") and a not in ("-m", "--multirun")]
        if config_name and not flags:  # Hydra's own flags (--help, --cfg, -cn NAME, ...): Hydra handles them
            cfg = preflight(config_name, sys.argv[1:])
            if after is not None:
                try:
                    after(cfg, sys.argv[1:])
                except Exception as e:  # noqa: BLE001 - the known ones in one line (one_line), the rest raised
                    line, code = one_line(e)
                    if line is None:
                        raise
                    fail(line.removeprefix("error: "), name)
        if not set(flags) & INFO_FLAGS:  # --help, --cfg job, ...: Hydra prints and writes nothing
            check_run_dir(sys.argv[1:], name=name)
        main()
    return entry
