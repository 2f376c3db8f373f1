import time

import lightning as L
import torch
import torch.distributed as dist

from tstitch import checks, seeds
from tstitch.clock import Clock, sync
from tstitch.protocols import Wrapped
from tstitch.sample import sample
from tstitch.stitch import alone


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

    Timing (synchronised, warm-up excluded, summed over ranks in ``on_predict_end``): sampling seconds in all
    and per member, decoding seconds, and, when ``baseline_batches`` > 0, the same batch size sampled with the
    last member alone on the same devices, for the speedup of this allocation."""

    def __init__(self, members, codec, options, labels="random", batch_size=1, warmup=True, baseline_batches=0,
                 prompts=None, base_seed=0, nonfinite="error"):
        super().__init__()
        self.nonfinite, self.warned = nonfinite, []  # seeds with non-finite samples (nonfinite=warn)
        self.members, self.codec, self.options, self.labels = members, codec, dict(options), labels
        # registered so that Lightning moves them to the device; offloaded networks move themselves (fast.offload)
        self.nets = torch.nn.ModuleList([m.net for m in members if not m.offloaded]
                                        + [m.encoder for m in members if m.encoder is not None])
        self.batch_size, self.warmup, self.baseline_batches = batch_size, warmup, baseline_batches
        self.prompts, self.base_seed = prompts, base_seed  # text-conditioned members: seed base + i gets prompt i
        self.clock = None
        self.first_batch, self.warmup_seconds = None, 0.0  # set by the first batch and the warm-up
        self.timed = None
        self.totals = torch.zeros(5 + len(members), dtype=torch.float64)  # see _timing's layout
        self.result = {}

    def on_predict_start(self):
        self.codec.to(self.device)  # a VAE decoder runs where the members run
        self.clock = Clock(len(self.members), self.device)
        self.timed = [Timed(m, k, self.clock) for k, m in enumerate(self.members)]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        if self.warmup:  # kernels, compilation and allocator at the real batch size, outside the timed region
            warm = list(range(self.batch_size))
            for k in range(len(self.members)):
                self._sample(warm, self.members, steps=2, fractions=alone(k, len(self.members)))
            self.codec.decode(self._sample(warm, self.members, steps=2)[1].x)
        sync(self.device)
        self.warmup_seconds = time.perf_counter() - start  # includes torch.compile when fast.compile is on

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
            self.first_batch = padded
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
        fractions = self.options["fractions"]
        if self.baseline_batches and fractions[-1] != 1.0 and self.first_batch:
            last = alone(-1, len(self.members))
            for _ in range(self.baseline_batches):
                sync(self.device)
                start = time.perf_counter()
                self._sample(self.first_batch, self.members, fractions=last)  # a full batch (padded)
                sync(self.device)
                self.totals[3] += time.perf_counter() - start
                self.totals[4] += len(self.first_batch)
        self.totals[5:] += torch.tensor(self.clock.seconds, dtype=torch.float64)
        reduce = self.trainer.strategy.reduce
        # all_reduce works in place: reduce copies, so that the max sees this rank's own time
        totals = reduce(self.totals.to(self.device, copy=True), reduce_op="sum").cpu().tolist()
        slowest = float(reduce(self.totals[:1].to(self.device, copy=True), reduce_op="max"))  # ranks run side by side
        self.result = _timing(totals, slowest, [m.name for m in self.members], fractions)
        self.result["warmup_seconds"] = self.warmup_seconds
        if self.device.type == "cuda":
            self.result["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30

    def timing(self):
        return self.result


def _timing(totals, slowest, names, fractions):
    """Summed [sampling s, images, decoding s, baseline s, baseline images, s per member...] and the slowest
    rank's sampling seconds -> the record (images/s in all: every image over the slowest rank's time)."""
    seconds, count, decode, base_seconds, base_count, *per_member = totals
    if not count:
        return {}
    out = {"s_per_image": seconds / count, "images_per_second": count / slowest,
           "s_per_image_per_member": {n: s / count for n, s in zip(names, per_member)},
           "decode_s_per_image": decode / count, "images_timed": int(count)}
    if fractions[-1] == 1.0:
        out["baseline_s_per_image"], out["speedup"] = out["s_per_image"], 1.0
    elif base_count:
        out["baseline_s_per_image"] = base_seconds / base_count
        out["speedup"] = out["baseline_s_per_image"] / out["s_per_image"]
    return out
