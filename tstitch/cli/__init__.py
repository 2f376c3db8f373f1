"""Command-line entry points: thin Hydra glue around plain functions."""
import functools
import os
import sys
from pathlib import Path

from tstitch.errors import ConfigError
from tstitch.searchpath import CONF, with_user_dirs  # CONF: the config_path of every command


def guard(fn):
    """Turn a ConfigError into one line on stderr and exit code 2, instead of a traceback."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"tstitch: error: {e}", file=sys.stderr)
            if os.environ.get("SUBMITIT_FOLDER"):  # a submitit job: let submitit record the failure itself
                raise
            sys.exit(2)
    return wrapped


def check_run_dir(argv, default="outputs"):
    """Fail early, in one line, when the run directory cannot be written (Hydra would raise a traceback)."""
    target = ([a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")] or [default])[-1]
    path = Path(target.split("${")[0] or ".").expanduser().absolute()  # the part before any interpolation
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tstitch-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        print(f"tstitch: error: output directory {path} is not writable ({e.strerror}); "
              "choose another with hydra.run.dir=...", file=sys.stderr)
        sys.exit(2)


def preflight(config_name, argv):
    """Compose the config once before Hydra runs or launches anything, so that an unknown group option or key
    (also inside an ``+experiment=...``) and every swept ``stitch.fractions`` value fail now, in one line:
    a multirun is composed with the first value of each swept override."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from tstitch.stitch import check_fractions

    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
        first, others = [], []  # each override at its first value; the other values of swept ones
        for o in overrides:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            if o.key_or_group == "stitch.fractions":
                for v in values:
                    check_fractions(OverridesParser.create().parse_override(f"x={v}").value())
            elif not o.key_or_group.startswith("hydra"):
                others += [(len(first), f"{o.get_key_element()}={v}") for v in values[1:]]
            if not o.key_or_group.startswith("hydra") or o.key_or_group == "hydra.searchpath":
                first.append(f"{o.get_key_element()}={values[0]}" if o.is_sweep_override() else o.input_line)
        with initialize_config_dir(CONF, version_base=None):
            compose(config_name, first)
            for k, line in others:
                compose(config_name, first[:k] + [line] + first[k + 1:])
    except (HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split("Config search path")[0].split())
        print(f"tstitch: error: {message}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as e:
        print(f"tstitch: error: {e}", file=sys.stderr)
        sys.exit(2)


def entry_point(main, config_name=None):
    """The console-script function for a Hydra ``main``: checks the run directory and, given the config's
    name, the composed config first."""
    def entry():
        try:  # the user's config folders (TSTITCH_CONFIG_PATH) join Hydra's search path
            sys.argv[1:] = with_user_dirs(sys.argv[1:])
        except ConfigError as e:
            print(f"tstitch: error: {e}", file=sys.stderr)
            sys.exit(2)
        check_run_dir(sys.argv[1:])
        flags = [a for a in sys.argv[1:] if a.startswith("-") and a not in ("-m", "--multirun")]
        if config_name and not flags:  # Hydra's own flags (--help, --cfg, -cn NAME, ...): Hydra handles them
            preflight(config_name, sys.argv[1:])
        main()
    return entry
