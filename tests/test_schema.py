"""Typed configs (cli/schema.py): every shipped config passes; every slip is one line with exit code 2, naming the
key, the value, what is allowed and, for a misspelt key, the nearest one, before any model loads."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tstitch.cli import CONF, schema
from tstitch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def composed(config, overrides=()):
    with initialize_config_dir(CONF, version_base=None):
        return compose(config, list(overrides))


@pytest.mark.parametrize("config", ["tstitch", "generate", "search", "evaluate", "reference"])
def test_shipped_defaults_pass(config):
    """The shipped defaults pass (``check`` returns the config it was given), and the check does look at them: the
    same config with one unknown key is refused, naming it."""
    cfg = composed(config)
    assert schema.check(cfg, config, machine=False) is cfg
    with pytest.raises(ConfigError, match="^unknown key zzz_not_a_key; "):
        schema.check(composed(config, ["+zzz_not_a_key=1"]), config, machine=False)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_and_each_swept_value_passes(name):
    """The experiment with each value of its sweep, one at a time: a swept config group is composed; a swept key's
    value is put in the composed experiment as Hydra puts a ``key=value`` override (OmegaConf.update, merged)."""
    command = "tstitch" if name.startswith("toy") else "generate"
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose(command, [f"experiment={name}"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.get("params") or {})
        groups = set(cfg.hydra.runtime.choices)
    experiment, parser = composed(command, [f"experiment={name}"]), OverridesParser.create()
    swept = [parser.parse_override(f"{k}={v}") for k, values in params.items()
             for v in parser.parse_override(f"{k}={values}").sweep_string_iterator()]
    for override in swept or [None]:
        if override is None:
            cfg = experiment
        elif override.key_or_group in groups:
            cfg = composed(command, [f"experiment={name}", override.input_line])
        else:
            cfg = copy.deepcopy(experiment)
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        schema.check(cfg, command, machine=False)


SLIPS = [  # (command, override, the one line after "tstitch: error: ")
    ("tstitch", "stitch.fractions=0.4 sweep=null", "stitch.fractions=0.4 is not a list; give one fraction per member "
     "(2: small, large) summing to 1, e.g. stitch.fractions=[0.4,0.6]"),
    ("tstitch", "num_samples=abc", "num_samples='abc' is not allowed: give an integer >= 1"),
    ("tstitch", "solver.stepz=10", "unknown key solver.stepz; did you mean solver.steps? the keys of solver: name, "
     "options, steps"),
    ("tstitch", "+solver.stepz=10", "unknown key solver.stepz; did you mean solver.steps? the keys of solver: name, "
     "options, steps"),
    ("tstitch", "sweep.first=[0.2,1.5]", "sweep.first[1]=1.5 is not allowed: give a number in [0, 1]"),
    ("tstitch", "labels=balance", "labels='balance' is not allowed: one of random, balanced (did you mean "
     "balanced?)"),
    ("tstitch", "threads=0", "threads=0 is not allowed: give an integer >= 1"),
    ("tstitch", "fast.compile=maybe", "fast.compile='maybe' is not allowed: give true or false"),
    ("tstitch", "guidance.scale=inf", "guidance.scale=inf is not allowed: give a number >= 0 (NaN and inf are "
     "refused)"),
    ("tstitch", "solver.options.eta=-1", "solver.options.eta=-1 is not allowed: give a number in [0, 1]"),
    ("tstitch", "solver=ddpm solver.options.variance=tiny", "solver.options.variance='tiny' is not allowed: one of "
     "learned, small, large"),
    ("tstitch", "+solver.options.etta=0.5", "unknown key solver.options.etta; did you mean solver.options.eta? the "
     "keys of solver.options: eta"),
    ("tstitch", "metric.weightz=x", "unknown key metric.weightz; did you mean metric.weights? the keys of metric: "
     "bootstrap, reference, weights"),
    ("tstitch", "+metric.weightz=x", "unknown key metric.weightz; did you mean metric.weights? the keys of metric: "
     "bootstrap, cache_root, reference, weights"),
    ("tstitch", "stitch.members.small.family=unet", "stitch.members.small.family='unet' is not allowed: one of dit, "
     "ldm, sd, uvit"),
    ("tstitch", "-m stitch.fractions=[0.4,0.6],[0.5,0.6] sweep=null", "stitch.fractions=[0.5,0.6]: fractions sum to "
     "1.1, not 1; give one fraction per member (2: small, large) summing to 1, e.g. stitch.fractions=[0.4,0.6]"),
    ("tstitch", "~stitch.members.large.net", "stitch.members.large lacks net; a zoo entry needs name, family, net, "
     "schedule and space (see conf/model/toy/large.yaml)"),
    ("tstitch-generate", "batch_size=1.5", "batch_size=1.5 is not allowed: give an integer >= 1"),
    ("tstitch-generate", "png=yes", "png='yes' is not allowed: give true or false"),
    ("tstitch-generate", "trainer.num_nodes=0", "trainer.num_nodes=0 is not allowed: give an integer >= 1"),
    ("tstitch-generate", "nonfinite=ignore", "nonfinite='ignore' is not allowed: one of error, warn"),
    ("tstitch-search", "search.grid=0", "search.grid=0 is not allowed: give a number in (0, 1]"),
    ("tstitch-search", "search.objectiv=fid", "unknown key search.objectiv; did you mean search.objective? the keys "
     "of search: budget, confirm_samples, cost_samples, grid, maximize, num_samples, objective, target"),
    ("tstitch-evaluate", "samples=a.npz reference=b.npz metrics=[fid,is]", "metrics[1]='is' is not allowed: one of "
     "fid, isc, kid, prc (did you mean isc?)"),
    ("tstitch-evaluate", "samples=a.npz reference=b.npz kid_subset_size=1", "kid_subset_size=1 is not allowed: give "
     "an integer >= 2"),
    ("tstitch-reference", "source=x float_range=percent", "float_range='percent' is not allowed: one of auto, unit, "
     "byte"),
]


@pytest.mark.parametrize("command,override,message", SLIPS)
def test_slips_are_one_line_before_anything_loads(tmp_path, in_process, monkeypatch, command, override, message):
    from tstitch.models import zoo

    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    r = in_process(command, *override.split(), f"hydra.run.dir={tmp_path / 'run'}",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and lines == [f"{command}: error: {message}"], r.stderr[-2000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_slip_through_the_installed_command(tmp_path):
    r = subprocess.run([str(BIN / "tstitch"), "stitch.fractions=0.4", "sweep=null", f"hydra.run.dir={tmp_path / 'r'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"tstitch: error: {SLIPS[0][2]}"]


@pytest.mark.parametrize("command,config", [("tstitch", "tstitch"), ("tstitch-generate", "generate"),
                                            ("tstitch-search", "search")])
def test_the_schema_is_also_checked_where_jobs_start(tmp_path, in_process, command, config):
    """SLURM and multirun jobs start in the command's main, not in its preflight: the same check runs there. (A
    Hydra flag such as -cn skips the preflight, as a job started by a launcher does.)"""
    r = in_process(command, "-cn", config, "batch_size=0", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and lines[-1] == f"{command}: error: batch_size=0 is not allowed: give an integer >= 1"
    assert not (tmp_path / "run" / "shards").exists()
