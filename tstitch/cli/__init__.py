"""Command-line entry points: thin Hydra glue around plain functions."""
import functools
import os
import sys
from pathlib import Path

from tstitch.errors import ConfigError

# The Hydra configs live at the repository root (editable install); an absolute path works from any cwd.
CONF = str(Path(__file__).resolve().parents[2] / "conf")


def guard(fn):
    """Turn a ConfigError into one line on stderr and exit code 2, instead of a traceback."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"tstitch: error: {e}", file=sys.stderr)
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


def entry_point(main):
    """The console-script function for a Hydra ``main``: checks the run directory first."""
    def entry():
        check_run_dir(sys.argv[1:])
        main()
    return entry
