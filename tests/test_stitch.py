"""Trajectory stitching: step allocation, the official switching rule, routing, guidance, seeds, and sample()."""
import math

import numpy as np
import pytest
import torch

from tstitch.data.seeds import SeedNoise, draw
from tstitch.errors import ConfigError
from tstitch.models.adapters.dit import DiTMember
from tstitch.models.nets.dit import DiT
from tstitch.models.protocols import MemberBase, Output, Space
from tstitch.models.schedules import Schedule, grid
from tstitch.sampling.guidance import guided
from tstitch.sampling.sample import sample
from tstitch.sampling.stitch import Stitch, allocate, check_fractions, plan

SPACE = Space("test", (4, 8, 8))
TENTHS = [i / 10 for i in range(11)]


def small_steps(r, n, rule):
    """Number of steps the first (small) member runs with fractions [r, 1 - r] on DiT's uniform n-step grid."""
    timesteps = grid(Schedule("linear"), n)[0].tolist()
    return plan([r, 1 - r], timesteps, rule=rule).count(0)


# --- allocate --------------------------------------------------------------------------------------------------

def test_allocate_examples():
    """Cumulative half-up rounding of the boundaries N * cumsum(f)."""
    assert allocate([0.3, 0.7], 10) == [3, 7]
    assert allocate([0.2, 0.3, 0.5], 10) == [2, 3, 5]
    assert allocate([0.25, 0.5, 0.25], 10) == [3, 5, 2]  # boundaries 2.5 -> 3, 7.5 -> 8
    assert allocate([0.15, 0.15, 0.7], 10) == [2, 1, 7]  # boundaries 1.5 -> 2, 3.0 -> 3
    assert allocate([1 / 3] * 3, 10) == [3, 4, 3]  # boundaries 3.33 -> 3, 6.67 -> 7
    assert allocate([0.0, 1.0], 7) == [0, 7] and allocate([1.0, 0.0], 7) == [7, 0]


def test_allocate_two_members_rounds_half_up():
    """With two members the first gets floor(N r + 1/2) steps, including the exact halves."""
    assert allocate([0.5, 0.5], 5) == [3, 2]
    assert allocate([0.1, 0.9], 25) == [3, 22]
    assert allocate([0.7, 0.3], 25) == [18, 7]
    assert allocate([0.9, 0.1], 25) == [23, 2]
    for n in (1, 7, 10, 25, 50, 100, 250):
        for r in np.random.default_rng(n).uniform(0, 1, 30):
            assert allocate([r, 1 - r], n)[0] == math.floor(n * r + 0.5)


def test_allocate_property_random_fractions():
    """For random fraction vectors: non-negative counts summing to N, each within 1 of N f_k."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        k, n = rng.integers(1, 6), int(rng.integers(1, 300))
        f = rng.dirichlet(np.ones(k) * rng.choice([0.2, 1.0, 5.0]))
        f[-1] = 1 - f[:-1].sum()
        counts = allocate(f.tolist(), n)
        assert len(counts) == k and sum(counts) == n and min(counts) >= 0
        assert np.all(np.abs(np.array(counts) - n * f) < 1), (f, n, counts)


# --- plan: the official DiT rule (REFERENCE 7.1) ---------------------------------------------------------------

@pytest.mark.parametrize("n", [10, 50, 100])
def test_official_rule_gives_round_rN(n):
    """On DiT's uniform 10/50/100-step grids the official rule gives r N small steps (no ties there)."""
    assert [small_steps(r, n, "official") for r in TENTHS] == [round(r * n) for r in TENTHS]


def test_official_rule_at_25_steps_is_neither_half_up_nor_bankers():
    """At N=25 r N hits .5 for r = .1, .3, .5, .7, .9; the official rule's answer depends on where the grid's
    timesteps round(41.625 k) fall against 1000 (1 - r): 2.5 -> 3, 7.5 -> 8, 12.5 -> 13 (up), but 17.5 -> 17,
    22.5 -> 22 (down; e.g. r = .7: 291 < 300 <= 333). Half-up would give 18, 23; banker's 2, 12, 18, 22."""
    counts = [small_steps(r, 25, "official") for r in TENTHS]
    assert counts == [0, 3, 5, 8, 10, 13, 15, 17, 20, 22, 25]


def test_official_rule_matches_the_two_member_tstitch_code():
    """plan(rule='official') equals dit/models.py TStitch (small iff t/1000 >= 1 - ratio) on DiT grids."""
    for n in (10, 20, 25, 50, 100, 250):
        timesteps = grid(Schedule("linear"), n)[0].tolist()
        for r in TENTHS:
            assert plan([r, 1 - r], timesteps, rule="official") == [0 if t / 1000 >= 1 - r else 1 for t in timesteps]


def test_official_rule_matches_the_multi_member_tstitch_code():
    """plan(rule='official') equals dit/models.py MultiTStitch (first k with 1 - t/1000 <= float32 cumsum[k])."""
    def multi_tstitch(fractions, t):
        progress, milestones = 1 - t / 1000, torch.cumsum(torch.tensor(fractions), 0)
        return next(k for k, m in enumerate(milestones) if not progress > m)

    for n in (10, 25, 50, 100):
        timesteps = grid(Schedule("linear"), n)[0].tolist()
        for small in TENTHS:
            for base in TENTHS[:11 - round(10 * small)]:
                fractions = [small, base, round(1 - small - base, 1)]  # as sample_ddp_t_stitch.py three_combo
                assert plan(fractions, timesteps, rule="official") == [multi_tstitch(fractions, t) for t in timesteps]


@pytest.mark.parametrize("n", [10, 20, 50, 100, 250])
def test_steps_rule_agrees_with_official_on_uniform_grids(n):
    """rule='steps' and rule='official' put the same number of steps on the small model on DiT's grid."""
    assert [small_steps(r, n, "steps") for r in TENTHS] == [small_steps(r, n, "official") for r in TENTHS]


def test_steps_and_official_rules_differ_only_at_ties_on_25_steps():
    """At N = 25 the official rule gives 17 and 22 small steps for r = 0.7, 0.9; 'steps' rounds halves up."""
    steps, official = ([small_steps(r, 25, rule) for r in TENTHS] for rule in ("steps", "official"))
    assert [(r, a, b) for r, a, b in zip(TENTHS, steps, official) if a != b] == [(0.7, 18, 17), (0.9, 23, 22)]


def test_plan_blocks_and_three_members():
    """Member 0 takes the first (noisiest) block; three members in order; unknown rule refused."""
    ts = grid(Schedule("linear"), 10)[0].tolist()
    assert plan([0.2, 0.3, 0.5], ts) == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert plan([0.2, 0.3, 0.5], ts, rule="official") == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    with pytest.raises(ConfigError, match="use one of steps, official, reverse"):
        plan([0.5, 0.5], ts, rule="timestep")


# --- bad fractions ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fractions,members,match", [
    ([-0.1, 1.1], None, r"negative entry; each must be in \[0, 1\]"),
    ([0.3, 0.3], None, r"sum to 0.6, not 1; give one fraction per member, e.g."),
    ([0.5, 0.5], 3, "2 stitch fractions for 3 members; give one per member"),
])
def test_bad_fractions_say_what_to_do(fractions, members, match):
    with pytest.raises(ConfigError, match=match):
        check_fractions(fractions, members)


def test_complement_with_rounding_error_is_accepted():
    """A last fraction computed as 1 - sum(others) is accepted despite float rounding."""
    assert check_fractions([0.8, 0.2, 1 - 0.8 - 0.2])[:2] == [0.8, 0.2]


def test_sample_refuses_fraction_count_mismatch(dits):
    small, large = dits
    x, y, _ = draw([0], SPACE.shape, 10)
    with pytest.raises(ConfigError, match="give one per member"):
        sample([small, large], x, y, fractions=[0.2, 0.3, 0.5], steps=4)


# --- Stitch routing ---------------------------------------------------------------------------------------------

def test_stitch_routes_each_timestep_to_its_member_and_counts_nfe():
    calls = []

    def fake(k):
        return lambda x, t: calls.append((k, t)) or Output(x + k)

    timesteps = [900, 600, 300, 0]
    stitch = Stitch([fake(0), fake(1), fake(2)], timesteps, [0, 1, 1, 2])
    x = torch.zeros(1)
    assert [stitch(x, t).eps.item() for t in timesteps] == [0, 1, 1, 2]
    assert calls == [(0, 900), (1, 600), (1, 300), (2, 0)]
    assert stitch.nfe == [1, 2, 1]
    with pytest.raises(ValueError, match="plan has 3 entries for 4 steps"):
        Stitch([fake(0)], timesteps, [0, 0, 0])


# --- guidance ---------------------------------------------------------------------------------------------------

class CountingMember(MemberBase):
    """Fake member: eps = class label (as a float) in every entry; records the batch of each call."""

    name, schedule, space, cfg_channels, num_classes = "fake", Schedule("linear"), SPACE, None, 10

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], y.clone()))
        return Output(y.float().view(-1, 1, 1, 1).expand_as(x).clone())

    def null(self, y):
        return torch.full_like(y, self.num_classes)

    def condition(self, labels):
        return labels


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_guidance_calls_member_once_per_step(scale):
    """Scale 1: one forward of batch B per step; else one forward of 2B with the null label on the second half."""
    member = CountingMember()
    y = torch.tensor([1, 2, 3])
    out = sample([member], torch.zeros(3, *SPACE.shape), y, solver="ddim", steps=5, guidance=scale)
    assert out.nfe == [5] and len(member.calls) == 5
    for batch, labels in member.calls:
        if scale == 1.0:
            assert batch == 3 and labels.tolist() == [1, 2, 3]
        else:
            assert batch == 6 and labels.tolist() == [1, 2, 3, 10, 10, 10]


def test_guidance_combines_eps():
    """eps = eps_u + w (eps_c - eps_u); with channels=k only the first k channels are guided."""
    member, y, x = CountingMember(), torch.tensor([2, 4]), torch.zeros(2, *SPACE.shape)
    eps = guided(member, y, 3.0)(x, 10).eps  # eps_u = 10 (null label), eps_c = y
    assert torch.equal(eps[:, 0, 0, 0], torch.tensor([10 + 3.0 * (2 - 10), 10 + 3.0 * (4 - 10)]))
    eps = guided(member, y, 3.0, channels=3)(x, 10).eps
    assert (eps[:, :3] == eps[:, :1]).all() and torch.equal(eps[:, 3, 0, 0], torch.tensor([2.0, 4.0]))


def test_sample_passes_the_rule():
    """sample(rule=...) plans with that rule: at 25 steps and r = 0.7, official gives 17 small steps, steps 18."""
    x, y = torch.zeros(1, *SPACE.shape), torch.tensor([0])
    for rule, nfe in (("official", [17, 8]), ("steps", [18, 7])):
        out = sample([CountingMember(), CountingMember()], x, y, fractions=[0.7, 0.3], steps=25, rule=rule)
        assert out.nfe == nfe and out.plan == [0] * nfe[0] + [1] * nfe[1]


# --- sample() with tiny random DiTs -----------------------------------------------------------------------------

def tiny_dit(seed, name, schedule="linear", space=SPACE):
    net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=10,
              learn_sigma=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # also the zero-initialised adaLN / final layers, so eps is not trivially 0
            torch.nn.init.normal_(p, std=0.1, generator=g)
    return DiTMember(net.eval(), name, Schedule(schedule), space, cfg_channels=None)


@pytest.fixture(scope="module")
def dits():
    return tiny_dit(1, "tiny-s"), tiny_dit(2, "tiny-l")


def run(members, seeds=(0, 1), **kw):
    """sample() from the per-seed noise, labels and solver noise of ``seeds`` (fresh generators each call)."""
    x, y, rng = draw(seeds, SPACE.shape, 10)
    return sample(members, x, y, randn_like=rng.randn_like, **kw)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
@pytest.mark.parametrize("solver", ["ddim", "ddpm", "dpmpp_2m"])
def test_extreme_fractions_equal_single_models_bitwise(dits, solver, guidance):
    """[0, 1] is exactly the large model alone and [1, 0] exactly the small one alone."""
    small, large = dits
    kw = dict(solver=solver, steps=6, guidance=guidance)
    only_large, only_small = run([large], **kw), run([small], **kw)
    assert torch.isfinite(only_large.x).all() and not torch.equal(only_large.x, only_small.x)
    assert torch.equal(run([small, large], fractions=[0.0, 1.0], **kw).x, only_large.x)
    assert torch.equal(run([small, large], fractions=[1.0, 0.0], **kw).x, only_small.x)


def test_stitched_run_differs_from_both_single_runs(dits):
    small, large = dits
    kw = dict(solver="ddim", steps=10, guidance=1.5)
    mixed = run([small, large], fractions=[0.4, 0.6], **kw)
    assert mixed.nfe == [4, 6] and mixed.plan == [0] * 4 + [1] * 6
    assert mixed.timesteps == grid(Schedule("linear"), 10)[0].tolist()
    for alone in (run([small], **kw), run([large], **kw)):
        assert (mixed.x - alone.x).abs().max() > 1e-3


@pytest.mark.parametrize("n_members,fractions,nfe", [(2, [0.3, 0.7], [3, 7]), (3, [0.2, 0.3, 0.5], [2, 3, 5])])
def test_nfe_follows_the_plan(dits, n_members, fractions, nfe):
    members = [*dits, tiny_dit(3, "tiny-m")][:n_members]
    out = run(members, fractions=fractions, solver="dpmpp_2m", steps=10, guidance=2.0)
    assert out.nfe == nfe and out.plan == [k for k, c in enumerate(nfe) for _ in range(c)]


@pytest.mark.parametrize("other,what", [
    (dict(space=Space("test", (4, 16, 16))), "space"),
    (dict(space=Space("other", (4, 8, 8))), "space"),
    (dict(space=Space("test", (4, 8, 8), scale=0.13025)), "space"),
])
def test_incompatible_members_are_refused(dits, other, what):
    """A member with another Space (identity, shape or scale) is refused with a message naming both."""
    small = dits[0]
    odd = tiny_dit(4, "odd-one", **other)
    with pytest.raises(ConfigError, match=f"cannot stitch tiny-s with odd-one: different {what}"):
        run([small, odd], fractions=[0.5, 0.5], steps=4)


def test_noise_of_wrong_shape_is_refused(dits):
    y = torch.tensor([0, 1])
    with pytest.raises(ConfigError,
                       match=r"noise of shape \(4, 16, 16\) per sample for members trained on \(4, 8, 8\)"):
        sample(list(dits), torch.zeros(2, 4, 16, 16), y, fractions=[0.5, 0.5], steps=4)


# --- per-sample seeds -------------------------------------------------------------------------------------------

def test_draw_is_per_seed():
    """Sample i's noise and label depend on its seed alone, not on the batch it is drawn in."""
    x3, y3, _ = draw([5, 7, 9], SPACE.shape, 10)
    x2, y2, _ = draw([7, 9], SPACE.shape, 10)
    x1, y1, _ = draw([9], SPACE.shape, 10)
    assert torch.equal(x3[2], x2[1]) and torch.equal(x3[2], x1[0])
    assert y3[2] == y2[1] == y1[0]
    assert not torch.equal(x3[1], x3[2])
    assert torch.equal(SeedNoise([9]).randn_like(x1), torch.randn(x1.shape, generator=torch.Generator().manual_seed(9)))


def test_sample_is_per_seed(dits):
    """A seed's DDPM image (stitched, guided) is the same batched with others or alone, up to the rounding of
    kernels chosen by batch shape (seen: 3.6e-5 after six DDPM steps); another seed's noise differs by O(1)."""
    kw = dict(fractions=[0.4, 0.6], solver="ddpm", steps=6, guidance=1.5)
    batched = run(list(dits), seeds=[3, 8, 11], **kw).x
    alone = run(list(dits), seeds=[8], **kw).x
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-4, atol=2e-4)
    assert (batched[0] - batched[1]).abs().max() > 1e-2


# --- stitching across noise schedules ----------------------------------------------------------------------------

GAUSS = Space("gauss", (4,))
MU, STD = torch.tensor([1.5, -0.5, 0.0, 0.8], dtype=torch.float64), torch.tensor([0.3, 1.0, 0.6, 0.1],
                                                                                  dtype=torch.float64)


class ExactMember(MemberBase):
    """E[eps | x_t] of x_0 ~ N(MU, STD^2) behind the member protocol, on its own schedule: ``t`` is its own
    (possibly fractional) timestep, turned into a noise level by that schedule. ``declared`` is the schedule it
    claims (default: its own)."""

    space, cfg_channels, num_classes = GAUSS, None, 1

    def __init__(self, name, schedule, declared=None):
        self.name, self.own, self.calls = name, Schedule(schedule), []
        self.schedule = Schedule(declared or schedule)

    def __call__(self, x, t, cond):
        self.calls.append(t)
        abar = self.own.abar_at(t)
        a, var = abar ** 0.5, 1 - abar
        x0 = MU + a * STD ** 2 / (a ** 2 * STD ** 2 + var) * (x - a * MU)
        return Output((x - a * x0) / var ** 0.5)

    def condition(self, labels):
        return labels

    def null(self, cond):
        return cond


@pytest.mark.parametrize("first,second", [("linear", "vp_continuous"), ("vp_continuous", "linear"),
                                          ("scaled_linear", "cosine")])
def test_members_on_different_schedules_stitch_exactly(first, second):
    """The exact denoiser wrapped once per schedule: stitched, the samples equal either alone (each member gets
    its own timestep of the grid's noise level); a member that misdeclares its schedule, and so is fed the grid's
    timestep as-is, gives other samples (the check has teeth)."""
    noise = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(64, dtype=torch.long)
    a, b = ExactMember("a", first), ExactMember("b", second)
    alone = sample([a], noise, y, solver="ddim", steps=50).x
    got = sample([a, b], noise, y, fractions=[0.4, 0.6], solver="ddim", steps=50)
    assert torch.allclose(got.x, alone, atol=1e-6, rtol=0), (got.x - alone).abs().max()
    assert all(isinstance(t, float) for t in b.calls) and all(isinstance(t, int) for t in a.calls)
    # a member with no steps changes nothing: the grid is the schedule of the first member that runs
    assert torch.equal(sample([a, b], noise, y, fractions=[0.0, 1.0], solver="ddim", steps=50).x,
                       sample([b], noise, y, solver="ddim", steps=50).x)
    naive = ExactMember("naive", second, declared=first)
    bad = sample([a, naive], noise, y, fractions=[0.4, 0.6], solver="ddim", steps=50).x
    assert (bad - alone).abs().max() > 1e-3


def test_schedule_time_of_and_abar_at_are_inverse():
    def log_snr(abar):
        return math.log(abar / (1 - abar))

    for name in ("linear", "scaled_linear", "cosine", "vp_continuous"):
        s, ac = Schedule(name), Schedule(name).alphas_cumprod
        for t in (0, 1, 17.25, 500, 998.5, 999):
            assert s.time_of(s.abar_at(t)) == pytest.approx(t, abs=1e-6)
        for t in (0, 1, 500, 999):  # on the integer timesteps: the schedule's own table
            assert s.abar_at(t) == pytest.approx(ac[t], rel=1e-9)
        # between them: linear in log-SNR on a discrete schedule, the VP-SDE's closed form at s = (t + 1) / T
        between = math.exp(-(0.1 * 0.01825 + 0.5 * 19.9 * 0.01825 ** 2)) if name == "vp_continuous" else (
            1 / (1 + math.exp(-(0.75 * log_snr(ac[17]) + 0.25 * log_snr(ac[18])))))
        assert s.abar_at(17.25) == pytest.approx(between, rel=1e-9)
    v = Schedule("vp_continuous")  # s = (t + 1) / T on the linear VP-SDE, beta 0.1 ... 20
    assert v.alphas_cumprod[999] == pytest.approx(math.exp(-(0.1 + 0.5 * 19.9)))


def test_ddpm_learned_variance_is_refused_for_a_retimed_member(dits):
    """The learned-range variance belongs to the member's own schedule: on another grid, ask for small/large."""
    other = tiny_dit(5, "tiny-cos", schedule="cosine")
    with pytest.raises(ConfigError, match="variance=small"):
        run([dits[0], other], fractions=[0.5, 0.5], solver="ddpm", steps=4, variance="learned")
    run([dits[0], other], fractions=[0.5, 0.5], solver="ddpm", steps=4, variance="small")


def test_balanced_labels_follow_the_seed_not_the_position_in_the_batch():
    from tstitch.data import seeds

    _, y, _ = seeds.draw(range(12, 16), (1, 4, 4), 10, labels="balanced")
    assert y.tolist() == [2, 3, 4, 5]
    _, alone, _ = seeds.draw([14], (1, 4, 4), 10, labels="balanced")
    assert alone.tolist() == [4]
