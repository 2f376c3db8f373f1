"""The sweep behind the `tstitch` command (and `tstitch-search`): sample every allocation on the same seeds, time
them against each other, score them. A plain function of a composed config and objects from ``tstitch.jobs.build``;
Hydra and W&B stay in ``tstitch.cli.main`` and ``tstitch.jobs.tracking``.

Timing (``tstitch.jobs.timing``): the seeds are cut into batches, and ``workers`` batches side by side (threads of one
torch thread each on a CPU) make a group, the unit that is timed. Round r samples group r of every allocation, in an
order that rotates each round, so the rows are timed interleaved and a change of the machine's speed lands on all of
them; rounds past the seed set's groups (``timing.rounds`` at least) time the first group again. A member without an
alone row is timed alone too, for the cost model: each row's predicted time is sum_i NFE_i x t_i with t_i a
member's time per call alone, and a row the measurement puts off the model is flagged.

Every row also carries the members' footprint (``tstitch.jobs.footprint``: parameters, their bytes, the checkpoint's
storage) and, on a GPU, the peak memory of its own sampling calls (``peak_memory_bytes``).
"""
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from tstitch.data import seeds
from tstitch.jobs import build, footprint, timing
from tstitch.jobs.clock import sync
from tstitch.jobs.report import fmt
from tstitch.models import checks
from tstitch.sampling.sample import check, sample
from tstitch.sampling.stitch import alone


def configured(cfg, k):
    """The table's rows: fraction vectors over the k members (``sweep.allocations``, ``sweep.first`` or
    ``stitch.fractions``; checked by the config's schema)."""
    sweep = cfg.get("sweep") or {}
    if sweep.get("allocations"):
        return [[float(f) for f in a] for a in sweep["allocations"]]
    if sweep.get("first") is not None:
        return [[float(f)] + [0.0] * (k - 2) + [1 - float(f)] for f in sweep["first"]]
    return [[float(f) for f in cfg.stitch.fractions]]


def workers(cfg):
    """Batches sampled side by side: ``workers``, else ``threads`` on a CPU (one torch thread each: faster for
    small networks than one batch on several threads, and steady beside another busy process), 1 on a GPU."""
    if cfg.get("workers"):
        return int(cfg.workers)
    return 1 if str(cfg.device).startswith("cuda") else int(cfg.threads)


class Sampler:
    """Samples groups of batches of one seed set for any allocation: ``group(options, g)`` returns the samples of
    group g (its batches side by side) and the NFE per member, each batch checked for non-finite values; ``peak``
    keeps each row's peak device memory."""

    def __init__(self, members, cfg, num_samples, prompts):
        self.members, self.cfg, self.prompts = members, cfg, prompts
        self.workers = workers(cfg)
        self.threads = max(1, cfg.threads // self.workers)  # torch threads per worker
        torch.set_num_threads(self.threads if self.workers == 1 else cfg.threads)  # the rest: decoding, metrics
        first, b = cfg.seed, cfg.batch_size
        batches = [range(s, min(s + b, first + num_samples)) for s in range(first, first + num_samples, b)]
        self.groups = [batches[i: i + self.workers] for i in range(0, len(batches), self.workers)]
        self.full = [len(g) == self.workers and all(len(s) == b for s in g) for g in self.groups]
        _, self.labels, _ = seeds.draw(range(first, first + num_samples), members[0].space.shape,
                                       members[-1].num_classes, cfg.labels, cfg.device, prompts, first)
        self.pool = ThreadPoolExecutor(self.workers, initializer=torch.set_num_threads, initargs=(self.threads,)) \
            if self.workers > 1 else None
        self.peak = footprint.PeakMemory(cfg.device)  # each row's peak device memory (``with self.peak(row)``)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def _batch(self, seed_range, options):
        x, y, rng = seeds.draw(seed_range, self.members[0].space.shape, self.members[-1].num_classes,
                               self.cfg.labels, self.cfg.device, self.prompts, self.cfg.seed)
        options = {**options, "randn_like": rng.randn_like}
        return sample(self.members, x, y, **options), (x, y, options)

    def group(self, options, g, check=True):
        """Samples of group ``g`` at ``options`` (``build.sample_options``) and the NFE per member; ``check``:
        each batch checked for non-finite values (not in the warm-up, whose short runs say nothing of the run)."""
        batches = self.groups[g]
        if self.pool is None:
            done = [self._batch(s, options) for s in batches]
        else:
            done = list(self.pool.map(lambda s: self._batch(s, options), batches))
        names = [m.name for m in self.members]
        for s, (r, (x, y, o)) in zip(batches, done if check else ()):
            checks.batch(r.x, list(s), lambda watch, x=x, y=y, o=o: sample(self.members, x, y, callback=watch, **o),
                         names, self.cfg.get("nonfinite", "error"))
        return torch.cat([r.x for r, _ in done]), done[0][0].nfe


def sweep(cfg, allocations=None, num_samples=None, stitch=None, metric=None, on_row=None, timed=True,
          phase="sampling", clock=None):
    """Sample, score and (``timed``) time each allocation (``allocations``: default ``configured(cfg, k)``) on the
    same ``num_samples`` seeds (default ``cfg.num_samples``). Returns (table rows, the first images of each row, the
    members, facts: the metric's description, the decoder's name, the warm-up seconds (compilation included), the
    timing's set-up and drift line and, on GPUs, peak memory in GiB). ``stitch`` ((members, codec) from
    ``tstitch.jobs.build.stitch``) and ``metric`` may be given already loaded, for callers that sweep several times
    (``jobs.search``); ``on_row(row)`` is called as each row is complete. Untimed, rows are sampled one after the
    other and each is complete at once; timed, they are complete after the last round. ``phase`` names the
    progress bar; ``clock`` replaces ``timing.clock_for(cfg.device)`` (tests)."""
    prompts = build.prompts(cfg)  # a missing prompt file or control image fails before any model loads
    members, codec = stitch or build.stitch(cfg, cfg.device)
    metric = metric if metric is not None else build.metric(cfg)
    rows_fractions = allocations if allocations is not None else configured(cfg, len(members))
    num_samples = cfg.num_samples if num_samples is None else num_samples
    options = [build.sample_options(cfg, f) for f in rows_fractions]
    for o in options:  # solver, scheduler, step count: before anything runs
        check(members, **o)
    sampler = Sampler(members, cfg, num_samples, prompts)
    entries = [OmegaConf.to_container(e, resolve=True) for e in cfg.stitch.members.values()]
    start = time.perf_counter()
    try:
        facts = {"metric": metric.describe() if metric is not None else None, "decoder": codec.source,
                 "warmup_seconds": _warm_up(sampler, cfg)}
        if metric is not None and metric.paired:  # each image against the same seed's from the last member alone
            last = build.sample_options(cfg, alone(-1, len(members)))
            metric.pair(codec.decode(torch.cat([sampler.group(last, g)[0] for g in range(len(sampler.groups))])))
        finish = _finisher(sampler, codec, metric, cfg, on_row, footprint.record(members, entries))
        if not timed:
            rows, grids = zip(*_untimed(sampler, rows_fractions, options, finish, phase)) if options else ((), ())
            rows, grids = list(rows), list(grids)
        else:
            rows, grids, facts["timing"] = _timed(sampler, cfg, rows_fractions, options, finish, phase,
                                                  clock or timing.clock_for(cfg.device))
    finally:
        sampler.close()
    facts["stages"] = {"warm-up": facts["warmup_seconds"], "scoring": finish.seconds,
                       "sampling": time.perf_counter() - start - facts["warmup_seconds"] - finish.seconds}
    if str(cfg.device).startswith("cuda"):
        facts["peak_memory_gb"] = sampler.peak.overall() / 2 ** 30
    return rows, grids, members, facts


def _warm_up(sampler, cfg):
    """Kernels, allocator and first calls at the real batch size, outside any timed region; returns seconds."""
    if str(cfg.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(cfg.device)
    start = time.perf_counter()
    k = len(sampler.members)
    for i in range(k):
        sampler.group({"fractions": alone(i, k), "solver": "ddim", "steps": 2, "guidance": cfg.guidance.scale,
                       "channels": cfg.guidance.channels}, 0, check=False)
    sync(cfg.device)
    return time.perf_counter() - start


def _finisher(sampler, codec, metric, cfg, on_row, members):
    """Turns an allocation's samples into its row (decoded, scored; the ``members``' footprint lists, the row's
    peak memory and ``extra`` columns added) and its grid images."""
    def finish(fractions, samples, nfe, extra=None, key=None):
        start = time.perf_counter()
        images = codec.decode(samples)
        row = {"fractions": [round(f, 6) for f in fractions], "nfe": nfe, **members,
               "peak_memory_bytes": sampler.peak.get(key), **(extra or {})}
        if metric is not None:
            row.update(metric(images, sampler.labels))
        if on_row is not None:
            on_row(row)
        finish.seconds += time.perf_counter() - start
        return row, images[: cfg.grid_columns].cpu()
    finish.seconds = 0.0  # decoding and scoring, for the stages of the run
    return finish


def _untimed(sampler, rows_fractions, options, finish, phase):
    """Rows one after the other, each complete at once."""
    n = len(sampler.groups)
    with tqdm(total=len(options) * n, desc=phase, unit="group", dynamic_ncols=True) as bar:
        for i, (fractions, o) in enumerate(zip(rows_fractions, options)):
            bar.set_postfix_str(fmt("fractions", fractions), refresh=False)
            out = []
            for g in range(n):
                with sampler.peak(i):
                    out.append(sampler.group(o, g))
                bar.update()
            yield finish(fractions, torch.cat([x for x, _ in out]), out[0][1], key=i)


def _timed(sampler, cfg, rows_fractions, options, finish, phase, clock):
    """Rows sampled in interleaved rounds (see the module's docstring); returns (rows, grids, timing facts)."""
    k, n = len(sampler.members), len(sampler.groups)
    spec = cfg.get("timing") or {}
    rounds = max(n, int(spec.get("rounds", 5)))
    full = [g for g in range(n) if sampler.full[g]] or list(range(n))  # short groups are timed only if all are
    variants, samples, nfe = {}, {}, {}
    for i, (fractions, o) in enumerate(zip(rows_fractions, options)):
        variants[f"row {i}"] = (fractions, o)
    alone_of = {m: next((f"row {i}" for i, f in enumerate(rows_fractions) if f == alone(m, k)), None)
                for m in range(k)}
    for m in range(k):
        if alone_of[m] is None:  # timed alone for the cost model, not a row of the table
            alone_of[m] = f"alone {m}"
            variants[alone_of[m]] = (alone(m, k), build.sample_options(cfg, alone(m, k)))

    def group_of(name, r):
        """The group a call samples: a row's round r < n its group r, later rounds (and timing-only variants) a
        full group again."""
        if not name.startswith("row"):
            return full[r % len(full)]
        return r if r < n else full[(r - n) % len(full)]

    def run(name):
        o = variants[name][1]

        def call(r):
            g = group_of(name, r)
            with sampler.peak(name):  # host-side counters: no device sync in the timed region
                x, nfe[name] = sampler.group(o, g)
            if name.startswith("row") and r < n:
                samples.setdefault(name, {})[g] = x
            bar.update()
            return x.shape[0]
        return call

    def timed(name, r):
        return group_of(name, r) in full

    def on_call(v, r):
        if bar.total < (r + 1) * len(variants):  # a round more, for one taken under other processes' load
            bar.total = (r + 1) * len(variants)
            bar.set_description_str(f"{phase} (timed, round {r + 1}: another for one under load)", refresh=False)
        bar.set_postfix_str(f"round {r + 1}: {fmt('fractions', variants[v][0])}", refresh=False)

    with tqdm(total=rounds * len(variants), desc=f"{phase} (timed, {rounds} rounds)", unit="group",
              dynamic_ncols=True) as bar:
        measured = timing.interleaved({v: run(v) for v in variants}, rounds, clock, timed, on_call,
                                      max_rounds=2 * rounds)
    columns, grids, out_rows = _columns(measured, nfe, alone_of, spec), [], []
    for i, fractions in enumerate(rows_fractions):
        name = f"row {i}"
        x = torch.cat([samples[name][g] for g in range(n)])
        row, grid = finish(fractions, x, nfe[name], columns[name], key=name)
        out_rows.append(row)
        grids.append(grid)
    line = timing.drift(measured)
    if line:
        checks.warn(f"timing: {line}")
    facts = {"rounds": len(measured.foreign), "rounds_used": len(measured.used), "workers": sampler.workers,
             "threads_per_worker": sampler.threads,
             "cpu_capability": torch.backends.cpu.get_cpu_capability(), "drift": line,
             "foreign_cores": [None if f is None else round(f, 2) for f in measured.foreign]}
    return out_rows, grids, facts


def _columns(measured, nfe, alone_of, spec):
    """Each row's timing columns: seconds per image (median and quartiles over the rounds), the speedup against
    the last member alone (the median of the per-round ratios), the cost model's prediction and its flag."""
    k = len(alone_of)
    alone = [measured.stats(alone_of[m]) for m in range(k)]
    costs = timing.costs(alone, [nfe[alone_of[m]][m] for m in range(k)])
    out = {}
    for name in (v for v in measured.seconds if v.startswith("row")):
        t, ratio = measured.stats(name), measured.ratio(alone_of[k - 1], name)
        predicted = timing.predict(costs, nfe[name])
        flag = timing.flag(t, predicted, float(spec.get("tolerance", 0.1)))
        if flag:
            checks.warn(f"timing: a row with NFE {fmt('nfe', nfe[name])} took {t.median * 1000:.2f} ms/image, "
                        f"{flag} ({predicted.median * 1000:.2f} ms/image from the members' times alone)")
        out[name] = {"s_per_image": t.median, "s_per_image_p25": t.p25, "s_per_image_p75": t.p75,
                     "speedup": ratio.median, "speedup_p25": ratio.p25, "speedup_p75": ratio.p75,
                     "predicted_s_per_image": predicted.median, "timing_flag": flag}
    return out
