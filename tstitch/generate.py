"""One allocation's sample set, as a plain function of a composed config and a run directory (``tstitch-generate``
is its Hydra glue): resumable, one writer per directory, refused when the directory holds samples made otherwise.

Order matters: every check that can fail runs before the first file is written (the config against its schema,
the lock, the settings against the directory's identity); models load next, then the checkpoints' content is
compared, and only then is ``identity.json`` written and the first shard sampled.
"""
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from tstitch import checks, identity
from tstitch.engine import lock

# the run's own timing, then the speedup's interleaved rounds (tstitch.engine.module.Generation)
TIMING = ("s_per_image", "images_per_second", "s_per_image_per_member", "decode_s_per_image", "images_timed",
          "speedup", "speedup_p25", "speedup_p75", "baseline_s_per_image", "timed_s_per_image",
          "timed_s_per_image_p25", "timed_s_per_image_p75", "predicted_s_per_image", "timing_flag", "timing_rounds",
          "timing_drift", "warmup_seconds", "peak_memory_gb")
ROW = ("s_per_image", "predicted_s_per_image", "speedup", "speedup_p25", "speedup_p75")  # and timing_flag, if timed


def accelerator(trainer):
    """The kind of device the samples are made on (its kernels decide the last bits): ``cpu`` or ``gpu``."""
    if trainer.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu" if trainer.accelerator == "cpu" else "gpu"


def settings(cfg):
    """The sampling settings that change the bytes of an image (the ``config`` part of the identity)."""
    from tstitch.build import sample_options

    fractions = [float(f) for f in cfg.stitch.fractions]  # as the schema checked them
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {"members": plain["stitch"]["members"], "codec": plain["stitch"].get("codec"), "labels": cfg.labels,
            "seed": cfg.seed, "options": OmegaConf.to_container(OmegaConf.create(sample_options(cfg, fractions)),
                                                                 resolve=True),
            "fast": plain.get("fast") or {}, "batch_size": cfg.batch_size, "accelerator": accelerator(cfg.trainer)}


def check_settings(cfg, run_dir):
    """Refuse at once (nothing loaded, nothing written) when ``run_dir`` holds samples of other settings."""
    identity.check(run_dir, {"config": settings(cfg)}, parts=("config",))


def previous(out):
    """What an earlier session of this run measured (kept when a resumed run has nothing left to generate)."""
    import json

    path = out / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


def generate(cfg, out):
    """Make (or complete) the sample set of ``cfg`` in ``out``; returns (row, manifest) on rank zero, None on the
    other ranks. The caller checked ``cfg`` (``tstitch.schema``)."""
    out = Path(out)
    lock.take(out)
    rank_zero = lock.is_rank_zero()
    sampling = settings(cfg)
    if rank_zero:
        identity.check(out, {"config": sampling}, parts=("config",))
    try:
        return _generate(cfg, out, sampling, rank_zero)
    finally:
        lock.release(out)


def _generate(cfg, out, sampling, rank_zero):
    import lightning as L

    from tstitch import build, fidelity, report
    from tstitch.engine.module import Generation, RankShare, Seeds
    from tstitch.engine.progress import Progress
    from tstitch.engine.writer import ShardWriter, done, export_npz, write_manifest
    from tstitch.sample import check

    members, codec = build.stitch(cfg)
    names = [m.name for m in members]
    fractions = sampling["options"]["fractions"]
    options = build.sample_options(cfg, fractions)
    check(members, **options)  # the solver, scheduler and step count on these members, before anything is written
    metric = build.metric(cfg)  # before sampling: a bad reference fails now, not after hours
    if metric is not None:
        metric.check_files()  # it will score samples.npz (a paired metric needs its reference file)
    wanted = list(range(cfg.seed, cfg.seed + cfg.num_samples))
    prompts = build.prompts(cfg)
    if rank_zero:
        entries = {k: OmegaConf.to_container(e, resolve=True) for k, e in cfg.stitch.members.items()}
        spec = build.codec_spec(cfg)
        spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
        now = {**identity.of(sampling, entries, spec), "prompts": prompts,
               "versions": identity.versions(_device_name(cfg))}
        stored = identity.check(out, now, parts=("config", "checkpoints", "decoder", "seeds", "prompts"))
        for line in identity.version_warnings(stored, now["versions"]):
            checks.warn(f"resuming {out} across versions: {line}; the new samples may differ from the earlier ones "
                        "in the last bits")
        identity.write(out, now)
    have = done(out, move=rank_zero)
    todo = [s for s in wanted if s not in have]
    writer = ShardWriter(out, png=cfg.png)
    trainer = L.Trainer(**cfg.trainer, callbacks=[writer, Progress(len(wanted), len(wanted) - len(todo))],
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, use_distributed_sampler=False)
    start = time.perf_counter()
    earlier = previous(out)
    timing = {k: earlier[k] for k in TIMING if k in earlier}
    nfe, nonfinite = earlier.get("nfe_per_image"), list(earlier.get("nonfinite_seeds") or [])
    if todo:
        loader = torch.utils.data.DataLoader(Seeds(todo), batch_size=cfg.batch_size, sampler=RankShare(len(todo)))
        module = Generation(members, codec, options, cfg.labels, batch_size=min(cfg.batch_size, cfg.num_samples),
                            rounds=cfg.timing.rounds, tolerance=cfg.timing.tolerance, prompts=prompts,
                            base_seed=cfg.seed, nonfinite=cfg.get("nonfinite", "error"))
        trainer.predict(module, loader, return_predictions=False)
        timing, nfe = module.timing(), writer.nfe or nfe
        nonfinite = sorted(set(nonfinite) | set(module.warned))
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None
    path = export_npz(out, wanted)
    row = {"fractions": [round(f, 6) for f in fractions], "nfe": nfe,
           **{k: timing[k] for k in ROW if timing.get(k) is not None}}
    if "timing_flag" in timing:
        row["timing_flag"] = timing["timing_flag"]
    scores = metric.score_file(path) if metric is not None else {}
    row.update(scores)
    config, asked = OmegaConf.to_container(cfg, resolve=True), set(wanted)
    manifest = {"config": config, "git": identity.git_sha(), "members": names, "decoder": codec.source,
                "fractions": fractions, "nfe_per_image": nfe,
                "num_samples": len(wanted), "generated": len(todo), "resumed_from": len(wanted) - len(todo),
                "seconds": round(seconds, 2), **timing, "world_size": trainer.world_size, "samples": str(path),
                "metric": metric.describe() if metric is not None else None, "scores": scores,
                "nonfinite_seeds": [s for s in nonfinite if s in asked]}
    write_manifest(out, manifest)
    first = np.array(fidelity.npz_member(path, "arr_0")[: cfg.grid_columns])  # read off the map, not the whole set
    labels = np.array(fidelity.npz_member(path, "arr_1")[: cfg.grid_columns])
    report.write_run(out, [row], names, config,
                     {k: manifest[k] for k in ("git", "world_size", "num_samples", "metric", "decoder")}, cfg.logger,
                     [torch.from_numpy(first).permute(0, 3, 1, 2)] if cfg.grid_columns else [],
                     [report.fmt("fractions", fractions)], title=f"fractions of the steps, {' : '.join(names)}",
                     columns=report.column_labels(labels, list(cfg.stitch.members.values())[-1].get("classes"),
                                                  prompts), plot=False)
    return row, manifest


def _device_name(cfg):
    if accelerator(cfg.trainer) == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return None

