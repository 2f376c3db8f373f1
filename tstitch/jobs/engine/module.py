import time

import lightning as L
import torch
import torch.distributed as dist

from tstitch.data import seeds
from tstitch.jobs import timing
from tstitch.jobs.clock import Clock, sync
from tstitch.models import checks
from tstitch.models.protocols import Wrapped
from tstitch.sampling.sample import sample
from tstitch.sampling.stitch import alone


class Seeds(torch.utils.data.Dataset):
    """The seeds still to generate, one item each."""

    def __init__(self, todo):
        self.todo = list(todo)

    def __len__(self):
        return len(self.todo)

    def __getitem__(self, i):
        return self.todo[i]


class RankShare(torch.utils.data.Sampler):
    """This rank's share of the items: every ``world``-th from ``rank`` on. Unlike ``DistributedSampler`` it does
    not pad ranks to equal length with repeated seeds, so no image is generated twice. Rank and world size are
    read when iterating, i.e. after the launcher has set up the process group."""

    def __init__(self, n):
        self.n = n

    def _indices(self):
        ready = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if ready else (0, 1)
        return range(rank, self.n, world)

    def __iter__(self):
        return iter(self._indices())

    def __len__(self):
        return len(self._indices())


class Timed(Wrapped):
    """A member that tells ``clock`` when it is called; everything else is the member's own."""

    def __init__(self, member, k, clock):
        super().__init__(member)
        self.k, self.clock = k, clock

    def __call__(self, x, t, cond):
        self.clock.enter(self.k)
        return self.member(x, t, cond)


class Generation(L.LightningModule):
    """``predict_step(seeds) -> {"seeds", "labels", "images", "nfe"}``: samples drawn from each seed alone,
    decoded to uint8 by ``codec``. ``options`` are ``tstitch.sample``'s keyword arguments.

    Timing, in ``on_predict_end``: the run's own (synchronised, warm-up excluded, summed over ranks) sampling
    seconds in all and per member, and decoding seconds; then, for ``rounds`` > 0, the speedup against the last
    member alone, timed in interleaved rounds (``tstitch.jobs.timing``) on this rank's first (full-size) batch, with the
    members alone for the cost model (``_variants``); each rank times itself and the ranks' medians are averaged."""

    def __init__(self, members, codec, options, labels="random", batch_size=1, warmup=True, rounds=0,
                 tolerance=0.1, prompts=None, base_seed=0, nonfinite="error"):
        super().__init__()
        self.nonfinite, self.warned = nonfinite, []  # seeds with non-finite samples (nonfinite=warn)
        self.members, self.codec, self.options, self.labels = members, codec, dict(options), labels
        # registered so that Lightning moves them to the device; offloaded networks move themselves (fast.offload)
        self.nets = torch.nn.ModuleList([m.net for m in members if not m.offloaded]
                                        + [m.encoder for m in members if m.encoder is not None])
        self.batch_size, self.warmup, self.rounds, self.tolerance = batch_size, warmup, rounds, tolerance
        self.prompts, self.base_seed = prompts, base_seed  # text-conditioned members: seed base + i gets prompt i
        self.clock = None
        self.first_batch, self.nfe, self.warmup_seconds = None, None, 0.0  # set by the first batch and the warm-up
        self.timed, self.drift = None, None  # drift: this rank's line from tstitch.jobs.timing.drift, once timed
        self.totals = torch.zeros(3 + len(members), dtype=torch.float64)  # see _timing's layout
        self.result = {}

    def on_predict_start(self):
        self.codec.to(self.device)  # a VAE decoder runs where the members run
        self.clock = Clock(len(self.members), self.device)
        self.timed = [Timed(m, k, self.clock) for k, m in enumerate(self.members)]
        start = time.perf_counter()
        if self.warmup:  # kernels, compilation and allocator at the real batch size, outside the timed region
            warm = list(range(self.batch_size))
            for k in range(len(self.members)):
                self._sample(warm, self.members, steps=2, fractions=alone(k, len(self.members)))
            self.codec.decode(self._sample(warm, self.members, steps=2)[1].x)
        sync(self.device)
        self.warmup_seconds = time.perf_counter() - start  # includes torch.compile when fast.compile is on
        if self.device.type == "cuda":  # the peak memory of this allocation's own samples (tstitch.jobs.footprint)
            torch.cuda.reset_peak_memory_stats(self.device)

    def _sample(self, batch_seeds, members, **override):
        first = members[0]
        x, y, rng = seeds.draw(batch_seeds, first.space.shape, first.num_classes, self.labels, self.device,
                               self.prompts, self.base_seed)
        return y, sample(members, x, y, randn_like=rng.randn_like, **{**self.options, **override})

    def predict_step(self, batch, batch_idx):
        batch_seeds = [int(s) for s in batch]
        # Matrix kernels are chosen by batch shape, and a last-bit difference can flip a uint8 value: every
        # batch runs at the full batch size (a short tail is padded with its last seed), so which seeds share a
        # batch (rank, restart) never changes an image. Another batch_size may differ by such rounding.
        padded = batch_seeds + batch_seeds[-1:] * (self.batch_size - len(batch_seeds))
        sync(self.device)
        start = time.perf_counter()
        y, r = self._sample(padded, self.timed)
        self.clock.stop()
        sampled = time.perf_counter()
        n = len(batch_seeds)
        self._check(r.x[:n], batch_seeds, padded)
        images, y = self.codec.decode(r.x[:n]), y[:n]
        sync(self.device)
        self.totals[0] += sampled - start
        self.totals[1] += len(batch_seeds)
        self.totals[2] += time.perf_counter() - sampled
        if batch_idx == 0:
            self.first_batch, self.nfe = padded, list(r.nfe)
        if self.prompts:  # the stored label of a text-conditioned sample is its prompt's index in the set
            y = torch.tensor([(s - self.base_seed) % len(self.prompts) for s in batch_seeds])
        return {"seeds": batch_seeds, "labels": y.cpu(), "images": images.cpu(), "nfe": r.nfe}

    def _check(self, x, batch_seeds, padded):
        """Non-finite samples fail the run (or, with ``nonfinite=warn``, are reported): one reduction per batch;
        only a failing batch is sampled again, watching each step, to name where it broke."""
        def resample(watch):
            return self._sample(padded, self.members, callback=watch)[1]

        self.warned += checks.batch(x, batch_seeds, resample, [m.name for m in self.members], self.nonfinite)

    def on_predict_end(self):
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None  # not the rounds'
        self.totals[3:] += torch.tensor(self.clock.seconds, dtype=torch.float64)
        reduce = self.trainer.strategy.reduce
        # all_reduce works in place: reduce copies, so that the max sees this rank's own time
        totals = reduce(self.totals.to(self.device, copy=True), reduce_op="sum").cpu().tolist()
        slowest = float(reduce(self.totals[:1].to(self.device, copy=True), reduce_op="max"))  # ranks run side by side
        self.result = _timing(totals, slowest, [m.name for m in self.members])
        if self.options["fractions"][-1] == 1.0:  # this allocation is the last member alone
            if self.result:
                self.result.update(baseline_s_per_image=self.result["s_per_image"], speedup=1.0, speedup_p25=1.0,
                                   speedup_p75=1.0)
        elif self.rounds:
            self.result.update(self._speedup(reduce))
        self.result["warmup_seconds"] = self.warmup_seconds
        if peak is not None:
            self.result.update(peak_memory_gb=peak / 2 ** 30, peak_memory_bytes=peak)

    def _variants(self):
        """What is timed: the allocation, the last member alone (the speedup's reference) and, for the cost model,
        each other member the allocation calls, alone, where a call of it took at most 1.5x a call of the last
        member in the run (members of a stitch run small to large: then a round costs at most a few baselines).
        Returns (name -> fractions, member -> the name of its variant alone, or None where it is not timed)."""
        k, fractions = len(self.members), [float(f) for f in self.options["fractions"]]
        per_call = [s / n if n else None for s, n in zip(self.clock.seconds, self.nfe)]
        variants, alone_of = {"allocation": fractions}, {}
        for m in range(k):
            if fractions == alone(m, k):
                alone_of[m] = "allocation"
            elif m == k - 1 or (per_call[m] is not None
                                and (per_call[-1] is None or per_call[m] <= 1.5 * per_call[-1])):
                alone_of[m] = f"{self.members[m].name} alone"
                variants[alone_of[m]] = alone(m, k)
            else:
                alone_of[m] = None
        return variants, alone_of

    def _speedup(self, reduce):
        """This rank's interleaved rounds (``_rounds``), the ranks' medians averaged: the speedup, the times of
        the allocation and of the last member alone, the cost model's prediction and its flag."""
        local = self._rounds() if self.first_batch else torch.zeros(12, dtype=torch.float64)
        n, *speedup, base, t, t25, t75, n_pred, p, p25, p75 = \
            reduce(local.to(self.device, copy=True), reduce_op="sum").cpu().tolist()
        if not n:
            return {}
        out = {"speedup": speedup[0] / n, "speedup_p25": speedup[1] / n, "speedup_p75": speedup[2] / n,
               "baseline_s_per_image": base / n, "timed_s_per_image": t / n, "timed_s_per_image_p25": t25 / n,
               "timed_s_per_image_p75": t75 / n, "timing_rounds": self.rounds, "timing_flag": None,
               "timing_drift": self.drift}
        if n_pred:
            predicted = timing.Stats(p / n_pred, p25 / n_pred, p75 / n_pred, self.rounds)
            measured = timing.Stats(t / n, t25 / n, t75 / n, self.rounds)
            out["predicted_s_per_image"] = predicted.median
            out["timing_flag"] = timing.flag(measured, predicted, self.tolerance)
            if out["timing_flag"] and self.trainer.is_global_zero:
                checks.warn(f"timing: this allocation took {measured.median * 1000:.2f} ms/image, "
                            f"{out['timing_flag']} ({predicted.median * 1000:.2f} ms/image from the members' "
                            "times alone)")
        return out

    def _rounds(self):
        """Interleaved rounds on the first batch; returns [1, speedup (median, p25, p75), the last member alone's
        median, the allocation's median and quartiles, 1 if predicted, the prediction (median, p25, p75)]."""
        variants, alone_of = self._variants()
        nfe = {}

        def run(name):
            def call(r):
                nfe[name] = self._sample(self.first_batch, self.members, fractions=variants[name])[1].nfe
                return len(self.first_batch)
            return call

        measured = timing.interleaved({v: run(v) for v in variants}, self.rounds, timing.clock_for(self.device))
        t, ratio = measured.stats("allocation"), measured.ratio(alone_of[len(self.members) - 1], "allocation")
        used = nfe["allocation"]
        out = [1.0, ratio.median, ratio.p25, ratio.p75, measured.stats(alone_of[len(self.members) - 1]).median,
               t.median, t.p25, t.p75, 0.0, 0.0, 0.0, 0.0]
        if all(alone_of[m] is not None for m, n in enumerate(used) if n):  # members it does not call cost 0
            zero = timing.Stats(0.0, 0.0, 0.0, self.rounds)
            times = [measured.stats(alone_of[m]) if n else zero for m, n in enumerate(used)]
            calls = [nfe[alone_of[m]][m] if n else 1 for m, n in enumerate(used)]
            predicted = timing.predict(timing.costs(times, calls), used)
            out[8:] = [1.0, predicted.median, predicted.p25, predicted.p75]
        self.drift = timing.drift(measured)
        if self.drift:
            ranks = self.trainer.world_size > 1
            checks.warn(f"timing{f' (rank {self.global_rank})' if ranks else ''}: {self.drift}")
        return torch.tensor(out, dtype=torch.float64)

    def timing(self):
        return self.result


def _timing(totals, slowest, names):
    """Summed [sampling s, images, decoding s, s per member...] and the slowest rank's sampling seconds -> the
    run's own record (images/s in all: every image over the slowest rank's time)."""
    seconds, count, decode, *per_member = totals
    if not count:
        return {}
    return {"s_per_image": seconds / count, "images_per_second": count / slowest,
            "s_per_image_per_member": {n: s / count for n, s in zip(names, per_member)},
            "decode_s_per_image": decode / count, "images_timed": int(count)}
