"""Every yaml in conf/ composes, and every zoo entry has what the loader needs."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tstitch import zoo
from tstitch.cli import CONF

GROUPS = ["stitch", "solver", "guidance", "metric", "logger"]


def options(group):
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in options(g)])
def test_group_option_composes(group, name):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[f"{group}={name}"], return_hydra_config=False)
    OmegaConf.resolve(cfg)
    assert cfg.stitch.members and cfg.solver.name


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_entry_is_complete(name):
    e = zoo.entry(name)
    assert all(k in e for k in zoo.REQUIRED), e
    assert len(e["space"]["shape"]) == 3


@pytest.mark.parametrize("name", [n for n in zoo.names() if n.startswith("toy/")])
def test_train_config_composes_for_toy_entries(name):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    assert cfg.model.name == zoo.entry(name)["name"]


def test_debug_config_composes():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=["+debug=tiny"])
    assert cfg.num_samples == 8 and cfg.solver.steps == 3 and cfg.logger.mode == "disabled"


def test_stitch_members_keep_their_order():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=["stitch=dit_s_b_xl"])
    assert list(cfg.stitch.members) == ["small", "base", "large"]


@pytest.mark.parametrize("name", options("trainer"))
def test_generate_config_composes_with_each_trainer(name):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="generate", overrides=[f"trainer={name}"])
    assert cfg.trainer.accelerator in ("cpu", "gpu") and cfg.stitch.fractions
