"""`tstitch-generate`: one allocation's sample set on Lightning (any devices/nodes), resumable, as samples.npz,
scored by the configured metric, logged to W&B and to results.jsonl like one row of the `tstitch` table. The work
is ``tstitch.jobs.generate.generate``; this is its Hydra glue."""
import logging
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig

from tstitch.cli import CONF, entry_point, fail, guard
from tstitch.cli.spelling import plain_groups, value
from tstitch.errors import ConfigError

log = logging.getLogger(__name__)

def summary(row, names, manifest):
    from tstitch.jobs import report

    ms = " + ".join(f"{n} {v * 1000:.2f}" for n, v in manifest.get("s_per_image_per_member", {}).items())
    parts = [f"{manifest['num_samples']} samples ({manifest['generated']} new, {manifest['resumed_from']} from "
             f"earlier shards) on {manifest['world_size']} device(s) in {manifest['seconds']:.1f} s"]
    if row.get("s_per_image"):
        parts.append(f"{row['s_per_image'] * 1000:.2f} ms/image/device ({ms} ms), "
                     f"{manifest['images_per_second']:.1f} images/s")
    if row.get("speedup"):
        rounds = manifest.get("timing_rounds")
        parts.append(f"{row['speedup']:.2f}x ({row['speedup_p25']:.2f}-{row['speedup_p75']:.2f}) vs {names[-1]} "
                     f"alone, {rounds} interleaved rounds" if rounds else f"{row['speedup']:.2f}x vs {names[-1]} alone")
    if row.get("timing_flag"):
        parts.append(f"timing: {row['timing_flag']}")
    if manifest.get("nonfinite_seeds"):
        parts.append(f"{len(manifest['nonfinite_seeds'])} non-finite samples (black images; seeds in manifest.json)")
    scores = manifest["scores"]
    if scores:
        parts.append(", ".join(f"{k} {report.fmt(k, v)}" for k, v in scores.items()))
    return "tstitch-generate: " + "; ".join(parts) + f"; {manifest['samples']}"


@hydra.main(version_base=None, config_path=CONF, config_name="generate")
@guard
def main(cfg):
    from tstitch.cli import schema
    from tstitch.jobs.engine import lock, stop
    from tstitch.jobs.generate import generate
    from tstitch.jobs.slurm import check_tasks

    schema.check(cfg, "generate")  # also in the preflight; again here for jobs started without it (SLURM, multirun)
    check_tasks(cfg.trainer)  # under SLURM: tasks must equal trainer.devices x trainer.num_nodes
    torch.set_num_threads(cfg.threads)
    sweep_for_ranks(sys.argv)
    try:
        with stop.on_signals():  # SIGTERM (SLURM), SIGINT, SIGHUP: exit 128 + signal with whole shards, resumable
            done = generate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except stop.Stopped:
        if lock.spawned():  # a rank Lightning started: its rank zero says it, and exits non-zero
            sys.exit(0)
        raise
    if done is not None:
        row, manifest = done
        log.info(summary(row, manifest["members"], manifest))


def sweep_for_ranks(argv, env=os.environ):
    """In a multirun, the ranks that Lightning starts on this machine (trainer.devices=2 on a CPU or GPUs without
    srun/torchrun) run this command again, with ``argv`` and the run directory added, and so the whole sweep beside
    this process, job for job: name this sweep's directory on ``argv`` (else theirs would be a ``${now}`` of their
    own) and leave Hydra's launch lines to this process. Once, before the first job's ranks start."""
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or "LOCAL_RANK" in env or "SUBMITIT_FOLDER" in env:
        return  # a single run (Lightning names its directory), a rank itself, or jobs a launcher started
    if not any(a.startswith("hydra.sweep.dir=") for a in argv[1:]):
        argv.append(f"hydra.sweep.dir={value(str(hydra_cfg.sweep.dir))}")
    if "hydra/hydra_logging=disabled" not in argv:
        argv.append("hydra/hydra_logging=disabled")


def check_resume(cfg, argv):
    """Before Hydra writes anything into a given run directory: refuse settings that differ from its samples'."""
    from tstitch.cli import run_dir_of
    from tstitch.jobs.generate import check_settings

    run_dir = run_dir_of(argv)
    if run_dir and "${" not in run_dir and not {"-m", "--multirun"} & set(argv):
        check_settings(cfg, run_dir)


def launched_run_dir(argv, env=os.environ):
    """The run directory override for ranks started by srun or torchrun, each of which runs this command: a
    ``${now}`` directory could differ between ranks by a second, so the job id names it instead."""
    if any(a.startswith("hydra.run.dir=") for a in argv) or {"-m", "--multirun"} & set(argv):
        return None
    if int(env.get("SLURM_NTASKS", "1")) > 1 and env.get("SLURM_JOB_ID"):
        return f"hydra.run.dir=outputs/generate/slurm-{env['SLURM_JOB_ID']}"
    if int(env.get("WORLD_SIZE", "1")) > 1:
        run_id = env.get("TORCHELASTIC_RUN_ID", "none")
        if run_id == "none":
            raise ConfigError("several processes were launched without a shared run directory; "
                              "give hydra.run.dir=... (the same for every rank)")
        return f"hydra.run.dir=outputs/generate/torchrun-{run_id}"
    return None


def entry():
    sys.argv[1:] = plain_groups(sys.argv[1:], "generate")  # +experiment=NAME: as experiment=NAME
    try:
        shared = launched_run_dir(sys.argv[1:])
    except ConfigError as e:
        fail(str(e), "generate")
    if shared:
        sys.argv.append(shared)
    entry_point(main, "generate", after=check_resume)()

if __name__ == "__main__":
    entry()
