"""Command-line entry points: thin Hydra glue around plain functions."""
import functools
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
