"""SLURM checks: a job's tasks must match Lightning's devices x nodes, and a SLURM launcher preset needs a partition.

Both fail in one line naming the fix, before anything is sampled or submitted (see conf/hydra/launcher/ and
slurm/)."""
import os
import re
import shutil
import sys

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from tstitch.errors import ConfigError, error


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def node_gpus(env):
    """GPUs of this node as SLURM or CUDA report them, or None when nothing says."""
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    per_node = env.get("SLURM_GPUS_PER_NODE")  # "4", "a100:4" or "a100:2,v100:1"
    if per_node and re.fullmatch(r"([\w-]+:)?\d+(,([\w-]+:)?\d+)*", per_node):
        return sum(int(part.rsplit(":", 1)[-1]) for part in per_node.split(","))
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible not in ("NoDevFiles",):
        return len([d for d in visible.split(",") if d.strip()])
    return None


def device_count(devices, accelerator, env):
    """The number of processes Lightning starts per node for ``devices``, or None when it depends on what the node
    has and the environment does not say (devices=-1 or "auto" on GPUs)."""
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices) if re.fullmatch(r"-?\d+", devices) else devices
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    if devices == -1 or devices == "auto":
        if accelerator == "cpu":
            return 1 if devices == "auto" else None
        return node_gpus(env)
    return devices if isinstance(devices, int) and devices > 0 else None


def check_tasks(trainer, env=os.environ):
    """Under SLURM (``SLURM_JOB_ID`` and ``SLURM_NTASKS`` set), each Lightning process must be one SLURM task started
    by srun, and the tasks must be ``trainer.devices x trainer.num_nodes``: Lightning takes the world size from
    SLURM, so with fewer tasks it silently runs on fewer devices (1 task, devices=2: one process samples everything
    while the second GPU idles), and with more every task samples the whole set into the same run directory."""
    if not env.get("SLURM_JOB_ID") or "SLURM_NTASKS" not in env:
        return
    if env.get("SLURM_JOB_NAME") in ("bash", "interactive"):  # Lightning's own opt-out of SLURM
        return
    tasks = int(env["SLURM_NTASKS"])
    if tasks > 1 and "SLURM_STEP_ID" not in env and "SLURM_STEPID" not in env:
        raise ConfigError(f"SLURM job has {tasks} tasks but this process runs in the batch script, not as one of "
                          "them: start the command with srun (srun tstitch-generate ...)")
    devices = device_count(trainer.get("devices", 1), trainer.get("accelerator"), env)
    if devices is None:
        return
    nodes = int(trainer.get("num_nodes", 1) or 1)
    need = devices * nodes
    if tasks == need:
        return
    raw = trainer.get("devices")
    shown = raw if isinstance(raw, int) and raw > 0 else f"{raw} ({_plural(devices, 'device')})"
    slurm_nodes = int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")) or 1)
    per_node = env.get("SLURM_NTASKS_PER_NODE", "")
    per_node = int(per_node) if per_node.isdigit() else max(tasks // slurm_nodes, 1)
    fix = f"trainer.devices={per_node}" + (f" trainer.num_nodes={slurm_nodes}" if slurm_nodes != nodes else "")
    launch = f"--ntasks-per-node={devices}" + (f" --nodes={nodes}" if nodes != slurm_nodes else "")
    raise ConfigError(f"SLURM job has {_plural(tasks, 'task')} but trainer.devices={shown} x "
                      f"trainer.num_nodes={nodes} need {need}: launch with srun and {launch}, or set {fix}")


def check_launcher(config):
    """A submitit SLURM launcher config (``hydra.launcher``) must name a partition, its tasks must match the
    trainer's devices x nodes (``tstitch-generate``, unless the trainer is swept), and sbatch must exist."""
    launcher = OmegaConf.select(config, "hydra.launcher")
    if launcher is None or not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return
    choice = OmegaConf.select(config, "hydra.runtime.choices", default={}).get("hydra/launcher", "submitit_slurm")
    if OmegaConf.is_missing(launcher, "partition") or launcher.partition is None:
        raise ConfigError(f"hydra/launcher={choice} submits to SLURM but names no partition: add "
                          "hydra.launcher.partition=NAME (sinfo lists them)")
    _check_trainer(config, launcher)
    if shutil.which("sbatch") is None:
        raise ConfigError(f"hydra/launcher={choice} submits to SLURM, but sbatch is not on PATH: run this on a "
                          "machine of the cluster (a login node), or drop hydra/launcher")


def _check_trainer(config, launcher):
    """``tstitch-generate``'s trainer against the launcher: tasks per job = trainer.devices x trainer.num_nodes."""
    trainer = config.get("trainer")
    overrides = OmegaConf.select(config, "hydra.overrides.task", default=None)
    overrides = OverridesParser.create().parse_overrides(
        OmegaConf.to_container(overrides, resolve=False) if overrides is not None else [])
    if trainer is None or any(o.key_or_group.startswith("trainer") and o.is_sweep_override() for o in overrides):
        return  # nothing to compare, or a different trainer per job (e.g. -m trainer.devices=1,2)
    gpus = launcher.get("gpus_per_node")
    raw = _value(config, trainer, "devices", 1)
    devices = device_count(raw, _value(config, trainer, "accelerator"),
                           {"SLURM_GPUS_PER_NODE": str(gpus)} if gpus else {})
    nodes, tasks, slurm_nodes = _value(config, trainer, "num_nodes", 1), launcher.tasks_per_node, launcher.nodes
    if devices is None or not all(isinstance(n, int) for n in (nodes, tasks, slurm_nodes)):
        return
    if (devices, nodes) != (tasks, slurm_nodes):
        raise ConfigError(f"hydra.launcher.tasks_per_node={tasks} x hydra.launcher.nodes={slurm_nodes} start "
                          f"{tasks * slurm_nodes} tasks per job but trainer.devices={raw} x trainer.num_nodes={nodes} "
                          f"use {devices * nodes}: set trainer.devices={tasks} trainer.num_nodes={slurm_nodes}, or "
                          f"hydra.launcher.tasks_per_node={devices} hydra.launcher.nodes={nodes}")


def _value(config, node, key, default=None):
    """``node[key]``, where an interpolation into the Hydra config (``${hydra:launcher.nodes}``) is looked up in
    ``config`` itself: Hydra resolves those only inside a job."""
    try:
        return node.get(key, default)
    except InterpolationResolutionError:  # "HydraConfig was not set": the jobs have not started
        raw = OmegaConf.to_container(node, resolve=False).get(key)
        match = re.fullmatch(r"\$\{hydra:([\w.]+)\}", str(raw))
        return OmegaConf.select(config, f"hydra.{match.group(1)}") if match else None


class LauncherCheck(Callback):
    """Hydra callback of the SLURM launcher presets: checks the launcher before a multirun submits anything; a bad
    one stops the command with one line on stderr and exit code 2 (Hydra would print a traceback)."""

    def on_multirun_start(self, config, **kwargs):
        try:
            check_launcher(config)
        except ConfigError as e:
            error(config.hydra.job.config_name, e)
            sys.exit(2)
