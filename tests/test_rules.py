"""The trajectory schedules of the paper's Table 7 as stitch rules (tstitch.sampling.stitch.plan): large-to-small
(reverse), interleave and decreasing probability beside T-Stitch's small-to-large (steps); each a fixed plan."""
import numpy as np
import pytest

import tstitch
from tstitch.errors import ConfigError
from tstitch.sampling.stitch import PLAN_SEED, RULES, interleave, plan

TS = [float(t) for t in range(999, -1, -10)][:100]


def test_reverse_is_the_blocks_of_steps_in_reverse_member_order():
    assert plan([0.5, 0.5], TS[:10], "reverse") == [1] * 5 + [0] * 5
    assert plan([0.2, 0.3, 0.5], TS[:10], "reverse") == [2] * 5 + [1] * 3 + [0] * 2
    assert plan([0.2, 0.3, 0.5], TS[:10], "steps") == [0] * 2 + [1] * 3 + [2] * 5


def test_interleave_keeps_the_counts_and_spreads_them():
    assert plan([0.5, 0.5], TS[:10], "interleave") == [0, 1] * 5            # the paper's alternation, small first
    for fractions in ([0.3, 0.7], [0.2, 0.3, 0.5], [0.1, 0.9], [1.0, 0.0]):
        p = plan(fractions, TS, "interleave")
        counts = [p.count(k) for k in range(len(fractions))]
        assert counts == [p.count(k) for k in range(len(fractions))] == [plan(fractions, TS, "steps").count(k)
                                                                         for k in range(len(fractions))]
        for k, f in enumerate(fractions):  # every prefix holds its share, within one step
            prefix = np.cumsum([q == k for q in p])
            assert np.all(np.abs(prefix - f * np.arange(1, len(p) + 1)) <= 1.0 + 1e-9), (fractions, k)
    assert interleave([1, 3]) == [1, 0, 1, 1]


def test_decreasing_probability_falls_and_is_fixed_data():
    p = plan([0.5, 0.5], TS, "decreasing")
    assert p == plan([0.5, 0.5], TS, "decreasing")                          # the same plan every call
    first, last = p[:50].count(0), p[50:].count(0)
    assert first > 35 and last < 15                                          # probability 1 -> 0
    draws = np.random.default_rng(PLAN_SEED).random(100)
    assert p == [0 if u < q else 1 for u, q in zip(draws, np.linspace(1, 0, 100))]
    assert 40 <= p.count(0) <= 60
    low = plan([0.2, 0.8], TS, "decreasing")
    assert 10 <= low.count(0) <= 30 and low[-40:].count(0) < low[:40].count(0) / 2  # p: 0.4 -> 0, mean 0.2
    with pytest.raises(ConfigError, match="two-member schedule"):
        plan([0.2, 0.3, 0.5], TS, "decreasing")


def test_an_unknown_rule_names_the_rules():
    with pytest.raises(ConfigError, match="use one of steps, official, reverse, interleave, decreasing"):
        plan([0.5, 0.5], TS, "zigzag")
    assert RULES == ("steps", "official", "reverse", "interleave", "decreasing")


def test_sample_runs_each_rule_and_reports_its_plan():
    small, large = tstitch.load("toy/small"), tstitch.load("toy/large")
    x, y, _ = tstitch.seeds.draw(range(2), large.space.shape, 10, "balanced")
    outs = {}
    for rule in ("steps", "reverse", "interleave"):
        out = tstitch.sample([small, large], x, y, fractions=[0.5, 0.5], solver="ddim", steps=6, rule=rule)
        assert out.nfe == [3, 3] and out.plan == plan([0.5, 0.5], out.timesteps, rule)
        outs[rule] = out.x
    assert not np.allclose(outs["steps"].numpy(), outs["reverse"].numpy())
    assert not np.allclose(outs["steps"].numpy(), outs["interleave"].numpy())
