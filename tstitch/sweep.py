"""The sweep behind the `tstitch` command (and `tstitch-search`): for each allocation, sample the same seeds, time
it, score it. A plain function of a composed config and objects from ``tstitch.build``; Hydra and W&B stay in
``tstitch.cli.main`` and ``tstitch.tracking``."""
import time

import torch
from tqdm import tqdm

from tstitch import build, checks, seeds
from tstitch.clock import sync
from tstitch.report import add_speedups
from tstitch.sample import check, sample
from tstitch.stitch import alone


def configured(cfg, k):
    """The table's rows: fraction vectors over the k members (``sweep.allocations``, ``sweep.first`` or
    ``stitch.fractions``; checked by the config's schema)."""
    sweep = cfg.get("sweep") or {}
    if sweep.get("allocations"):
        return [[float(f) for f in a] for a in sweep["allocations"]]
    if sweep.get("first") is not None:
        return [[float(f)] + [0.0] * (k - 2) + [1 - float(f)] for f in sweep["first"]]
    return [[float(f) for f in cfg.stitch.fractions]]


def _sample_all(members, cfg, fractions, x, y, rng, progress=None):
    """Samples for every seed in batches; returns (samples, steps per member per image, seconds)."""
    out, seconds = [], 0.0
    common = build.sample_options(cfg, fractions)  # once, outside the timed batches
    for i in range(0, len(x), cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        options = {**common, "randn_like": rng[sl].randn_like}
        sync(cfg.device)
        start = time.perf_counter()
        r = sample(members, x[sl], y[sl], **options)
        sync(cfg.device)
        seconds += time.perf_counter() - start
        checks.batch(r.x, list(range(cfg.seed + i, cfg.seed + i + len(r.x))),
                     lambda watch, sl=sl, options=options: sample(members, x[sl], y[sl], callback=watch, **options),
                     [m.name for m in members], cfg.get("nonfinite", "error"))
        out.append(r.x)
        if progress is not None:
            progress.update(len(r.x))
    return torch.cat(out), r.nfe, seconds


def sweep(cfg, allocations=None, num_samples=None, stitch=None, metric=None, on_row=None):
    """Sample, time and score each allocation (``allocations``: default ``configured(cfg, k)``) on the same
    ``num_samples`` seeds (default ``cfg.num_samples``). Returns (table rows, the first images of each row, the
    members, facts: the metric's description, the decoder's name, the warm-up seconds (compilation included) and,
    on GPUs, peak memory in GiB). ``stitch`` ((members, codec) from ``tstitch.build.stitch``) and ``metric`` may be
    given already loaded, for callers that sweep several times (``tstitch.search``); ``on_row(row)`` is called as
    each row is done (before the speedups, which need every row), e.g. to keep it on disk."""
    torch.set_num_threads(cfg.threads)
    members, codec = stitch or build.stitch(cfg, cfg.device)
    metric = metric if metric is not None else build.metric(cfg)
    rows_fractions = allocations if allocations is not None else configured(cfg, len(members))
    num_samples = cfg.num_samples if num_samples is None else num_samples
    for fractions in rows_fractions:  # solver, scheduler, step count: before anything runs
        check(members, **build.sample_options(cfg, fractions))
    num_classes = members[-1].num_classes
    prompts = build.prompts(cfg)
    # warm-up at the real batch size (allocator, kernel choice, first calls) outside the timed region
    n = min(cfg.batch_size, num_samples)
    wx, wy, _ = seeds.draw(range(n), members[0].space.shape, num_classes, cfg.labels, cfg.device, prompts)
    if str(cfg.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(cfg.device)
    start = time.perf_counter()
    for k in range(len(members)):
        sample(members, wx, wy, fractions=alone(k, len(members)), solver="ddim", steps=2,
               guidance=cfg.guidance.scale, channels=cfg.guidance.channels)
    sync(cfg.device)
    facts = {"metric": metric.describe() if metric is not None else None, "decoder": codec.source,
             "warmup_seconds": time.perf_counter() - start}
    seed_range = range(cfg.seed, cfg.seed + num_samples)

    def draw():
        return seeds.draw(seed_range, members[0].space.shape, num_classes, cfg.labels, cfg.device, prompts, cfg.seed)

    if metric is not None and metric.paired:  # each image against the same seed's from the last member alone
        x, y, rng = draw()
        metric.pair(codec.decode(_sample_all(members, cfg, alone(-1, len(members)), x, y, rng)[0]))
    rows, grids = [], []
    with tqdm(total=len(rows_fractions) * num_samples, desc="sampling", unit="img", dynamic_ncols=True) as bar:
        for fractions in rows_fractions:
            x, y, rng = draw()
            samples, nfe, seconds = _sample_all(members, cfg, fractions, x, y, rng, bar)
            images = codec.decode(samples)
            row = {"fractions": [round(f, 6) for f in fractions], "nfe": nfe, "s_per_image": seconds / num_samples}
            if metric is not None:
                row.update(metric(images, y))
            rows.append(row)
            grids.append(images[: cfg.grid_columns].cpu())
            if on_row is not None:
                on_row(row)
    add_speedups(rows)
    if str(cfg.device).startswith("cuda"):
        facts["peak_memory_gb"] = torch.cuda.max_memory_allocated(cfg.device) / 2 ** 30
    return rows, grids, members, facts
