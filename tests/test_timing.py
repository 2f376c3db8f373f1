"""The one timing method (jobs/timing.py) and the sweep's use of it, on fake clocks whose speed changes during the
run: interleaved rounds keep ratios (and, when the change covers a minority of the rounds, times) within 5% of the
truth where one sequential reading per variant is off by far more; a row off the cost model is flagged."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from tstitch.cli import CONF
from tstitch.jobs import build, timing
from tstitch.jobs.sweep import sweep
from tstitch.models.protocols import Wrapped


@pytest.fixture(autouse=True)
def _no_real_load(monkeypatch):
    """The fake clocks' machine has no other processes: the real one's (e.g. another test run) are not read."""
    monkeypatch.setattr(timing.Load, "_read", staticmethod(lambda: None))


COSTS = {"A": 1.0, "B": 0.5, "C": 0.25}  # seconds per call on a quiet machine


class FakeClock:
    """Virtual seconds: work advances it by its cost times the machine's slowdown at that moment, ``slow(now)``."""

    def __init__(self, slow=lambda now: 1.0):
        self.now, self.slow = 0.0, slow

    def __call__(self):
        return self.now

    def spend(self, seconds):
        self.now += seconds * self.slow(self.now)


def variants(clock, images=1):
    def run(cost):
        def call(_round):
            clock.spend(cost * images)
            return images
        return call
    return {name: run(cost) for name, cost in COSTS.items()}


def sequential(clock, rounds):
    """The old way: every repeat of A, then of B, then of C."""
    out = {}
    for name, call in variants(clock).items():
        out[name] = []
        for r in range(rounds):
            start = clock()
            call(r)
            out[name].append(clock() - start)
    return {n: timing.stats(v).median for n, v in out.items()}


def half_way(total):
    return lambda now: 3.0 if now > total / 2 else 1.0  # three times slower from half-way on


def test_interleaved_ratios_hold_where_a_sequential_reading_breaks():
    rounds, total = 10, 10 * sum(COSTS.values())
    seq = sequential(FakeClock(half_way(total)), rounds)
    assert seq["A"] / seq["C"] == pytest.approx(4 / 3)  # A all quiet, C all slow: 1.33x where the truth is 4x
    clock = FakeClock(half_way(total))
    rounds_ = timing.interleaved(variants(clock), rounds, clock)
    for name, cost in COSTS.items():
        assert rounds_.ratio("A", name).median == pytest.approx(1.0 / cost, rel=0.05)
    assert abs(seq["A"] / seq["C"] / 4 - 1) > 0.5


def test_interleaved_times_hold_through_a_burst():
    """Another process, five times slower, for a third of the rounds: their medians stay at the quiet times."""
    def burst(now):
        return 5.0 if 3 < now < 29 else 1.0  # 26 s: three rounds of 1.75 quiet seconds at 5x

    clock = FakeClock(burst)
    rounds = timing.interleaved(variants(clock), 9, clock)
    for name, cost in COSTS.items():
        assert rounds.stats(name).median == pytest.approx(cost, rel=0.05)
    seq = sequential(FakeClock(burst), 9)
    assert seq["A"] / COSTS["A"] > 1.5  # the burst came in the middle of A's repeats


def test_rounds_rotate_and_skip_untimed_calls():
    order = []
    calls = {n: (lambda r, n=n: order.append(n) or 2) for n in "XYZ"}
    got = timing.interleaved(calls, 3, FakeClock(), timed=lambda name, r: not (name == "Y" and r == 0))
    assert order == list("XYZ" "YZX" "ZXY")
    assert [len(got.values(n)) for n in "XYZ"] == [3, 2, 3]


def test_rounds_under_load_are_left_out_and_run_again(monkeypatch):
    """Another process busy during rounds 1 and 2: they are not counted, and two more rounds are run."""
    load = iter([0.0, 1.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0])
    monkeypatch.setattr(timing.Load, "__call__", lambda self: next(load))
    clock = FakeClock(lambda now: 4.0 if 1.7 < now < 15.7 else 1.0)  # slow in rounds 1 and 2 (1.75 to 15.75)
    got = timing.interleaved(variants(clock), 4, clock, max_rounds=8)
    assert len(got.foreign) == 6 and got.used == [0, 3, 4, 5] and got.dropped == 2
    for name, cost in COSTS.items():
        assert got.values(name) == pytest.approx([cost] * 4)
    assert "2 of 6 rounds left out" in timing.drift(got)
    load = iter([1.0] * 8)  # busy all along: at most max_rounds, and then every round counts
    assert timing.interleaved(variants(clock), 4, clock, max_rounds=8).used == list(range(8))


def test_stats_are_torch_benchmark_quartiles():
    s = timing.stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.median, s.p25, s.p75, s.n) == (3.0, 2.0, 4.0, 5)
    assert s.spread == pytest.approx(2 / 3)


def test_cost_model_and_flag():
    alone = [timing.Stats(0.2, 0.19, 0.21, 5), timing.Stats(2.0, 1.9, 2.1, 5)]  # 20 calls each
    costs = timing.costs(alone, [20, 20])
    predicted = timing.predict(costs, [8, 12])
    assert predicted.median == pytest.approx(8 * 0.01 + 12 * 0.1)
    assert timing.flag(timing.Stats(1.3, 1.28, 1.32, 5), predicted, 0.1) is None
    assert timing.flag(timing.Stats(1.8, 1.75, 1.85, 5), predicted, 0.1) == "+41% off the cost model"
    assert timing.flag(timing.Stats(1.0, 0.98, 1.02, 5), predicted, 0.1) == "-22% off the cost model"
    wide = timing.Stats(1.6, 1.0, 2.2, 5)  # a spread of 75%: the measurement allows no verdict
    assert timing.flag(wide, predicted, 0.1) is None


def test_drift_line_says_when_the_machine_changed():
    clock = FakeClock()
    quiet = timing.interleaved(variants(clock), 6, clock)
    assert timing.drift(quiet) is None
    clock = FakeClock(half_way(6 * sum(COSTS.values())))
    line = timing.drift(timing.interleaved(variants(clock), 6, clock))
    assert "the rounds spread up to" in line and "timing.rounds" in line
    busy = timing.Rounds(quiet.seconds, [0.1, 1.2, 0.0, 0.0, 0.0, 0.0])
    assert "other processes used up to 1.2 CPU cores" in timing.drift(busy)


def test_load_counts_other_processes_not_this_one(monkeypatch):
    """Busy CPU seconds of the machine less this process's own, over the wall time between two readings."""
    readings = iter([(100.0, 10.0, 0.0), (103.0, 11.5, 2.0), (104.0, 13.5, 4.0), (104.0, 13.5, 4.01)])
    monkeypatch.setattr(timing.Load, "_read", staticmethod(lambda: next(readings)))  # over the fixture's
    load = timing.Load()
    assert load() == pytest.approx(0.75)  # 3 busy s, 1.5 of them ours, in 2 s
    assert load() == 0.0                  # only this process was busy
    assert load() is None                 # too short to tell


# --- the sweep on fake time: members advance a fake clock by their cost per call and image ---

class Costly(Wrapped):
    """A member whose calls cost ``cost`` fake seconds per image; ``switch`` more on its first call after another
    member ran in the same trajectory (a cost that the model of members alone cannot see)."""
    last = [None, None]  # the member and timestep of the last call

    def __init__(self, member, clock, cost, switch=0.0):
        super().__init__(member)
        self.clock, self.cost, self.switch = clock, cost, switch

    def __call__(self, x, t, cond):
        now = float(torch.as_tensor(t).flatten()[0])
        if self.last[0] not in (None, self) and now < self.last[1]:  # the same trajectory, going on
            self.clock.spend(self.switch * x.shape[0])
        self.last[:] = self, now
        self.clock.spend(self.cost * x.shape[0])
        return self.member(x, t, cond)


def toy_sweep(clock, switch=0.0, first=(0.0, 0.2, 0.4, 0.6, 1.0)):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[
            "debug=tiny", "metric=none", f"sweep.first=[{','.join(map(str, first))}]", "solver.steps=5",
            "num_samples=4", "batch_size=2", "timing.rounds=8"])
    members, codec = build.stitch(cfg)
    Costly.last[:] = None, None
    members = [Costly(members[0], clock, 0.01, switch), Costly(members[1], clock, 0.1, switch)]
    return sweep(cfg, stitch=(members, codec), clock=clock)


def test_sweep_speedups_exact_on_a_steady_machine():
    clock = FakeClock()
    rows, _, _, facts = toy_sweep(clock)
    assert clock.now == pytest.approx(SWEEP_SECONDS, rel=0.05)
    # guidance doubles the batch of each call: 2 x cost per image and call, 5 steps
    truth = [5 * 0.2 / (n[0] * 0.02 + n[1] * 0.2) for n in (r["nfe"] for r in rows)]
    assert [r["speedup"] for r in rows] == pytest.approx(truth)
    assert all(r["s_per_image"] == pytest.approx(r["predicted_s_per_image"]) for r in rows)
    assert all(r["timing_flag"] is None for r in rows)
    assert facts["timing"]["rounds"] == 8 and facts["timing"]["drift"] is None


SWEEP_SECONDS = 49.0  # the fake seconds of toy_sweep on a steady machine (warm-up and 8 rounds)


@pytest.mark.parametrize("slow", [lambda now: 3.0 if now > SWEEP_SECONDS / 2 else 1.0,  # slower from half-way on
                                  lambda now: 1.0 + now / SWEEP_SECONDS,                 # ever slower (heat)
                                  lambda now: 6.0 if 15 < now < 27 else 1.0],            # a busy neighbour
                         ids=["step", "ramp", "burst"])
def test_sweep_speedups_monotone_and_true_under_drift(slow):
    rows, _, _, facts = toy_sweep(FakeClock(slow))
    truth = [5 * 0.2 / (n[0] * 0.02 + n[1] * 0.2) for n in (r["nfe"] for r in rows)]
    speedups = [r["speedup"] for r in rows]
    assert speedups == sorted(speedups) and min(speedups[1:]) > 1.0
    assert speedups == pytest.approx(truth, rel=0.05)
    assert all(r["s_per_image_p25"] <= r["s_per_image"] <= r["s_per_image_p75"] for r in rows)


def test_a_row_off_the_cost_model_is_flagged(capsys):
    rows, *_ = toy_sweep(FakeClock(), switch=0.5)  # half a second per image at each switch of member
    flags = {tuple(r["fractions"]): r["timing_flag"] for r in rows}
    assert flags[(0.0, 1.0)] is None and flags[(1.0, 0.0)] is None  # alone: no switch, the model holds
    assert flags[(0.4, 0.6)] is not None and flags[(0.4, 0.6)].endswith("off the cost model")
    assert "off the cost model" in capsys.readouterr().err
