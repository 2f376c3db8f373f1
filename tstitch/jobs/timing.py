"""One way to time variants that are compared with each other (allocations of a sweep, an allocation against the
last member alone, a fast path against fp32): **interleaved rounds**. Each round runs every variant once, in an order
that rotates from round to round, and reads the clock around each call; a variant's time is the median of its rounds
with the quartiles as its spread, and the ratio of two variants is the median of their per-round ratios. Whatever
changes the machine's speed during a run (another process, frequency scaling, a GPU's clocks) then lands on every
variant alike, instead of bending the one that happened to run at that moment.

Statistics are ``torch.utils.benchmark``'s ``Measurement`` (median, quartiles, its spread warnings). Its ``Timer``
is not used for the calls themselves: ``Timer.timeit`` runs its statement twice more as a warm-up on every call
(three times the work for multi-second batches) and cannot interleave. The clock is that module's (a device sync,
then ``timeit.default_timer``) on CPUs, and CUDA events on GPUs (``clock_for``); tests pass a fake one.

The cost model (T-Stitch's own account of its speed): a member's cost per model call is its time alone divided by
its calls, and an allocation should take sum_i NFE_i x t_i. ``predict`` gives that with its spread, ``flag`` names a
row the measurement puts further off than both spreads and the tolerance allow, and ``drift`` says, in one line,
when the machine's load or the spread of the rounds says the numbers were taken on a changing machine.
"""
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.benchmark import Measurement
from torch.utils.benchmark.utils.common import TaskSpec

SPREAD_WARN = 0.10  # a relative spread (IQR / median) above this says the machine's speed changed
FOREIGN_WARN = 0.5  # CPU cores used by other processes while timing, above which the rounds were taken under load


def clock_for(device) -> Callable[[], float]:
    """A clock in seconds for work on ``device``: CUDA events on a GPU (device time; reading it waits for the
    queued work), else a host clock after a device sync (``torch.utils.benchmark``'s timer)."""
    if str(device).startswith("cuda"):
        return CudaClock(torch.device(device))
    from torch.utils.benchmark.utils.timer import timer

    return timer


class CudaClock:
    """Seconds since its creation, read from CUDA events on ``device``: each reading records an event in the
    current stream and waits for it, so the difference of two readings is the device time of the work queued
    between them."""

    def __init__(self, device):
        self.device = device
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record(torch.cuda.current_stream(device))

    def __call__(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        event.synchronize()
        return self.origin.elapsed_time(event) / 1000.0


class Load:
    """CPU cores used by other processes between two readings (Linux ``/proc/stat`` less this process's own CPU
    time); None where ``/proc/stat`` cannot be read."""

    def __init__(self):
        self.last = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        own = resource.getrusage(resource.RUSAGE_SELF)
        return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime, time.monotonic()

    def __call__(self):
        now, last = self._read(), self.last
        self.last = now
        if now is None or last is None or now[2] - last[2] < 0.05:
            return None
        return max(0.0, ((now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2]))


@dataclass
class Stats:
    """A time (or ratio) from several rounds: median and quartiles."""
    median: float
    p25: float
    p75: float
    n: int

    @property
    def spread(self):
        """The interquartile range relative to the median."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0


def stats(values: Sequence[float], name="variant") -> Stats:
    """Median and quartiles of ``values`` (``torch.utils.benchmark.Measurement``'s)."""
    m = Measurement(1, [float(v) for v in values], TaskSpec(stmt=name, setup="", num_threads=torch.get_num_threads()))
    m._lazy_init()  # its quartiles are computed on first use of median; p25/p75 have no public accessor
    return Stats(m.median, m._p25, m._p75, len(values))


@dataclass
class Rounds:
    """Per-image seconds of each variant in each round that timed it (``seconds[name][round]``), the other
    processes' CPU use (cores) during each round, and the rounds the statistics use (``used``: the quiet ones when
    there are enough of them, else all)."""
    seconds: dict[str, dict[int, float]]
    foreign: list[float | None] = field(default_factory=list)
    used: list[int] | None = None

    def values(self, name) -> list[float]:
        rounds = self.seconds[name]
        return [rounds[r] for r in (self.used if self.used is not None else sorted(rounds)) if r in rounds]

    def stats(self, name) -> Stats:
        return stats(self.values(name), name)

    def ratio(self, base, name) -> Stats:
        """``base``'s time over ``name``'s (a speedup), the median over the rounds that timed both."""
        a, b = self.seconds[base], self.seconds[name]
        rounds = [r for r in (self.used if self.used is not None else sorted(a)) if r in a and r in b]
        return stats([a[r] / b[r] for r in rounds], f"{base}/{name}")

    @property
    def dropped(self) -> int:
        """Rounds left out of the statistics because other processes were busy during them."""
        return len(self.foreign) - len(self.used) if self.used is not None else 0


def quiet(foreign, threshold=FOREIGN_WARN):
    """Whether a round was taken without other processes busy (unknown counts as quiet)."""
    return foreign is None or foreign < threshold


def interleaved(variants: dict[str, Callable[[int], int]], rounds: int, clock: Callable[[], float] = None,
                timed: Callable[[str, int], bool] = None, on_call: Callable[[str, int], None] = None,
                max_rounds: int | None = None) -> Rounds:
    """Run each of ``variants`` (name -> ``run(round)``, returning how many images it made) once per round, for
    ``rounds`` rounds, the order rotated by one each round. Rounds during which other processes used half a core
    or more are left out of the statistics, and more rounds are run until ``rounds`` quiet ones were timed or
    ``max_rounds`` (default ``rounds``) ran; with fewer quiet rounds than half of ``rounds``, every round counts.
    ``timed(name, round)`` says whether that call's time counts (default: all; e.g. a short tail batch does not),
    ``on_call(name, round)`` is called before each call (progress). The clock (default ``clock_for("cpu")``) is
    read right before and after each call."""
    clock = clock or clock_for("cpu")
    names = list(variants)
    seconds, load = {n: {} for n in names}, Load()
    foreign = []
    r = 0
    while r < rounds or (r < (max_rounds or rounds) and sum(map(quiet, foreign)) < rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if on_call is not None:
                on_call(name, r)
            start = clock()
            images = variants[name](r)
            elapsed = clock() - start
            if images and (timed is None or timed(name, r)):
                seconds[name][r] = elapsed / images
        foreign.append(load())
        r += 1
    calm = [i for i, f in enumerate(foreign) if quiet(f)]
    return Rounds(seconds, foreign, calm if len(calm) * 2 >= rounds else list(range(len(foreign))))


def costs(alone: Sequence[Stats], nfe: Sequence[int]) -> list[Stats]:
    """Each member's seconds per model call per image, from its time alone (``alone[i]``) over its calls."""
    return [Stats(s.median / n, s.p25 / n, s.p75 / n, s.n) for s, n in zip(alone, nfe)]


def predict(costs: Sequence[Stats], nfe: Sequence[int]) -> Stats:
    """The cost model's time of an allocation with ``nfe`` calls per member: sum_i NFE_i x t_i, with its quartiles
    summed the same way."""
    return Stats(sum(c.median * n for c, n in zip(costs, nfe)), sum(c.p25 * n for c, n in zip(costs, nfe)),
                 sum(c.p75 * n for c, n in zip(costs, nfe)), min(c.n for c in costs))


def flag(measured: Stats, predicted: Stats, tolerance: float) -> str | None:
    """A one-phrase flag when ``measured`` is off the cost model by more than ``tolerance`` (relative) and more
    than the two spreads together, else None: e.g. ``+35% off the cost model``."""
    if not predicted.median:
        return None
    off = measured.median / predicted.median - 1
    allowed = max(tolerance, measured.spread + predicted.spread)
    return f"{off:+.0%} off the cost model" if abs(off) > allowed else None


def drift(rounds: Rounds, names: Sequence[str] | None = None) -> str | None:
    """One line when the timing was taken on a changing machine (other processes busy, or a spread over 10%),
    saying what to do; None on a quiet one."""
    names = list(names or rounds.seconds)
    spreads = {n: rounds.stats(n).spread for n in names if len(rounds.values(n)) >= 2}
    worst = max(spreads.values(), default=0.0)
    busy = [f for f in rounds.foreign if f is not None]
    causes = []
    if busy and max(busy) >= FOREIGN_WARN:
        left = f", {rounds.dropped} of {len(rounds.foreign)} rounds left out" if rounds.dropped else ""
        causes.append(f"other processes used up to {max(busy):.1f} CPU cores{left}")
    if worst > SPREAD_WARN:
        causes.append(f"the rounds spread up to {worst:.0%} of a median")
    if not causes:
        return None
    return (f"the machine's speed changed while timing ({'; '.join(causes)}): the times are medians of interleaved "
            "rounds, so their ratios hold, but for tighter times run on a quiet machine or with more rounds "
            "(timing.rounds=...)")
