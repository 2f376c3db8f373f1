"""U-ViT's official samplers (solver=dpm_solver) against reference outputs of the official code.

``tests/data/uvit_dpm_solver_reference.pt`` holds samples that baofff/U-ViT's own ``dpm_solver_pytorch.py``
(DPM-Solver-fast, ``eval_ldm.py``'s call: continuous time, eps 1e-4) and ``dpm_solver_pp.py`` (singlestep
DPM-Solver++ order 3, "fast", ``eval_ldm_discrete.py``'s call: Stable Diffusion betas, t from 1 to 1/N) gave, with
the official ``libs/uvit.py`` network and ``cfg_nnet`` guidance, on the tiny U-ViT whose weights ``weights()`` makes
here; they were produced once with that code, which is not part of this repository. Our sampler on the same net
(loaded from an official-format state dict), noise and labels must agree to relative L2 <= 1e-4 (float32).
"""
from pathlib import Path

import pytest
import torch

import tstitch
from tstitch.models import zoo
from tstitch.models.nets.uvit import UViT
from tstitch.models.schedules import Schedule
from tstitch.sampling.solvers.dpm_solver import VP, orders, plan_steps

TINY = {"img_size": 8, "patch_size": 2, "in_chans": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 4,
        "qkv_bias": False, "mlp_time_embed": False, "num_classes": 1001, "conv": True}
LABELS = torch.tensor([1, 207, 999])
NULL, SCALE = 1000, 0.4  # U-ViT's null label and its official cfg scale (ours: w = 1 + 0.4)
CASES = [(kind, steps, guided) for kind in ("continuous", "discrete")
         for steps, guided in ((10, False), (10, True), (9, True), (8, False), (50, True))]
REFERENCE = Path(__file__).parent / "data" / "uvit_dpm_solver_reference.pt"
SCHEDULES = {"continuous": "vp_continuous", "discrete": "scaled_linear"}


def weights():
    """The tiny net's state dict: every entry (sorted by name) drawn from one seeded generator, times 0.3 (then its
    output has about unit scale, the label moves it by about 2% and one timestep by about 0.3%)."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in sorted(UViT(**TINY).state_dict().items())}


def noise():
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    path = tmp_path_factory.mktemp("uvit") / "nnet_ema.pth"
    torch.save(weights(), path)
    return {kind: zoo.load({"name": f"tiny-uvit-{kind}", "family": "uvit", "net": TINY, "checkpoint": str(path),
                            "schedule": {"name": schedule, "num_timesteps": 1000},
                            "space": {"name": "sd-kl-f8", "shape": [4, 8, 8], "scale": 0.18215}, "null_class": NULL})
            for kind, schedule in SCHEDULES.items()}


def relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind,steps,guided", CASES)
def test_official_sampler_reproduced(members, kind, steps, guided):
    reference = torch.load(REFERENCE)[f"{kind}-{steps}-{'guided' if guided else 'unguided'}"]
    out = tstitch.sample([members[kind]], noise(), LABELS, solver="dpm_solver", steps=steps,
                         guidance=1 + SCALE if guided else 1.0)
    assert relative(out.x, reference) <= 1e-4
    assert out.nfe == [steps] and out.plan == [0] * len(orders(steps))


def test_the_reference_tells_the_samplers_apart(members):
    """The check has teeth: DPM-Solver++(2M) on our grid, or the other kind's sampler, land far outside 1e-4."""
    reference = torch.load(REFERENCE)
    x = noise()
    two_m = tstitch.sample([members["discrete"]], x, LABELS, solver="dpmpp_2m", steps=10, guidance=1.4).x
    assert relative(two_m, reference["discrete-10-guided"]) > 1e-3
    assert relative(reference["continuous-10-guided"], reference["discrete-10-guided"]) > 1e-2
    assert relative(reference["discrete-10-guided"], reference["discrete-10-unguided"]) > 1e-3  # 5e-3


def test_fast_orders_and_times():
    """NFE = steps in orders 3, ..., 3 then (2, 1), 1 or 2; DPM-Solver-fast spans t = 1 ... 1e-4 uniformly in
    log-SNR, DPM-Solver++ spans t = 1 ... 1/N on time-uniform points with its inner calls on them."""
    assert orders(50) == [3] * 16 + [2] and orders(10) == [3, 3, 3, 1] and orders(9) == [3, 3, 2, 1]
    assert orders(1) == [1] and orders(2) == [2] and orders(3) == [2, 1]
    vp = VP(Schedule("vp_continuous"))
    fast = plan_steps(vp, 10)
    lams = [vp.lam(st.s) for st in fast] + [vp.lam(fast[-1].t)]
    assert fast[0].s == pytest.approx(1.0) and fast[-1].t == pytest.approx(1e-4)
    assert max(lams[1:]) - min(lams[1:]) > 0 and torch.tensor(lams, dtype=torch.float64).diff().std() < 1e-9
    assert fast[0].r == (1 / 3, 2 / 3) and fast[-1].inner == ()
    disc = VP(Schedule("scaled_linear"))
    pp = plan_steps(disc, 10)
    points = [pp[0].s, *pp[0].inner, pp[1].s, *pp[1].inner, pp[2].s, *pp[2].inner, pp[3].s, pp[3].t]
    assert points == pytest.approx(torch.linspace(1, 1e-3, 11, dtype=torch.float64).tolist(), abs=1e-12)
    # the discrete schedule at t = n / N is alpha-bar of timestep n - 1, linear in log alpha between
    ac = Schedule("scaled_linear").alphas_cumprod
    assert disc.alpha(0.5) ** 2 == pytest.approx(ac[499], rel=1e-12)
    assert disc.log_alpha(0.5005) == pytest.approx((disc.log_alpha(0.5) + disc.log_alpha(0.501)) / 2, rel=1e-12)
    assert disc.time(disc.lam(0.4321)) == pytest.approx(0.4321, abs=1e-12)
    assert vp.time(vp.lam(0.4321)) == pytest.approx(0.4321, abs=1e-12)


def test_stitched_steps_keep_their_calls_together(members):
    """Continuous (U-ViT-L-like) then discrete (U-ViT-H-like): the grid is the first member's DPM-Solver-fast, the
    plan counts steps (10 calls: orders 3, 3, 3, 1; 40% = 2 steps = 6 calls), the second member gets fractional
    times of its own schedule; [0, 1] is the second member alone on its own sampler."""
    first, second = members["continuous"], members["discrete"]
    seen = []
    hook = second.net.register_forward_pre_hook(lambda m, args: seen.append(float(args[1][0])))
    out = tstitch.sample([first, second], noise(), LABELS, fractions=[0.4, 0.6], solver="dpm_solver", steps=10,
                         guidance=1.4)
    hook.remove()
    assert out.plan == [0, 0, 1, 1] and out.nfe == [6, 4] and torch.isfinite(out.x).all()
    assert len(seen) == 4 and not all(t.is_integer() for t in seen)
    alone = tstitch.sample([second], noise(), LABELS, solver="dpm_solver", steps=10, guidance=1.4).x
    stitched_alone = tstitch.sample([first, second], noise(), LABELS, fractions=[0.0, 1.0], solver="dpm_solver",
                                    steps=10, guidance=1.4).x
    assert torch.equal(stitched_alone, alone) and relative(out.x, alone) > 1e-3
