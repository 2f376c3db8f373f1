"""The one error type for bad input: its message names the problem and the fix, and the CLI prints it alone, as
``<command>: error: <message>`` (``error``; ``command`` names the console command)."""
import sys
from pathlib import Path


class ConfigError(ValueError):
    pass


def command(name):
    """The console command of a CLI module or Hydra config name: ``tstitch.cli.main`` and ``tstitch`` are
    ``tstitch``, ``tstitch.cli.generate`` and ``generate`` are ``tstitch-generate``."""
    if name == "__main__":  # python -m tstitch.cli.<module>
        name = Path(sys.argv[0]).stem
    name = name.rsplit(".", 1)[-1]
    return NAMES.get(name, f"tstitch-{name}")


NAMES = {"main": "tstitch", "tstitch": "tstitch", "features": "tstitch-train-features"}  # the others: tstitch-<name>


def error(name, message):
    """Print a one-line error of the command ``name`` (as ``command`` takes it) on stderr."""
    print(f"{command(name)}: error: {message}", file=sys.stderr)
