"""Every shipped yaml in conf/ is composed here and lands where it says with its own values (a new file that no
rule composes fails), the fast paths' options are the ones models.fast takes, the stitches name their zoo entries in
order, and every zoo entry has what the loader needs."""
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tstitch.cli import CONF
from tstitch.models import fast, zoo
from tstitch.models.schedules import Schedule
from tstitch.sampling.stitch import check_fractions

SHIPPED = sorted(p.relative_to(CONF) for p in Path(CONF).rglob("*.yaml"))
PLAIN = ("stitch", "solver", "guidance", "metric", "logger", "fast", "prompts")  # groups of the main job
OPTIONAL = ("experiment", "debug")  # groups the main job lists as null (chosen with experiment=..., debug=...)


def how(path):
    """``(primary config, overrides)`` that compose the shipped yaml ``path`` (relative to conf/)."""
    group, name = "/".join(path.parts[:-1]), path.with_suffix("").name
    option = "/".join([*path.parts[1:-1], name])  # the option within its top-level group (model: toy/small)
    if not group:
        return name, []
    if group.split("/")[0] in PLAIN:
        return "tstitch", [f"{path.parts[0]}={option}"]
    if path.parts[0] in ("trainer", "hydra"):
        return "generate", [f"{group}={name}"]
    if path.parts[0] == "model":
        return "train", [f"model={option}"]
    if path.parts[0] in ("debug", "experiment"):  # groups the commands list as null: chosen like any other
        return ("generate" if path.parts[0] == "experiment" and not name.startswith("toy") else "tstitch",
                [f"{path.parts[0]}={option}"])
    raise KeyError(f"conf/{path}: no rule composes it; add one to how() in tests/test_configs.py")


def package(path):
    """Where the file's keys land: its ``# @package`` line, else its group (Hydra's default package)."""
    header = re.search(r"^# @package (\S+)", (Path(CONF) / path).read_text(), re.M)
    if header:
        return "" if header.group(1) == "_global_" else header.group(1)
    return path.parts[0] if path.parts[0] == "model" else ".".join(path.parts[:-1])


def within(own, composed, where):
    """Every key of ``own`` is in ``composed`` with the same (unresolved) value."""
    if isinstance(own, dict):
        assert isinstance(composed, dict), (where, composed)
        for key, value in own.items():
            assert key in composed, f"{where}.{key} missing"
            within(value, composed[key], f"{where}.{key}")
    else:
        assert composed == own, (where, composed, own)


@pytest.mark.parametrize("path", SHIPPED, ids=str)
def test_every_shipped_yaml_composes_with_its_own_values(path):
    config, overrides = how(path)
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name=config, overrides=overrides, return_hydra_config=True)
    own = OmegaConf.to_container(OmegaConf.load(Path(CONF) / path), resolve=False)
    own.pop("defaults", None)
    where = package(path)
    node = OmegaConf.select(cfg, where) if where else cfg
    within(own, OmegaConf.to_container(node, resolve=False), where or "<root>")
    if overrides and not overrides[0].startswith("+"):  # a group option: Hydra records the choice
        group, option = overrides[0].split("=")
        assert cfg.hydra.runtime.choices[group] == option


def test_every_group_of_the_main_job_is_composed():
    """The main job's defaults list names the groups that the rule for PLAIN composes (and the stitch's members)
    and the OPTIONAL ones, none chosen."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert {k for k in choices if not k.startswith(("hydra", "model@stitch."))} == set(PLAIN) | set(OPTIONAL)
    assert [choices[k] for k in OPTIONAL] == [None, None]


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF) / "fast").glob("*.yaml")))
def test_fast_option_is_what_tstitch_fast_takes(name):
    """Each fast path's composed options go through ``fast.speed_up`` (its keyword names and checks) as the jobs
    pass them; default's values fill what the option leaves out."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        options = OmegaConf.to_container(compose(config_name="tstitch", overrides=[f"fast={name}"]).fast)
    default = OmegaConf.to_container(OmegaConf.load(Path(CONF) / "fast" / "default.yaml"))
    own = OmegaConf.to_container(OmegaConf.load(Path(CONF) / "fast" / f"{name}.yaml"))
    own.pop("defaults", None)
    assert options == {**default, **own}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert fast.speed_up([], "cpu", **options) == []
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF) / "stitch").glob("*.yaml")))
def test_stitch_names_its_zoo_entries_in_order(name):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[f"stitch={name}"])
    defaults = OmegaConf.load(Path(CONF) / "stitch" / f"{name}.yaml").defaults
    entries = [value for d in defaults for key, value in d.items() if key.startswith("/model@members.")]
    assert list(cfg.stitch.members) == [key.split(".")[-1] for d in defaults for key in d
                                        if key.startswith("/model@members.")]
    solver = [value for d in defaults for key, value in d.items() if key.startswith("override /solver")]
    assert cfg.solver.name == (solver[0] if solver else "ddim")  # a family's own sampler, where the preset names it
    assert [m.name for m in cfg.stitch.members.values()] == [zoo.entry(e)["name"] for e in entries]
    assert check_fractions(cfg.stitch.fractions, len(entries)) == list(cfg.stitch.fractions)
    assert cfg.stitch.rule in ("steps", "official")


def test_stitch_members_keep_their_order():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=["stitch=dit_s_b_xl"])
    assert list(cfg.stitch.members) == ["small", "base", "large"]


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_entry_is_complete(name):
    """What the loader needs, a known schedule, and a net whose input is the declared data space."""
    e = zoo.entry(name)
    assert all(k in e for k in zoo.REQUIRED), e
    assert len(Schedule(**e["schedule"]).alphas_cumprod) == e["schedule"]["num_timesteps"]
    shape, net = list(e["space"]["shape"]), e["net"]
    expected = {"dit": lambda: [net["in_channels"], net["input_size"], net["input_size"]],
                "uvit": lambda: [net["in_chans"], net["img_size"], net["img_size"]],
                "sd": lambda: [net["in_channels"], *shape[1:]],
                "ldm": lambda: [net["in_channels"], net["image_size"], net["image_size"]]}[e["family"]]()
    assert shape == expected
