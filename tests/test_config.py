"""The structured configs (tstitch/config.py) and their checks (tstitch/rules.py): registered in Hydra's
ConfigStore, every field a key of the shipped configs, OmegaConf's own checks rewritten into one line, and the house
rules where OmegaConf's conversions are lenient. The one-line errors of the commands: tests/test_schema.py."""
import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from tstitch import config
from tstitch.errors import ConfigError
from tstitch.rules import Anything, _unwrap, template, validate
from tstitch.sampling import solvers
from tstitch.searchpath import CONF

EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


def test_registered_in_hydras_config_store(tmp_path):
    """``schema/<command>`` and ``schema/member`` are in the ConfigStore, and Hydra composes them as a schema: a
    config that names one in its defaults is checked against it."""
    config.register()
    assert sorted(ConfigStore.instance().list("schema")) == sorted(f"{n}.yaml" for n in [*config.COMMANDS, "member"])
    (tmp_path / "mine.yaml").write_text("defaults:\n  - /schema/member@_here_\n  - _self_\nname: big\n"
                                        "schedule: {num_timesteps: many}\n")
    with initialize_config_dir(str(tmp_path), version_base=None):
        with pytest.raises(Exception, match="Value 'many' of type 'str' could not be converted to Integer"):
            compose("mine")


def unseen(cls, nodes, prefix=""):
    """The fields of ``cls`` (nested sections walked) that none of the configs ``nodes`` has."""
    out = []
    for f in dataclasses.fields(cls):
        present = [n._get_node(f.name) for n in nodes if isinstance(n, DictConfig) and f.name in n.keys()]  # ??? too
        if not present:
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(_unwrap(f.type)):
            out += unseen(_unwrap(f.type), present, f"{prefix}{f.name}.")
    return out


@pytest.mark.parametrize("command", ["tstitch", "generate", "evaluate", "reference", "demo"])
def test_every_field_is_a_key_of_the_shipped_configs(command):
    """No field the configs do not have (its defaults, an experiment's or a prompt set's keys): the structured
    config describes the yaml, not keys nothing sets."""
    overrides = [[]]
    if command in ("tstitch", "generate"):
        overrides += [["prompts=demo"], *([f"experiment={e}"] for e in EXPERIMENTS if e.startswith("toy") == (
            command == "tstitch"))]
    if command == "evaluate":  # the metric's keys at the top: metric=adm as the command spells it for Hydra
        from tstitch.cli.evaluate import plain_metric

        overrides += [plain_metric(["metric=adm"])]
    with initialize_config_dir(CONF, version_base=None):
        nodes = [compose(command, o) for o in overrides]
    assert unseen(config.COMMANDS[command], nodes) == []


def test_the_house_rules_refuse_what_omegaconf_converts():
    """OmegaConf reads ``yes`` as true and ``"3"`` as 3; the commands refuse both, naming the key."""
    merged = OmegaConf.merge(template(config.GenerateCommand), {"png": "yes", "num_samples": "3"})
    assert merged.png is True and merged.num_samples == 3
    with pytest.raises(ConfigError, match=r"^png='yes' is not allowed: give true or false$"):
        validate(OmegaConf.create({"png": "yes"}), config.GenerateCommand)
    with pytest.raises(ConfigError, match=r"^num_samples='3' is not allowed: give an integer >= 1$"):
        validate(OmegaConf.create({"num_samples": "3"}), config.GenerateCommand)


@dataclasses.dataclass
class Typed:
    count: int = dataclasses.field(default=MISSING, metadata={"rule": Anything()})
    inner: config.ScheduleConfig = dataclasses.field(default_factory=config.ScheduleConfig)


def test_omegaconfs_own_refusal_is_one_line():
    """Where OmegaConf refuses a value that no house rule covers (``count``: any value by its rule, an int by its
    type), its error becomes one line naming the key; where a house rule covers it, the house's line."""
    with pytest.raises(ConfigError, match=r"^part\.count: Value 'abc' of type 'str' could not be converted to "
                                          r"Integer$"):
        validate({"count": "abc"}, Typed, "part")
    with pytest.raises(ConfigError, match=r"^part\.inner\.num_timesteps='x' is not allowed: give an integer >= 1$"):
        validate({"inner": {"num_timesteps": "x"}}, Typed, "part")
    with pytest.raises(ConfigError, match=r"^unknown key part\.inner\.steps; did you mean part\.inner\."
                                          r"num_timesteps\? the keys of part\.inner: beta_end, "
                                          r"beta_start, name, num_timesteps$"):
        validate({"inner": {"steps": 3}}, Typed, "part")
    assert validate({"count": 3}, Typed, "part") == {"count": 3}


@pytest.mark.parametrize("name", sorted(solvers.SOLVERS))
def test_each_solvers_options_are_its_keywords(name):
    """A solver's options structured config names exactly the keyword arguments of its solve function that the
    sampler does not pass itself: no option that nothing reads, none unchecked."""
    params = inspect.signature(solvers.get(name)).parameters
    keywords = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in solvers.INTERNAL]
    assert [f.name for f in dataclasses.fields(solvers.options(name))] == keywords
