"""Command-line entry points: thin Hydra glue around plain functions."""
import functools
import os
import sys
from pathlib import Path

from tstitch.cli.help import register as register_help
from tstitch.errors import ConfigError

register_help()  # the groups listed by each command's --help (conf/hydra/help/)

# The Hydra configs live at the repository root (editable install); an absolute path works from any cwd.
CONF = str(Path(__file__).resolve().parents[2] / "conf")


def command(name):
    """The console command of a CLI module or Hydra config name: ``tstitch.cli.main`` and ``tstitch`` are
    ``tstitch``, ``tstitch.cli.generate`` and ``generate`` are ``tstitch-generate``."""
    if name == "__main__":  # python -m tstitch.cli.<module>
        name = Path(sys.argv[0]).stem
    name = name.rsplit(".", 1)[-1]
    return "tstitch" if name in ("main", "tstitch") else f"tstitch-{name}"


def error(name, message):
    """Print a one-line error of the command ``name`` (as ``command`` takes it) on stderr."""
    print(f"{command(name)}: error: {message}", file=sys.stderr)


def guard(fn):
    """Run a Hydra main with the commands' logging set up (``tstitch.logs``); turn a ConfigError into one line on
    stderr, prefixed with the command's name, and exit code 2, instead of a traceback."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        from tstitch import logs

        logs.setup()
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            error(fn.__module__, e)
            if os.environ.get("SUBMITIT_FOLDER"):  # a submitit job: let submitit record the failure itself
                raise
            sys.exit(2)
    return wrapped


def check_run_dir(argv, default="outputs", name="tstitch"):
    """Fail early, in one line, when the run directory cannot be written (Hydra would raise a traceback)."""
    target = ([a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")] or [default])[-1]
    path = Path(target.split("${")[0] or ".").expanduser().absolute()  # the part before any interpolation
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tstitch-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        error(name, f"output directory {path} is not writable ({e.strerror}); choose another with hydra.run.dir=...")
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
            if not o.key_or_group.startswith("hydra"):
                first.append(f"{o.get_key_element()}={values[0]}" if o.is_sweep_override() else o.input_line)
        with initialize_config_dir(CONF, version_base=None):
            compose(config_name, first)
            for k, line in others:
                compose(config_name, first[:k] + [line] + first[k + 1:])
    except (HydraException, OmegaConfBaseException) as e:
        error(config_name, " ".join(str(e).split("Config search path")[0].split()))
        sys.exit(2)
    except ConfigError as e:
        error(config_name, e)
        sys.exit(2)


INFO_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion",
              "--version"}  # Hydra flags that only print


def entry_point(main, config_name=None):
    """The console-script function for a Hydra ``main``: checks the run directory and, given the config's
    name, the composed config first."""
    def entry():
        flags = [a for a in sys.argv[1:] if a.startswith("-") and a not in ("-m", "--multirun")]
        if not set(flags) & INFO_FLAGS:  # --help, --cfg job, ...: Hydra prints and writes nothing
            check_run_dir(sys.argv[1:], name=main.__module__)
        if config_name and not flags:  # Hydra's own flags (--help, --cfg, -cn NAME, ...): Hydra handles them
            preflight(config_name, sys.argv[1:])
        main()
    return entry
