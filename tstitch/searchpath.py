"""Where configs are found: the shipped ``conf/``, then the user's own config folders, in the order Hydra searches.

The shipped configs are ``conf/`` at the repository root. A wheel carries the same files as ``tstitch/conf``
(pyproject.toml maps the package ``tstitch.conf`` onto ``conf/``), so a checkout and an installed wheel find them
alike. Users add models, stitches, experiments (any group) in folders of their own laid out like ``conf/``
(``model/<family>/<name>.yaml``, ``stitch/<name>.yaml``, ``experiment/<name>.yaml``), named in the environment
variable ``TSTITCH_CONFIG_PATH`` (directories separated by ``os.pathsep``): every command adds them to Hydra's
search path, and ``tstitch.load`` and the zoo find their ``model/`` entries. For one command,
``hydra.searchpath=[file:///abs/dir]`` does the same for the configs (Hydra's own override). The shipped configs
are searched first: give yours new names (e.g. ``model/mine/big.yaml``), since a shipped name hides them.
"""
import os
from pathlib import Path

from tstitch.errors import ConfigError

ENV = "TSTITCH_CONFIG_PATH"


def shipped():
    """The shipped config directory: ``tstitch/conf`` in an installed wheel, else ``conf/`` beside the package."""
    here = Path(__file__).resolve().parent
    return here / "conf" if (here / "conf").is_dir() else here.parent / "conf"


CONF = str(shipped())  # the config_path of every command


def user_dirs(env=None):
    """The user's config folders named in ``TSTITCH_CONFIG_PATH``, in order (plain directories, as in ``PATH``)."""
    value = (os.environ if env is None else env).get(ENV, "")
    dirs = []
    for part in filter(None, (p.strip() for p in value.split(os.pathsep))):
        path = Path(part).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"{ENV} names {part}, which is not a directory; give config folders laid out like "
                              f"conf/ (model/, stitch/, experiment/, ...), separated by {os.pathsep!r}")
        dirs.append(path)
    return dirs


def config_dirs(env=None):
    """Every config directory in Hydra's search order: the shipped one, then the user's."""
    return [Path(CONF), *user_dirs(env)]


def with_user_dirs(argv, env=None):
    """``argv`` of a command with the ``TSTITCH_CONFIG_PATH`` folders appended to its ``hydra.searchpath`` (one
    override: Hydra takes the last one given, so a ``hydra.searchpath=[...]`` on the command line is extended)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = [f"file://{d}" for d in user_dirs(env)]
    if not dirs:
        return list(argv)
    given, rest = [], []
    for arg in argv:
        if arg.split("=", 1)[0] == "hydra.searchpath":
            given = list(OverridesParser.create().parse_override(arg).value())
        else:
            rest.append(arg)
    paths = given + [d for d in dirs if d not in given]
    return rest + ["hydra.searchpath=[" + ",".join(repr(p) for p in paths) + "]"]
