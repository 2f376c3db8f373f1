"""One allocation's sample set, as a plain function of a composed config and a run directory (``tstitch-generate``
is its Hydra glue): resumable, one writer per directory, refused when the directory holds samples made otherwise.

Order matters: every check that can fail runs before the first file is written (the config against its schema,
the lock, the settings against the directory's identity and its shards' digests); models load next, then the
checkpoints' content is compared, and only then is ``identity.json`` written and the first shard sampled.

What the sampling measured (NFE, timing, non-finite seeds) goes to ``measured.json`` as soon as it ends, before the
export and the metric, so that a run stopped before ``manifest.json`` loses nothing: the rerun rebuilds the
manifest from it, or, where even that is missing, times the first batch again (and says which, in one line).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from tstitch.errors import ConfigError
from tstitch.files import DiskFull, write_json
from tstitch.jobs import identity
from tstitch.jobs.engine import lock, stop
from tstitch.models import checks

# the run's own timing, then the speedup's interleaved rounds (tstitch.jobs.engine.module.Generation)
TIMING = ("s_per_image", "images_per_second", "s_per_image_per_member", "decode_s_per_image", "images_timed",
          "speedup", "speedup_p25", "speedup_p75", "baseline_s_per_image", "timed_s_per_image",
          "timed_s_per_image_p25", "timed_s_per_image_p75", "predicted_s_per_image", "timing_flag", "timing_rounds",
          "timing_drift", "warmup_seconds", "peak_memory_gb", "peak_memory_bytes")
ROW = ("s_per_image", "predicted_s_per_image", "speedup", "speedup_p25", "speedup_p75")  # and timing_flag, if timed
MEASURED = "measured.json"
DIGESTS = (("config",), identity.PARTS)  # each shard carries the digest of each: the settings alone, and all


def accelerator(trainer):
    """The kind of device the samples are made on (its kernels decide the last bits): ``cpu`` or ``gpu``."""
    if trainer.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu" if trainer.accelerator == "cpu" else "gpu"


def settings(cfg):
    """The sampling settings that change the bytes of an image (the ``config`` part of the identity)."""
    from tstitch.jobs.build import sample_options
    from tstitch.models import accelerators

    fractions = [float(f) for f in cfg.stitch.fractions]  # as the schema checked them
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {"members": plain["stitch"]["members"], "codec": plain["stitch"].get("codec"), "labels": cfg.labels,
            "seed": cfg.seed, "options": OmegaConf.to_container(OmegaConf.create(sample_options(cfg, fractions)),
                                                                 resolve=True),
            "fast": accelerators.recorded(plain.get("fast")), "batch_size": cfg.batch_size,
            "accelerator": accelerator(cfg.trainer)}


# an identity's keys (``settings`` and ``identity.of``) -> the config keys a user types: a key or a prefix (its rest
# follows the user's prefix, or fills {k}), longest first
DECODER = "(stitch.codec, else the last member's codec)"
USER_KEYS = [("config.options.fractions", "stitch.fractions"), ("config.options.solver", "solver.name"),
             ("config.options.steps", "solver.steps"), ("config.options.guidance", "guidance.scale"),
             ("config.options.channels", "guidance.channels"), ("config.options.rule", "stitch.rule"),
             ("config.options", "solver.options"), ("config.members", "stitch.members"),
             ("config.codec", "stitch.codec"), ("config.accelerator", "trainer.accelerator"), ("config", ""),
             ("checkpoints", "stitch.members.{k}.checkpoint (the content of its checkpoint)"),
             ("decoder.spec", f"the decoder {DECODER}"), ("decoder.content", f"the decoder's content {DECODER}"),
             ("seeds", "the seed scheme (another tstitch version)"), ("prompts", "prompts (the prompt list)")]


def user_key(key):
    """The config key a user types for a differing key of the identity: ``config.options.fractions`` is
    ``stitch.fractions``, ``checkpoints.large`` names ``stitch.members.large.checkpoint``."""
    for inner, outer in USER_KEYS:
        if key.startswith(inner + ".") or (key == inner and "{k}" not in outer and outer):
            rest = key[len(inner) + 1:]
            return outer.format(k=rest) if "{k}" in outer else ".".join(filter(None, (outer, rest)))
    return key


def check_settings(cfg, run_dir):
    """Refuse at once (nothing loaded, nothing written) when ``run_dir`` holds samples of other settings."""
    now = {"config": settings(cfg)}
    identity.check(run_dir, now, parts=("config",), describe=user_key)
    check_shards(run_dir, now, full=False)


def check_shards(run_dir, now, full=True):
    """Refuse shards made under another identity than ``now`` (all of it, or with ``full=False`` its settings), and,
    where ``identity.json`` is gone, shards that carry none: a set's identity never hangs on that one file."""
    k = int(full)
    want = identity.digest(now, DIGESTS[k])
    found = identity.shard_digests(run_dir)  # not from engine.writer: Lightning must not load before Hydra's logging
    known = identity.read(run_dir) is not None
    other = [p for p, d in found.items() if (d is None and not known) or (d is not None and d[k:k + 1] != (want,))]
    if not other:
        return
    start_over = f"start over in a new hydra.run.dir=... (or empty {run_dir})"
    if all(found[p] is None for p in other):
        raise ConfigError(f"{run_dir} holds {len(other)} shards whose settings cannot be established ({identity.FILE} "
                          f"is missing and they carry no identity); {start_over}")
    why = f"{identity.FILE} is missing" if not known else f"not the settings in {identity.FILE}"
    raise ConfigError(f"{run_dir} holds {len(other)} shards made with other settings ({why}; e.g. {other[0].name}); "
                      f"rerun with the settings that made them, or {start_over}")


def previous(out):
    """What the last session of this run measured: ``measured.json``, or the manifest of a run made before there
    was one; {} if neither."""
    for name in (MEASURED, "manifest.json"):
        try:
            record = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            return record
    return {}


def generate(cfg, out):
    """Make (or complete) the sample set of ``cfg`` in ``out``; returns (row, manifest) on rank zero, None on the
    other ranks. The caller checked ``cfg`` (``tstitch.cli.schema``). A signal (``engine.stop``) or a full disk
    ends it with every finished shard kept."""
    out = Path(out)
    lock.take(out)
    rank_zero = lock.is_rank_zero()
    sampling = settings(cfg)
    try:
        if rank_zero:
            check_settings(cfg, out)
        return _generate(cfg, out, sampling, rank_zero)
    except DiskFull as e:
        raise DiskFull(f"{e}: it resumes from the finished shards") from None
    except stop.Stopped as e:
        if rank_zero:
            from tstitch.jobs.engine.writer import done

            e.detail = (f"{len(done(out, move=False))} of {cfg.num_samples} samples are in whole shards in {out}; "
                        "run the same command again to resume")
        raise
    finally:
        lock.release(out)


def _generate(cfg, out, sampling, rank_zero):
    import lightning as L

    from tstitch.data.prompts import recorded  # prompts with their negative prompts
    from tstitch.jobs import build, footprint, report
    from tstitch.jobs.engine.module import Generation, RankShare, Seeds
    from tstitch.jobs.engine.progress import Progress
    from tstitch.jobs.engine.writer import ShardWriter, done, export_npz, write_manifest
    from tstitch.metrics import fidelity
    from tstitch.sampling.sample import check

    prompts = build.prompts(cfg)  # a missing prompt file or control image fails before any model loads
    members, codec = build.stitch(cfg)
    names = [m.name for m in members]
    fractions = sampling["options"]["fractions"]
    options = build.sample_options(cfg, fractions)
    check(members, **options)  # the solver, scheduler and step count on these members, before anything is written
    metric = build.metric(cfg)  # before sampling: a bad reference fails now, not after hours
    if metric is not None:
        metric.check_files()  # it will score samples.npz (a paired metric needs its reference file)
    wanted = list(range(cfg.seed, cfg.seed + cfg.num_samples))
    entries = {k: OmegaConf.to_container(e, resolve=True) for k, e in cfg.stitch.members.items()}
    spec = build.codec_spec(cfg)
    spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
    now = {**identity.of(sampling, entries, spec), "prompts": recorded(prompts)}  # every rank stamps its shards
    if rank_zero:
        now["versions"] = identity.versions(_device_name(cfg))
        stored = identity.check(out, now, parts=identity.PARTS, describe=user_key)
        check_shards(out, now)
        for line in identity.version_warnings(stored, now["versions"]):
            checks.warn(f"resuming {out} across versions: {line}; the new samples may differ from the earlier ones "
                        "in the last bits")
        identity.write(out, now)
    have = done(out, move=rank_zero)
    todo = [s for s in wanted if s not in have]
    earlier = previous(out)
    retime = not todo and earlier.get("nfe_per_image") is None  # stopped after its last shard, before measuring
    writer = ShardWriter(out, png=cfg.png, digests=[identity.digest(now, p) for p in DIGESTS], keep=not retime)
    trainer = L.Trainer(**cfg.trainer, callbacks=[writer, Progress(len(wanted), len(wanted) - len(todo))],
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, use_distributed_sampler=False)
    batch = wanted[:cfg.batch_size * trainer.world_size] if retime else todo  # a retimed batch is not written
    _say_rebuilt(out, retime, todo, len(batch), trainer.is_global_zero)
    start = time.perf_counter()
    timing = {k: earlier[k] for k in TIMING if k in earlier}
    nfe, nonfinite = earlier.get("nfe_per_image"), list(earlier.get("nonfinite_seeds") or [])
    if batch:
        loader = torch.utils.data.DataLoader(Seeds(batch), batch_size=cfg.batch_size, sampler=RankShare(len(batch)))
        module = Generation(members, codec, options, cfg.labels, batch_size=min(cfg.batch_size, cfg.num_samples),
                            rounds=cfg.timing.rounds, tolerance=cfg.timing.tolerance, prompts=prompts,
                            base_seed=cfg.seed, nonfinite=cfg.get("nonfinite", "error"))
        try:
            trainer.predict(module, loader, return_predictions=False)
        except stop.Stopped as e:
            stop.stop_ranks(trainer, e.signum)
            raise
        timing, nfe = module.timing(), writer.nfe or nfe
        nonfinite = sorted(set(nonfinite) | set(module.warned))
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None
    if batch:
        write_json(out / MEASURED, {"nfe_per_image": nfe, **timing, "nonfinite_seeds": nonfinite})
    path = export_npz(out, wanted, png=cfg.png)
    row = {"fractions": [round(f, 6) for f in fractions], "nfe": nfe,
           **{k: timing[k] for k in ROW if timing.get(k) is not None},
           **footprint.record(members, list(entries.values())), "peak_memory_bytes": timing.get("peak_memory_bytes")}
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
    first = np.array(fidelity.npz_member(path, "arr_0")[: cfg.grid_columns])  # read off the map, not the whole set
    labels = np.array(fidelity.npz_member(path, "arr_1")[: cfg.grid_columns])
    with stop.deferred():  # the run's records are written together
        write_manifest(out, manifest)
        report.write_run(out, [row], names, config,
                         {k: manifest[k] for k in ("git", "world_size", "num_samples", "metric", "decoder")},
                         cfg.logger, [torch.from_numpy(first).permute(0, 3, 1, 2)] if cfg.grid_columns else [],
                         [report.fmt("fractions", fractions)], title=f"fractions of the steps, {' : '.join(names)}",
                         columns=report.column_labels(labels, list(cfg.stitch.members.values())[-1].get("classes"),
                                                      prompts), plot=False)
    return row, manifest


def _say_rebuilt(out, retime, todo, n, rank_zero):
    """One line when a run stopped after its last shard but before ``manifest.json``."""
    if not rank_zero or todo or (out / "manifest.json").exists():
        return
    if retime:
        line = (f"no NFE or timing was recorded for {out} (a run stopped before writing them): timing the first "
                f"{n} samples again (not written)")
    else:
        line = f"manifest.json was missing in {out} (a run stopped before writing it): rebuilt from {MEASURED}"
    print(f"tstitch-generate: {line}", file=sys.stderr, flush=True)


def _device_name(cfg):
    if accelerator(cfg.trainer) == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return None

