"""Stitching by step index: a solver's grid groups its model calls into steps, the plan assigns steps, ``Stitch``
routes each call to the member of its step (also where a timestep repeats), TStitchSD's official rule by loop
index, and members retimed at fractional grid times."""
import pytest
import torch

from tstitch.errors import ConfigError
from tstitch.models.protocols import Grid, Output
from tstitch.models.schedules import Schedule
from tstitch.sampling.stitch import Retimed, Stitch, plan

TENTHS = [i / 10 for i in range(11)]


def recorder(k, calls):
    return lambda x, t: calls.append((k, t)) or Output(x + k)


def pndm_grid(n):
    """PNDM (PLMS, skip_prk_steps) at n steps as diffusers sets it: n + 1 calls, the second timestep twice; its
    first step (the warm-up) is calls 0 and 1."""
    ts = [1 + 1000 // n * i for i in range(n)][::-1]
    return Grid([ts[0], ts[1], *ts[1:]], [0, 0, *range(1, n)])


def test_grid_steps_and_starts():
    g = pndm_grid(4)
    assert g.timesteps == [751, 501, 501, 251, 1] and g.steps == 4 and g.starts == [0, 2, 3, 4]
    heun = Grid([999.0, 666.0, 666.0, 333.0, 333.0, 0.0, 0.0], [0, 0, 1, 1, 2, 2, 3])
    assert heun.steps == 4 and heun.starts == [0, 2, 4, 6]
    for bad in ([0, 2], [1, 1], [0, 1, 0], [0]):
        with pytest.raises(ValueError, match="one step index per call"):
            Grid([5, 4], bad)


def test_a_repeated_timestep_routes_by_step():
    """PNDM's two calls at t = 501 belong to different steps (the warm-up's second call, then step 1): with the
    switch after the warm-up they go to different members, which routing by timestep value cannot do."""
    calls = []
    g = pndm_grid(4)
    stitch = Stitch([recorder(0, calls), recorder(1, calls)], g.timesteps, [0, 1, 1, 1], g.step)
    x = torch.zeros(1)
    assert [stitch(x, t).eps.item() for t in g.timesteps] == [0, 0, 1, 1, 1]
    assert calls == [(0, 751), (0, 501), (1, 501), (1, 251), (1, 1)] and stitch.nfe == [2, 3]


def test_a_multi_call_step_stays_with_one_member():
    """Heun's step = its first-order call and its correction: the plan's 2 steps of member 0 are 4 model calls."""
    g = Grid([999.0, 666.0, 666.0, 333.0, 333.0, 0.0, 0.0], [0, 0, 1, 1, 2, 2, 3])
    calls = []
    stitch = Stitch([recorder(0, calls), recorder(1, calls)], g.timesteps, [0, 0, 1, 1], g.step)
    for t in g.timesteps:
        stitch(torch.zeros(1), t)
    assert [k for k, _ in calls] == [0, 0, 0, 0, 1, 1, 1] and stitch.nfe == [4, 3]


def test_calls_off_the_grid_are_errors():
    stitch = Stitch([recorder(0, [])], [900, 500], [0, 0])
    with pytest.raises(ValueError, match="call 0 at timestep 500, but the grid's call 0 is at 900"):
        stitch(torch.zeros(1), 500)
    stitch(torch.zeros(1), 900)
    stitch(torch.zeros(1), 500)
    with pytest.raises(ValueError, match="call 2 at timestep 100, but the grid's call 2 is at none"):
        stitch(torch.zeros(1), 100)
    with pytest.raises(ValueError, match="plan has 2 entries for 4 steps"):
        Stitch([recorder(0, [])], *[[751, 501, 501, 251, 1], [0, 0]], [0, 0, 1, 2, 3])


def tstitch_sd(r, length):
    """TStitchSD.__call__'s choice at each loop index i over the scheduler's timesteps: small iff (i + 1) / N <= r."""
    return [0 if (i + 1) / length <= r else 1 for i in range(length)]


@pytest.mark.parametrize("n", [4, 25, 50])
def test_official_sd_rule_is_tstitchsd_by_loop_index(n):
    """rule=official with a loop: every call gets TStitchSD's member, on PNDM's grid of n + 1 loop iterations and a
    one-call-per-step grid; where TStitchSD splits PNDM's warm-up step (n = 4, r = 0.2, 0.3: 1/5 <= r < 2/5), the
    warm-up's second call follows its first."""
    g = pndm_grid(n)
    loop = (g.starts, len(g.timesteps))
    for r in TENTHS:
        steps_plan = plan([r, 1 - r], [g.timesteps[c] for c in g.starts], "official", loop=loop)
        official = tstitch_sd(r, n + 1)
        assert [steps_plan[s] for s in g.step] == official[:1] * 2 + official[2:]
        assert official[0] == official[1] or (n, r) in ((4, 0.2), (4, 0.3))
        single = plan([r, 1 - r], list(range(n)), "official", loop=(list(range(n)), n))
        assert single == tstitch_sd(r, n)
    # at 50 steps r = 0.4 is 20 small loop iterations: the warm-up (2 calls) and 18 one-call steps
    if n == 50:
        assert plan([0.4, 0.6], [0] * 50, "official", loop=loop).count(0) == 19


def test_official_sd_rule_keeps_a_split_step_whole():
    """Where TStitchSD would run PNDM's warm-up on both UNets (1/51 <= r < 2/51), the whole step is the small one's."""
    g = pndm_grid(50)
    steps_plan = plan([0.03, 0.97], [g.timesteps[c] for c in g.starts], "official", loop=(g.starts, 51))
    assert tstitch_sd(0.03, 51)[:2] == [0, 1] and steps_plan[:2] == [0, 1]
    assert [steps_plan[s] for s in g.step][:3] == [0, 0, 1]
    with pytest.raises(ConfigError, match="TStitchSD's two-member rule, not for 3 members; use stitch.rule=steps"):
        plan([0.2, 0.3, 0.5], [0] * 50, "official", loop=(g.starts, 51))


def test_steps_rule_counts_steps_not_calls():
    """rule=steps gives floor(N r + 1/2) steps; on PNDM's grid the first member's calls include the warm-up's two."""
    g = pndm_grid(10)
    steps_plan = plan([0.4, 0.6], [g.timesteps[c] for c in g.starts])
    assert steps_plan == [0] * 4 + [1] * 6 and [steps_plan[s] for s in g.step].count(0) == 5


def test_retimed_member_at_a_fractional_grid_time():
    """A grid time between timesteps is read on the grid's schedule (linear in log-SNR) and mapped to the member's
    own schedule at that noise level; integer times keep the table's alpha-bar."""
    seen = []

    class Member:
        schedule = Schedule("vp_continuous")

        def __call__(self, x, t, cond):
            seen.append(t)
            return Output(x)

    grid = Schedule("scaled_linear")
    retimed = Retimed(Member(), grid)
    retimed(torch.zeros(1), 500.25, None)
    retimed(torch.zeros(1), 500, None)
    own = Schedule("vp_continuous")
    assert seen[0] == pytest.approx(own.time_of(grid.abar_at(500.25)), abs=1e-9)
    assert seen[1] == own.time_of(grid.alphas_cumprod[500])
    assert seen[1] < seen[0] < own.time_of(grid.alphas_cumprod[501])


@pytest.mark.parametrize("solver,options", [("dpm_solver", {}),
                                            ("scheduler", {"scheduler": "EulerDiscreteScheduler",
                                                           "config": {"use_karras_sigmas": True}})])
@pytest.mark.parametrize("grid,retimed", [("scaled_linear", "vp_continuous"), ("scaled_linear", "linear")])
def test_members_on_different_schedules_stitch_at_fractional_times(solver, options, grid, retimed):
    """The exact denoiser of Gaussian data wrapped once per schedule (tests/test_stitch.py): on the new solvers'
    fractional grid times the stitched samples equal the grid member's alone; a member that misdeclares its
    schedule, and so is fed the grid's timestep as is, gives other samples. The retimed member's schedule spans
    the grid's noise levels (a member is fed its timestep 0 below its own lowest level)."""
    from test_stitch import ExactMember

    noise = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(64, dtype=torch.long)
    lead, other = ExactMember("lead", grid), ExactMember("other", retimed)

    def pair(o):  # the grid is the first running member's, or for a shipped scheduler the last one's
        return [o, lead] if solver == "scheduler" else [lead, o]

    alone = sample_with([lead], noise, y, solver, options)
    got = sample_with(pair(other), noise, y, solver, options, [0.4, 0.6] if solver == "scheduler" else [0.6, 0.4])
    assert torch.allclose(got, alone, atol=1e-5, rtol=0), (got - alone).abs().max()
    assert any(not float(t).is_integer() for t in other.calls) and any(not float(t).is_integer() for t in lead.calls)
    naive = ExactMember("naive", retimed, declared=grid)
    bad = sample_with(pair(naive), noise, y, solver, options, [0.4, 0.6] if solver == "scheduler" else [0.6, 0.4])
    assert (bad - alone).abs().max() > 1e-3


def sample_with(members, noise, y, solver, options, fractions=None):
    from tstitch.sampling.sample import sample

    return sample(members, noise, y, fractions=fractions, solver=solver, steps=20, **options).x
