"""W&B runs as its users expect: named by the allocation(s), grouped by the sweep, tagged with the experiment and
the command; the logged config holds the allocations the run ran."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from tstitch.cli import CONF
from tstitch.jobs import tracking


def job(config_name, overrides, sweep_dir=None):
    """Hydra's config of one job of ``config_name`` with ``overrides``; a multirun job when ``sweep_dir`` is given."""
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose(config_name, overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN if sweep_dir else RunMode.RUN
        cfg.hydra.sweep.dir = sweep_dir or cfg.hydra.sweep.dir
        cfg.hydra.overrides.task = overrides
        cfg.hydra.job.config_name = config_name
    return cfg.hydra


def test_multirun_job_is_named_by_allocation_and_overrides_grouped_by_sweep_tagged_by_experiment():
    hydra = job("tstitch", ["experiment=toy_samplers", "solver=ddpm", "solver.steps=10"], sweep_dir="runs/samplers")
    sweep = [[f, round(1 - f, 6)] for f in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)]
    assert tracking.identity(sweep, hydra, env={}) == {
        "name": "0:1..1:0 x7 solver=ddpm solver.steps=10", "group": "runs/samplers",
        "tags": ["toy_samplers", "tstitch"]}
    hydra = job("generate", ["stitch.fractions=[0.4,0.6]", "num_samples=8"], sweep_dir="runs/gen")
    assert tracking.identity([[0.4, 0.6]], hydra, env={}) == {
        "name": "0.4:0.6 num_samples=8", "group": "runs/gen", "tags": ["tstitch-generate"]}


def test_single_run_is_grouped_only_by_a_slurm_array():
    hydra = job("generate", ["experiment=dit_s_xl", "stitch.fractions=[0.4,0.6]"])
    assert tracking.identity([[0.4, 0.6]], hydra, env={}) == {"name": "0.4:0.6", "group": None,
                                                              "tags": ["dit_s_xl", "tstitch-generate"]}
    assert tracking.identity([[0.4, 0.2, 0.4]], None, env={"SLURM_ARRAY_JOB_ID": "17"}) == {
        "name": "0.4:0.2:0.4", "group": "slurm-array-17", "tags": []}


def test_wandb_logger_takes_the_identity_and_the_logger_keys(tmp_path):
    logger_cfg = OmegaConf.create({"mode": "offline", "project": "p", "entity": None, "name": None, "group": None,
                                   "tags": ["mine"]})
    init = tracking.wandb_logger(logger_cfg, tmp_path, [[0.3, 0.7]])._wandb_init
    assert (init["name"], init["group"], init["tags"]) == ("0.3:0.7", None, ["mine"]) and "anonymous" not in init
    logger_cfg.name, logger_cfg.group = "by hand", "g"
    init = tracking.wandb_logger(logger_cfg, tmp_path, [[0.3, 0.7]])._wandb_init
    assert (init["name"], init["group"]) == ("by hand", "g")
    assert tracking.wandb_logger(OmegaConf.create({"mode": "disabled"}), tmp_path) is None


@pytest.mark.parametrize("allocations,logged", [([[0.4, 0.6]], [0.4, 0.6]),
                                                ([[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]])])
def test_logged_config_holds_the_allocations_run(allocations, logged):
    config = {"stitch": {"fractions": [0.4, 0.6], "rule": "steps"}, "num_samples": 8}
    out = tracking.run_config(config, allocations)
    assert out["stitch"] == {"fractions": logged, "rule": "steps"} and out["num_samples"] == 8
    assert config["stitch"]["fractions"] == [0.4, 0.6]  # the composed config is left as it was
