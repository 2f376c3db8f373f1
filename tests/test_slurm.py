"""SLURM: the launcher presets (conf/hydra/launcher/) and the task checks (jobs/slurm.py) in one-line errors, then
a real one-node SLURM cluster on localhost running the README's example, the presets through
hydra-submitit-launcher and the sbatch templates of slurm/.

The cluster is the one users start, ``slurm/local_cluster.sh`` (Debian's slurmctld + slurmd + munge, installed by
./setup.sh), started by the ``cluster`` fixture as root in a temporary TSTITCH_SLURM_DIR and stopped after the
module, also when a test fails. It has no slurmdbd: the script's ``sacct`` answers from slurmctld's job-completion
log, which is what submitit asks when a job left no result (e.g. one that exited with an error)."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from tstitch.cli import CONF
from tstitch.errors import ConfigError
from tstitch.jobs.slurm import check_launcher, check_tasks, device_count, node_gpus

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESETS = sorted(p.stem for p in (Path(CONF) / "hydra" / "launcher").glob("*.yaml"))
CPU = {"accelerator": "cpu", "devices": 1, "num_nodes": 1}


def slurm(**env):
    """A SLURM step's environment: job 7, one node, plus ``env``."""
    return {"SLURM_JOB_ID": "7", "SLURM_NNODES": "1", "SLURM_STEP_ID": "0", **env}


# ------------------------------------------------------------------------------------------------- task checks

@pytest.mark.parametrize("skipped,checked", [
    ({}, slurm(SLURM_NTASKS="1")),  # outside SLURM
    ({"SLURM_JOB_ID": "7"}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}),  # sbatch without --ntasks: nothing to compare
    (slurm(SLURM_NTASKS="1", SLURM_JOB_NAME="interactive"), slurm(SLURM_NTASKS="1", SLURM_JOB_NAME="gen")),  # opt-out
])
def test_tasks_are_not_checked_outside_slurm_or_without_a_task_count(skipped, checked):
    """Each environment that skips the check, beside the one change that makes the same trainer checked."""
    check_tasks({**CPU, "devices": 4}, env=skipped)
    with pytest.raises(ConfigError, match=r"^SLURM job has 1 task but trainer.devices=4 x trainer.num_nodes=1 need 4"):
        check_tasks({**CPU, "devices": 4}, env=checked)


def test_one_task_for_two_devices_is_one_line_naming_the_fix():
    with pytest.raises(ConfigError) as e:
        check_tasks({**CPU, "devices": 2}, env=slurm(SLURM_NTASKS="1"))
    assert str(e.value) == ("SLURM job has 1 task but trainer.devices=2 x trainer.num_nodes=1 need 2: launch with srun "
                            "and --ntasks-per-node=2, or set trainer.devices=1")


@pytest.mark.parametrize("trainer,env,message", [
    ({"devices": 1, "num_nodes": 1}, slurm(SLURM_NTASKS="4", SLURM_NTASKS_PER_NODE="4"),
     "SLURM job has 4 tasks but trainer.devices=1 x trainer.num_nodes=1 need 1: launch with srun and "
     "--ntasks-per-node=1, or set trainer.devices=4"),
    ({"devices": 4, "num_nodes": 1}, slurm(SLURM_NTASKS="8", SLURM_NTASKS_PER_NODE="4", SLURM_NNODES="2"),
     "SLURM job has 8 tasks but trainer.devices=4 x trainer.num_nodes=1 need 4: launch with srun and "
     "--ntasks-per-node=4 --nodes=1, or set trainer.devices=4 trainer.num_nodes=2"),
    ({"accelerator": "gpu", "devices": -1, "num_nodes": 2}, slurm(SLURM_NTASKS="2", SLURM_NNODES="2",
                                                                  SLURM_GPUS_ON_NODE="4"),
     "SLURM job has 2 tasks but trainer.devices=-1 (4 devices) x trainer.num_nodes=2 need 8: launch with srun and "
     "--ntasks-per-node=4, or set trainer.devices=1"),
])
def test_task_count_mismatches_name_both_fixes(trainer, env, message):
    with pytest.raises(ConfigError) as e:
        check_tasks(trainer, env=env)
    assert str(e.value) == message


@pytest.mark.parametrize("trainer,env,changed", [
    ({**CPU, "devices": 2}, slurm(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2"), {"SLURM_NTASKS": "3"}),
    ({**CPU, "devices": 2, "num_nodes": 2}, slurm(SLURM_NTASKS="4", SLURM_NNODES="2"), {"SLURM_NTASKS": "2"}),
    ({"accelerator": "gpu", "devices": -1, "num_nodes": 1}, slurm(SLURM_NTASKS="4", SLURM_GPUS_ON_NODE="4"),
     {"SLURM_GPUS_ON_NODE": "2"}),
    ({"accelerator": "gpu", "devices": -1, "num_nodes": 1}, slurm(SLURM_NTASKS="2", CUDA_VISIBLE_DEVICES="0,1"),
     {"CUDA_VISIBLE_DEVICES": "0"}),
    ({"accelerator": "gpu", "devices": -1, "num_nodes": 1}, slurm(SLURM_NTASKS="3"),  # GPUs unknown: skipped
     {"SLURM_GPUS_ON_NODE": "2"}),
    ({"accelerator": "gpu", "devices": [0, 1], "num_nodes": 1}, slurm(SLURM_NTASKS="2"), {"SLURM_NTASKS": "1"}),
    ({"accelerator": "gpu", "devices": "2", "num_nodes": 1}, slurm(SLURM_NTASKS="2"), {"SLURM_NTASKS": "4"}),
])
def test_matching_or_unknown_task_counts_pass(trainer, env, changed):
    """Each passing case beside one changed variable that makes the tasks and devices disagree."""
    check_tasks(trainer, env=env)
    tasks = int({**env, **changed}["SLURM_NTASKS"])
    with pytest.raises(ConfigError, match=rf"^SLURM job has {tasks} tasks? but trainer\.devices="):
        check_tasks(trainer, env={**env, **changed})


def test_tasks_of_a_batch_script_without_srun_are_named():
    env = slurm(SLURM_NTASKS="2")
    del env["SLURM_STEP_ID"]
    with pytest.raises(ConfigError, match=r"^SLURM job has 2 tasks but this process runs in the batch script, not "
                                          r"as one of them: start the command with srun \(srun tstitch-generate"):
        check_tasks({**CPU, "devices": 2}, env=env)


def test_trainer_configs_are_checked_as_composed():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        ddp = compose(config_name="generate", overrides=["trainer=ddp"]).trainer
    check_tasks(ddp, env=slurm(SLURM_NTASKS="8", SLURM_GPUS_PER_NODE="8"))
    with pytest.raises(ConfigError, match=r"trainer.devices=-1 \(8 devices\) x trainer.num_nodes=1 need 8"):
        check_tasks(ddp, env=slurm(SLURM_NTASKS="1", SLURM_GPUS_PER_NODE="h100:8"))


@pytest.mark.parametrize("env,gpus", [
    ({"SLURM_GPUS_ON_NODE": "4"}, 4), ({"SLURM_GPUS_PER_NODE": "a100:2,v100:1"}, 3), ({"SLURM_GPUS_PER_NODE": "8"}, 8),
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 3), ({"CUDA_VISIBLE_DEVICES": ""}, 0), ({}, None),
])
def test_node_gpus_from_slurm_or_cuda(env, gpus):
    assert node_gpus(env) == gpus
    assert device_count(-1, "gpu", env) == gpus and device_count(-1, "cpu", env) is None


# --------------------------------------------------------------------------------------------- launcher presets

def hydra_cfg(config_name, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("config_name", ["tstitch", "generate"])
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_as_submitit_slurm_with_the_check(preset, config_name):
    cfg = hydra_cfg(config_name, f"hydra/launcher={preset}", "hydra.launcher.partition=p",
                    "hydra.launcher.account=a", "hydra.launcher.qos=q", "hydra.launcher.timeout_min=5")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.qos, launcher.timeout_min) == ("p", "a", "q", 5)
    assert cfg.hydra.callbacks.tstitch_slurm._target_ == "tstitch.jobs.slurm.LauncherCheck"
    assert launcher.tasks_per_node == (launcher.gpus_per_node or 1) and launcher.nodes == 1
    assert hydra_cfg(config_name, f"hydra/launcher={preset}").hydra.launcher.partition is None


def test_preset_without_partition_is_one_line():
    with pytest.raises(ConfigError) as e:
        check_launcher(hydra_cfg("generate", "hydra/launcher=slurm_1gpu"))
    assert str(e.value) == ("hydra/launcher=slurm_1gpu submits to SLURM but names no partition: add "
                            "hydra.launcher.partition=NAME (sinfo lists them)")


@pytest.mark.parametrize("overrides,error", [
    (["hydra/launcher=slurm_multi", "trainer=ddp"], None),  # devices=-1: all 8 GPUs the launcher asks for
    (["hydra/launcher=slurm_multi", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "trainer=ddp",
      "trainer.devices=4", "trainer.num_nodes=2"], None),
    (["hydra/launcher=slurm_multi", "hydra.launcher.nodes=2", "trainer=ddp",
      "trainer.devices=${hydra:launcher.tasks_per_node}", "trainer.num_nodes=${hydra:launcher.nodes}"], None),
    (["hydra/launcher=slurm_1gpu", "trainer=gpu"], None),
    (["hydra/launcher=slurm_multi", "trainer=gpu"],
     "hydra.launcher.tasks_per_node=8 x hydra.launcher.nodes=1 start 8 tasks per job but trainer.devices=1 x "
     "trainer.num_nodes=1 use 1: set trainer.devices=8 trainer.num_nodes=1, or hydra.launcher.tasks_per_node=1 "
     "hydra.launcher.nodes=1"),
    (["hydra/launcher=slurm_multi", "hydra.launcher.nodes=2", "trainer=ddp"], "trainer.num_nodes=1 use 8"),
])
def test_launcher_tasks_must_match_the_trainer(overrides, error, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    cfg = hydra_cfg("generate", "hydra.launcher.partition=gpu", *overrides)
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = overrides
    if error is None:
        check_launcher(cfg)
    else:
        with pytest.raises(ConfigError) as e:
            check_launcher(cfg)
        assert error in str(e.value)
    with open_dict(cfg.hydra):  # a swept trainer differs per job: not compared before submitting
        cfg.hydra.overrides.task = [*overrides, "trainer.devices=1,2"]
    check_launcher(cfg)


def test_missing_sbatch_is_one_line(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"^hydra/launcher=local_slurm submits to SLURM, but sbatch is not on PATH"):
        check_launcher(hydra_cfg("tstitch", "hydra/launcher=local_slurm", "hydra.launcher.partition=debug"))


@pytest.mark.parametrize("exe,args,message", [
    ("tstitch", ["hydra/launcher=slurm_1gpu", "+debug=tiny", "sweep=null"],
     "tstitch: error: hydra/launcher=slurm_1gpu submits to SLURM but names no partition: add "
     "hydra.launcher.partition=NAME (sinfo lists them)"),
    ("tstitch-generate", ["hydra/launcher=slurm_multi", "hydra.launcher.partition=gpu", "trainer=gpu"],
     "tstitch-generate: error: hydra.launcher.tasks_per_node=8 x hydra.launcher.nodes=1 start 8 tasks per job but "
     "trainer.devices=1 x trainer.num_nodes=1 use 1: set trainer.devices=8 trainer.num_nodes=1, or "
     "hydra.launcher.tasks_per_node=1 hydra.launcher.nodes=1"),
])
def test_multirun_with_a_bad_preset_stops_before_submitting(tmp_path, exe, args, message, in_process):
    r = in_process(exe, "-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == message, r.stderr[-2000:]
    assert not (tmp_path / "sweep" / ".submitit").exists()


def test_array_template_refuses_an_index_past_its_allocations():
    r = subprocess.run(["bash", str(ROOT / "slurm" / "sweep_array.sbatch")], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_JOB_ID": "5"})
    assert r.returncode == 2 and r.stderr.strip() == ("sweep_array.sbatch: error: array index 11 but ALLOCATIONS has "
                                                      "11 entries; submit with --array=0-10")


# ----------------------------------------------------------------------------------------- a real SLURM cluster

SCRIPT = ROOT / "slurm" / "local_cluster.sh"


def test_local_cluster_script_without_a_cluster(tmp_path):
    env = {**os.environ, "TSTITCH_SLURM_DIR": str(tmp_path)}
    r = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 3 and r.stdout.startswith(f"local SLURM in {tmp_path} is not running")
    r = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, timeout=30, env=env)
    assert r.stdout.splitlines() == [f"export SLURM_CONF={tmp_path}/slurm.conf", f"export PATH={tmp_path}/bin:$PATH"]
    r = subprocess.run(["bash", str(SCRIPT), "restart"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and r.stderr.startswith(f"usage: {SCRIPT} start|stop|status|env")


class Cluster:
    """The environment of a shell pointed at the cluster in ``root`` (what ``eval "$(local_cluster.sh start)"``
    sets), with helpers to run commands there and wait for jobs."""

    def __init__(self, root):
        self.root = root
        self.work = root / "work"  # where commands run (submitit and sbatch jobs start there)
        self.work.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # e.g. pytest inside a job
        self.env.update(TSTITCH_SLURM_DIR=str(root), SLURM_CONF=str(root / "slurm.conf"), OMP_NUM_THREADS="1",
                        WANDB_MODE="disabled", TSTITCH_CACHE=str(root / "cache"),
                        PATH=os.pathsep.join([str(root / "bin"), self.env.get("PATH", ""), "/usr/sbin", "/sbin"]))

    def run(self, *cmd, timeout=240, check=True, **env):
        r = subprocess.run([str(c) for c in cmd], cwd=self.work, env={**self.env, **env}, capture_output=True,
                           text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stderr[-3000:]}"
        return r

    def logs(self):
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log")))

    def wait_idle(self, timeout=120):
        """Until no job is queued or running (the node is idle again)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.run("squeue", "-h", check=False).stdout.strip():
                return
            time.sleep(0.3)
        pytest.fail(f"jobs still queued after {timeout} s:\n{self.run('squeue', check=False).stdout}\n{self.logs()}")

    def sbatch(self, *args, **env):
        """Submit, wait for the job (sbatch --wait polls at growing intervals, up to half a minute late) and return
        the final state of each of its tasks, e.g. {"8_0": "COMPLETED", "8_1": "FAILED"}."""
        job = self.run("sbatch", "--parsable", *args, **env).stdout.strip().split(";")[0]
        self.wait_idle()
        states = self.run("sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job).stdout.splitlines()[1:]
        return dict(line.split("|")[:2] for line in states)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node SLURM cluster (node `localhost`, partition `debug`, all CPUs of the machine) started by
    slurm/local_cluster.sh, ready for jobs."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [exe for exe in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scancel")
               if shutil.which(exe, path=search) is None]
    if missing:
        pytest.skip(f"no local SLURM: {', '.join(missing)} not installed (./setup.sh installs Debian's slurmctld "
                    "slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.fail("the local SLURM cluster runs slurmd, which starts the jobs, as root: run the tests as root")
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        r = c.run("bash", SCRIPT, "start", timeout=120, check=False)
        if r.returncode != 0:
            pytest.fail(f"local SLURM did not come up:\n{r.stderr[-3000:]}")
        assert r.stdout.splitlines() == [f"export SLURM_CONF={c.root}/slurm.conf", f"export PATH={c.root}/bin:$PATH"]
        assert "local SLURM up: node localhost, partition debug" in r.stderr
        yield c
    finally:
        c.run("bash", SCRIPT, "stop", timeout=120, check=False)


def table(path):
    """The fractions column of the report of ``path`` (tstitch-report writes it to ``path``/report)."""
    return [line.split("|")[1].strip() for line in (path / "report" / "results.md").read_text().splitlines()[2:]]


@pytest.mark.slow
def test_readme_example_runs_as_written(cluster):
    """The README's "Try SLURM on one machine" block, run by bash from a directory like the repository root (its
    .venv and slurm/): the start line finds the fixture's cluster running and points the shell at it; the preset
    multirun is one job array; the array template's three tasks complete; both report."""
    block = re.search(r"## Try SLURM on one machine\n.*?```bash\n(.*?)```", (ROOT / "docs/slurm.md").read_text(),
                      re.S).group(1)
    for name in (".venv", "slurm"):
        (cluster.work / name).symlink_to(Path(sys.executable).parents[1] if name == ".venv" else ROOT / name)
    env = {k: v for k, v in cluster.env.items() if k not in ("SLURM_CONF",)}
    env["PATH"] = os.environ["PATH"]  # as a fresh shell: the block's first line sets SLURM_CONF and PATH itself
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cluster.work, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "local SLURM already running" in r.stderr and "Submitit 'slurm' sweep output dir" in r.stderr + r.stdout
    preset = cluster.work / "runs" / "slurm_preset"
    script = next((preset / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --array=0-1" in script and "srun " in script
    assert table(preset) == ["0 : 1", "1 : 0"]
    assert table(cluster.work / "runs" / "slurm_array") == ["0 : 1", "0.4 : 0.6"]
    cluster.wait_idle()  # submitit returns on the jobs' results; slurmctld logs their ends right after
    done = (cluster.root / "jobcomp.txt").read_text()
    assert len(re.findall(r"JobState=COMPLETED .* ArrayTaskId=[01] ", done)) == 4, done
    assert len(list(cluster.work.glob("slurm-tstitch-sweep-*_[01].out"))) == 2


@pytest.mark.slow
def test_failed_configuration_leaves_the_others_results_intact(cluster, in_process):
    """Job 0 fails on its node (its checkpoint is missing there; the command line itself is valid), job 1 runs.
    (The report reads files only: it runs in this process.)"""
    sweep = cluster.work / "failing"
    large = ("stitch.members.large.checkpoint=/nonexistent/dit_large.safetensors,"
             "pkg://tstitch/data/toy/weights/dit_large.safetensors")
    r = cluster.run(BIN / "tstitch", "-m", "hydra/launcher=local_slurm", "hydra.launcher.partition=debug",
                    "+debug=tiny", "sweep=null", "stitch.fractions=[1.0,0.0]", large, "metric=none",
                    f"hydra.sweep.dir={sweep}", check=False)
    assert r.returncode != 0  # the launcher reports the failed job (submitit records our error, re-raised in jobs)
    assert "checkpoint not found: /nonexistent/dit_large.safetensors; fix the path" in r.stderr, r.stderr[-3000:]
    cluster.wait_idle()
    assert not (sweep / "0" / "results.jsonl").exists()
    rows = [json.loads(line) for line in (sweep / "1" / "results.jsonl").read_text().splitlines()]
    assert [row["fractions"] for row in rows] == [[1.0, 0.0]] and rows[0]["nfe"] == [3, 0]
    r = in_process("tstitch-report", sweep, "--out", sweep / "report")
    assert r.returncode == 1 and "job 0 of 2" in r.stderr and "has no results.jsonl" in r.stderr, r.stderr[-2000:]
    assert table(sweep) == ["1 : 0"]  # the finished job is reported; the missing one is named, exit 1


@pytest.mark.slow
def test_multi_task_preset_is_one_ddp_run_over_srun_tasks(cluster):
    """slurm_multi on CPUs: 2 tasks per node started by submitit's srun, joined by Lightning into one DDP run
    (trainer.devices and num_nodes follow the launcher)."""
    sweep = cluster.work / "multi"
    cluster.run(BIN / "tstitch-generate", "-m", "hydra/launcher=slurm_multi", "hydra.launcher.partition=debug",
                "hydra.launcher.gpus_per_node=null", "hydra.launcher.tasks_per_node=2",
                "hydra.launcher.cpus_per_task=1", "trainer.accelerator=cpu", "trainer.strategy=ddp",
                "trainer.devices=${hydra:launcher.tasks_per_node}", "trainer.num_nodes=${hydra:launcher.nodes}",
                "num_samples=8", "batch_size=4", "solver.steps=3", "metric=none", "logger=none",
                "stitch.fractions=[0.5,0.5]", f"hydra.sweep.dir={sweep}")
    manifest = json.loads((sweep / "0" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["num_samples"] == 8 and manifest["generated"] == 8
    assert sorted(p.name[-6:] for p in (sweep / "0" / "shards").glob("*.npz")) == ["r0.npz", "r1.npz"]


def sbatch(cluster, script, *options, overrides=(), **env):
    """Submit a template of slurm/ as CPU jobs (no GPUs, one CPU per task, the toy zoo at 3 steps) and wait for it:
    the final state of each task."""
    return cluster.sbatch("--partition=debug", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10", *options,
                          ROOT / "slurm" / script, "trainer.accelerator=cpu", "solver.steps=3", "metric=none",
                          "logger=none", *overrides, TSTITCH_GENERATE=str(BIN / "tstitch-generate"), **env)


def last_output(cluster):
    """The tail of the newest job output file in the work directory (a failed job's message)."""
    outs = sorted(cluster.work.glob("slurm-*.out"), key=lambda p: p.stat().st_mtime)
    return f"{outs[-1].name}: {outs[-1].read_text()[-3000:]}" if outs else "no slurm-*.out"


@pytest.mark.slow
def test_multinode_template_runs_ddp_and_resumes_from_its_shards(cluster):
    run = cluster.work / "big"
    states = sbatch(cluster, "generate_multinode.sbatch", "--nodes=1", "--ntasks-per-node=2",
                    overrides=["num_samples=8", "batch_size=4"], RUN_DIR=str(run))
    assert list(states.values()) == ["COMPLETED"], (states, last_output(cluster))
    first = json.loads((run / "manifest.json").read_text())
    assert first["world_size"] == 2 and first["generated"] == 8
    states = sbatch(cluster, "generate_multinode.sbatch", "--nodes=1", "--ntasks-per-node=2",  # resubmitted,
                    overrides=["num_samples=12", "batch_size=4"], RUN_DIR=str(run))  # e.g. after its time ran out
    assert list(states.values()) == ["COMPLETED"], (states, last_output(cluster))
    second = json.loads((run / "manifest.json").read_text())
    assert (second["resumed_from"], second["generated"], second["num_samples"]) == (8, 4, 12)


def report(in_process, sweep):
    """tstitch-report of ``sweep`` into ``sweep``/report, in this process (it reads files only)."""
    r = in_process("tstitch-report", sweep, "--out", sweep / "report")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_array_template_reruns_only_the_failed_task(cluster, in_process):
    sweep = cluster.work / "array"
    overrides = ["num_samples=8", "batch_size=8"]
    states = sbatch(cluster, "sweep_array.sbatch", "--array=0-2", overrides=overrides, SWEEP_DIR=str(sweep),
                    ALLOCATIONS="[0.0,1.0] [0.5,0.6] [1.0,0.0]")
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"], states
    job = next(iter(states)).split("_")[0]
    assert states[f"{job}_1"] == "FAILED" and not (sweep / "1" / "results.jsonl").exists()
    assert "sum to 1.1" in next(cluster.work.glob(f"slurm-tstitch-sweep-{job}_1.out")).read_text()
    kept = {k: (sweep / k / "samples.npz").stat().st_mtime_ns for k in ("0", "2")}
    report(in_process, sweep)
    assert table(sweep) == ["0 : 1", "1 : 0"]
    states = sbatch(cluster, "sweep_array.sbatch", "--array=1", overrides=overrides, SWEEP_DIR=str(sweep),
                    ALLOCATIONS="[0.0,1.0] [0.5,0.5] [1.0,0.0]")  # the fixed allocation, task 1 alone
    assert list(states.values()) == ["COMPLETED"], states
    assert {k: (sweep / k / "samples.npz").stat().st_mtime_ns for k in ("0", "2")} == kept
    report(in_process, sweep)  # the earlier report is not a run
    assert table(sweep) == ["0 : 1", "0.5 : 0.5", "1 : 0"]


@pytest.mark.slow
def test_task_check_reads_real_srun_and_batch_environments(cluster):
    code = ("import sys; from tstitch.jobs.slurm import check_tasks; "
            "check_tasks({'accelerator': 'cpu', 'devices': int(sys.argv[1]), 'num_nodes': 1}); print('ok')")
    r = cluster.run("srun", "--partition=debug", "--ntasks=1", sys.executable, "-c", code, "2", check=False)
    assert r.returncode != 0 and ("SLURM job has 1 task but trainer.devices=2 x trainer.num_nodes=1 need 2: launch "
                                  "with srun and --ntasks-per-node=2, or set trainer.devices=1") in r.stderr
    r = cluster.run("srun", "--partition=debug", "--ntasks-per-node=2", sys.executable, "-c", code, "2")
    assert r.stdout.split() == ["ok", "ok"]
    out = cluster.work / "batch.out"
    states = cluster.sbatch("--partition=debug", "--ntasks-per-node=2", f"--output={out}",
                            f"--wrap={sys.executable} -c \"{code}\" 2")
    assert list(states.values()) == ["FAILED"]
    assert "this process runs in the batch script, not as one of them" in out.read_text()
