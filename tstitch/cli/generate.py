"""`tstitch-generate`: one allocation's sample set on Lightning (any devices/nodes), resumable, as samples.npz,
scored by the configured metric, logged to W&B and to results.jsonl like one row of the `tstitch` table."""
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, error, guard
from tstitch.errors import ConfigError

log = logging.getLogger(__name__)
TIMING = ("s_per_image", "images_per_second", "s_per_image_per_member", "decode_s_per_image", "images_timed",
          "baseline_s_per_image", "speedup", "warmup_seconds", "peak_memory_gb")


def git_sha():
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def check_identity(out, identity):
    """Shards in a run directory must come from one sampling configuration: refuse to resume with another."""
    path = out / "identity.json"
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as stored
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != identity:
            diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise ConfigError(f"{out} holds samples of another configuration (differs in: {', '.join(diff)}); "
                              "resume with the same settings or choose a new hydra.run.dir=...")
    else:  # every rank of a torchrun/srun launch may get here at once: write whole files only
        tmp = path.with_name(f".identity.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(identity, indent=2))
        tmp.replace(path)


def check_sizes(cfg):
    for key in ("num_samples", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise ConfigError(f"{key} must be a positive integer, not {cfg[key]!r} ({key}=...)")


def previous(out):
    """What an earlier session of this run measured (kept when a resumed run has nothing left to generate)."""
    path = out / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def summary(row, names, manifest):
    from tstitch import report

    ms = " + ".join(f"{n} {v * 1000:.2f}" for n, v in manifest.get("s_per_image_per_member", {}).items())
    parts = [f"{manifest['num_samples']} samples ({manifest['generated']} new, {manifest['resumed_from']} from "
             f"earlier shards) on {manifest['world_size']} device(s) in {manifest['seconds']:.1f} s"]
    if row.get("s_per_image"):
        parts.append(f"{row['s_per_image'] * 1000:.2f} ms/image/device ({ms} ms), "
                     f"{manifest['images_per_second']:.1f} images/s")
    if row.get("speedup"):
        parts.append(f"{row['speedup']:.2f}x vs {names[-1]} alone")
    scores = manifest["scores"]
    if scores:
        parts.append(", ".join(f"{k} {report.fmt(k, v)}" for k, v in scores.items()))
    return "tstitch-generate: " + "; ".join(parts) + f"; {manifest['samples']}"


@hydra.main(version_base=None, config_path=CONF, config_name="generate")
@guard
def main(cfg):
    import lightning as L

    from tstitch import fidelity, metrics, report, tracking
    from tstitch.engine.module import Generation, RankShare, Seeds
    from tstitch.engine.progress import Progress
    from tstitch.engine.writer import ShardWriter, done, export_npz, write_manifest
    from tstitch.run import codec_name, load_stitch, prompt_list, sample_options
    from tstitch.slurm import check_tasks
    from tstitch.stitch import check_fractions

    check_sizes(cfg)
    check_tasks(cfg.trainer)  # under SLURM: tasks must equal trainer.devices x trainer.num_nodes
    torch.set_num_threads(cfg.threads)
    out = Path(HydraConfig.get().runtime.output_dir)
    members, codec = load_stitch(cfg)
    names = [m.name for m in members]
    fractions = check_fractions(cfg.stitch.fractions, len(members))
    options = sample_options(cfg, fractions)
    metric = metrics.build(cfg.get("metric"))  # before sampling: a bad reference fails now, not after hours
    wanted = list(range(cfg.seed, cfg.seed + cfg.num_samples))
    prompts = prompt_list(cfg)
    check_identity(out, {"members": OmegaConf.to_container(cfg.stitch.members, resolve=True), "labels": cfg.labels,
                         "options": options, **({"prompts": prompts} if prompts else {})})
    have = done(out)
    todo = [s for s in wanted if s not in have]
    writer = ShardWriter(out, png=cfg.png)
    trainer = L.Trainer(**cfg.trainer, callbacks=[writer, Progress(len(wanted), len(wanted) - len(todo))],
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, use_distributed_sampler=False)
    start = time.perf_counter()
    earlier = previous(out)
    timing = {k: earlier[k] for k in TIMING if k in earlier}
    nfe = earlier.get("nfe_per_image")
    if todo:
        loader = torch.utils.data.DataLoader(Seeds(todo), batch_size=cfg.batch_size, sampler=RankShare(len(todo)))
        module = Generation(members, codec, options, cfg.labels, batch_size=min(cfg.batch_size, cfg.num_samples),
                            baseline_batches=cfg.baseline_batches, prompts=prompts, base_seed=cfg.seed)
        trainer.predict(module, loader, return_predictions=False)
        timing, nfe = module.timing(), writer.nfe or nfe
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return
    path = export_npz(out, wanted)
    row = {"fractions": [round(f, 6) for f in fractions], "nfe": nfe,
           **{k: timing[k] for k in ("s_per_image", "speedup") if timing.get(k) is not None}}
    scores = metric.score_file(path) if metric is not None else {}
    row.update(scores)
    config = OmegaConf.to_container(cfg, resolve=True)
    manifest = {"config": config, "git": git_sha(), "members": names, "decoder": codec_name(codec),
                "fractions": fractions, "nfe_per_image": nfe,
                "num_samples": len(wanted), "generated": len(todo), "resumed_from": len(wanted) - len(todo),
                "seconds": round(seconds, 2), **timing, "world_size": trainer.world_size, "samples": str(path),
                "metric": metric.describe() if metric is not None else None,
                "scores": scores}
    write_manifest(out, manifest)
    report.write_table([row], names, out, report.add_paper([row], config))
    (out / "run.json").write_text(json.dumps({"members": names, "metric": manifest["metric"],
                                              "decoder": manifest["decoder"], "config": config}, indent=2))
    if cfg.grid_columns:  # the first images, read off the memory map (not the whole set)
        first = np.array(fidelity.npz_member(path, "arr_0")[: cfg.grid_columns])
        labels = np.array(fidelity.npz_member(path, "arr_1")[: cfg.grid_columns])
        report.image_grid([torch.from_numpy(first).permute(0, 3, 1, 2)], out / "grid.png",
                          [report.fmt("fractions", fractions)], title=f"fractions of the steps, {' : '.join(names)}",
                          columns=report.column_labels(labels, list(cfg.stitch.members.values())[-1].get("classes"),
                                                       prompts))
    tracking.log_results(tracking.wandb_logger(cfg.logger, out, [fractions]), config, [row], names,
                         {k: manifest[k] for k in ("git", "world_size", "num_samples", "metric", "decoder")},
                         [out / "grid.png"])
    log.info(summary(row, names, manifest))


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
    try:
        shared = launched_run_dir(sys.argv[1:])
    except ConfigError as e:
        error("generate", e)
        sys.exit(2)
    if shared:
        sys.argv.append(shared)
    entry_point(main, "generate")()

if __name__ == "__main__":
    entry()
