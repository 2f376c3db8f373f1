"""``--help`` of the Hydra commands: ``conf/hydra/help/<command>.yaml`` holds what the command does and examples;
the groups it uses, with their options and the current choice, come from the composed config itself (the
``tstitch_groups`` resolver), so the page lists exactly the groups of its defaults and the options on disk."""
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

from tstitch.searchpath import CONF

OPTIONAL = ("experiment", "debug", "hydra/launcher")  # chosen or not (``group: null`` in defaults, or Hydra's)
# groups placed at another package than their name, listed as the group they are chosen by
PLACED = {"metric@_global_": "metric"}  # tstitch-evaluate: metric=adm (tstitch.cli.evaluate.plain_metric)


def options(conf, group):
    """The options of a config group: its yaml files, ``model`` style subfolders as ``toy/large``."""
    root = Path(conf) / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def groups(*extra, _root_):
    """One line per config group of the command (``hydra.runtime.choices``, hydra's own and package-placed ones
    such as ``model@stitch.members.small`` left out) and per group in ``extra``: its options, the current one
    starred; ``extra`` groups (``experiment``, ``hydra/launcher``) are chosen like any other (``experiment=NAME``)
    or for ``-m``. A group placed elsewhere (``PLACED``: tstitch-evaluate's metric) is listed by its plain name."""
    choices = OmegaConf.to_container(_root_.hydra.runtime.choices)
    used = [g for g in reversed(choices) if not g.startswith("hydra/") and ("@" not in g or g in PLACED)
            and g not in extra]
    lines = []
    for key in [*used, *extra]:  # choices lists the defaults last to first
        group, current = PLACED.get(key, key), choices.get(key)
        names = [f"{o}*" if o == current else o for o in options(CONF, group)]
        if group == "hydra/launcher":
            names = ["basic*" if current in (None, "basic") else "basic", *names]
        text = ", ".join(names) + ("" if current is not None or group in OPTIONAL else " (none chosen)")
        lines += textwrap.wrap(text, 112, initial_indent=f"  {group:<16} ", subsequent_indent=" " * 19,
                               break_on_hyphens=False)
    return "\n".join(lines)


def register():
    if not OmegaConf.has_resolver("tstitch_groups"):
        OmegaConf.register_new_resolver("tstitch_groups", groups)
