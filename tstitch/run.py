"""The sweep behind the `tstitch` command: for each allocation, sample the same seeds, time it, score it.

Plain functions over a resolved config; Hydra and W&B stay in ``tstitch.cli.main`` and ``tstitch.report``.
"""
import time

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from tstitch import checks, fast, metrics, seeds, zoo
from tstitch.codecs import load_codec
from tstitch.errors import ConfigError
from tstitch.sample import check, sample
from tstitch.stitch import check_compatible, check_fractions


def allocations(cfg, k):
    """The table's rows: fraction vectors over the k members."""
    sweep = cfg.get("sweep") or {}
    if sweep.get("allocations"):
        return [check_fractions(a, k) for a in sweep["allocations"]]
    if sweep.get("first") is not None:
        if k < 2:
            raise ConfigError("sweep.first needs two or more members; set sweep=null for a single model")
        return [check_fractions([f] + [0.0] * (k - 2) + [1 - f], k) for f in sweep["first"]]
    return [check_fractions(cfg.stitch.fractions, k)]


def _sample_all(members, cfg, fractions, x, y, rng, progress=None):
    """Samples for every seed in batches; returns (samples, steps per member per image, seconds)."""
    out, seconds = [], 0.0
    for i in range(0, len(x), cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        sync(cfg.device)
        start = time.perf_counter()
        options = {**sample_options(cfg, fractions), "randn_like": rng[sl].randn_like}
        r = sample(members, x[sl], y[sl], **options)
        sync(cfg.device)
        seconds += time.perf_counter() - start
        bad = checks.bad_rows(r.x)
        if bad:  # sampled again, watching each step, only when a batch failed
            found = checks.where(lambda watch, sl=sl, options=options: sample(members, x[sl], y[sl], callback=watch,
                                                                              **options), [m.name for m in members])
            batch_seeds = list(range(cfg.seed + i, cfg.seed + i + len(r.x)))
            checks.warn(checks.report(batch_seeds, bad, len(r.x), found, cfg.get("nonfinite", "error")))
        out.append(r.x)
        if progress is not None:
            progress.update(len(r.x))
    return torch.cat(out), r.nfe, seconds


def sync(device):
    """Wait for queued GPU work, so that a host clock measures it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def sample_options(cfg, fractions):
    """``tstitch.sample``'s keyword arguments for one allocation, from the solver/guidance/stitch configs."""
    return dict(fractions=fractions, solver=cfg.solver.name, steps=cfg.solver.steps, guidance=cfg.guidance.scale,
                channels=cfg.guidance.channels, rule=cfg.stitch.rule,
                **OmegaConf.to_container(cfg.solver.options, resolve=True))  # plain values (solver.options.config)


def load_stitch(cfg, device="cpu"):
    """The configured members (checked to be stitchable) and the decoder: ``stitch.codec`` when set (any decoder
    of the members' data space, e.g. another fine-tuned VAE decoder), else the last member's own."""
    names, options = list(cfg.stitch.members), cfg.get("fast", {})
    home = "cpu" if options.get("offload") else device  # offloaded networks never all sit on the device at once
    members = [zoo.load(dict(cfg.stitch.members[n]), device=home) for n in names]
    check_compatible(members)
    members = fast.speed_up(members, device, **options)
    spec = cfg.stitch.get("codec") or cfg.stitch.members[names[-1]].get("codec", "pixels")
    return members, load_codec(spec, members[-1].space, device)


def prompt_list(cfg):
    """The configured prompt set (``prompts=demo|file|coco``) for text-conditioned members, or None."""
    if not cfg.get("prompts"):
        return None
    from tstitch import prompts

    return prompts.load(**cfg.prompts)


def codec_name(codec):
    """What decoded the samples, for the records."""
    return codec.source


def run(cfg, stitch=None, metric=None, on_row=None):
    """Run the sweep; returns (table rows, the first images of each row, the members, facts: the metric's
    description, the decoder's name, the warm-up seconds (compilation included) and, on GPUs, peak memory in GiB).
    ``stitch`` ((members, codec) from ``load_stitch``) and ``metric`` (from ``metrics.build``) may be given already
    loaded, for callers that sweep several times (``tstitch.search``); ``on_row(row)`` is called as each row is
    done (before the speedups, which need every row), e.g. to keep it on disk."""
    torch.set_num_threads(cfg.threads)
    members, codec = stitch or load_stitch(cfg, cfg.device)
    metric = metric if metric is not None else metrics.build(cfg.get("metric"))
    rows_fractions = allocations(cfg, len(members))
    for fractions in rows_fractions:  # solver, scheduler, step count: before anything runs
        check(members, **sample_options(cfg, fractions))
    num_classes = members[-1].num_classes
    # warm-up at the real batch size (allocator, kernel choice, first calls) outside the timed region
    n = min(cfg.batch_size, cfg.num_samples)
    prompts = prompt_list(cfg)
    wx, wy, _ = seeds.draw(range(n), members[0].space.shape, num_classes, cfg.labels, cfg.device, prompts)
    if str(cfg.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(cfg.device)
    start = time.perf_counter()
    for k in range(len(members)):
        sample(members, wx, wy, fractions=[float(j == k) for j in range(len(members))], solver="ddim", steps=2,
               guidance=cfg.guidance.scale, channels=cfg.guidance.channels)
    sync(cfg.device)
    facts = {"metric": metric.describe() if metric is not None else None, "decoder": codec_name(codec),
             "warmup_seconds": time.perf_counter() - start}
    seed_range = range(cfg.seed, cfg.seed + cfg.num_samples)
    rows, grids = [], []
    with tqdm(total=len(rows_fractions) * cfg.num_samples, desc="sampling", unit="img", dynamic_ncols=True) as bar:
        for fractions in rows_fractions:
            x, y, rng = seeds.draw(seed_range, members[0].space.shape, num_classes, cfg.labels, cfg.device, prompts,
                                   cfg.seed)
            samples, nfe, seconds = _sample_all(members, cfg, fractions, x, y, rng, bar)
            images = codec.decode(samples)
            row = {"fractions": [round(f, 6) for f in fractions], "nfe": nfe, "s_per_image": seconds / cfg.num_samples}
            if metric is not None:
                row.update(metric(images, y))
            rows.append(row)
            grids.append(images[: cfg.grid_columns].cpu())
            if on_row is not None:
                on_row(row)
    base = next((r for r in rows if r["fractions"][-1] == 1.0), None)
    for r in rows:
        r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None
    if str(cfg.device).startswith("cuda"):
        facts["peak_memory_gb"] = torch.cuda.max_memory_allocated(cfg.device) / 2 ** 30
    return rows, grids, members, facts

