"""Noise schedules and ADM respacing against values derived by hand from the ADM / DiT definitions."""
import math

import numpy as np
import pytest
import torch

from tstitch.models.schedules import Schedule, grid, linear_betas, space_timesteps

# --- space_timesteps: ADM's guided_diffusion/respace.py semantics ---------------------------------------------

def test_ddim_string_uses_the_integer_stride():
    """'ddimN' keeps range(0, T, stride) for the stride that gives exactly N steps."""
    assert space_timesteps(1000, "ddim10") == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim100") == list(range(0, 1000, 10))


@pytest.mark.parametrize("count", ["ddim37", "ddim400", "ddim1"])
def test_ddim_string_without_an_integer_stride_is_refused(count):
    """No integer stride over 1000 gives 37 (27 -> 38, 28 -> 36), 400 (2 -> 500, 3 -> 334) or 1 step."""
    with pytest.raises(ValueError, match="exactly"):
        space_timesteps(1000, count)


def test_int_count_spans_zero_to_last():
    """An int N keeps N evenly spaced steps over the whole range, 0 and T-1 included (stride 999/9 = 111)."""
    assert space_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert space_timesteps(1000, "10") == space_timesteps(1000, 10)
    assert space_timesteps(1000, 1000) == list(range(1000))
    assert space_timesteps(1000, 1) == [0]


def test_dit_100_step_grid():
    """DiT's create_diffusion('100'): stride 999/99 = 10.09 rounded -> {0, 10, 20, 30, 40, 50, 61, ..., 989, 999}."""
    kept = space_timesteps(1000, "100")
    assert len(kept) == 100
    assert kept[:8] == [0, 10, 20, 30, 40, 50, 61, 71]
    assert kept[-3:] == [979, 989, 999]


def test_section_string_sizes():
    """'10,15,20' splits T=1000 into sections of 334, 333, 333 and keeps 10, 15, 20 steps spanning each."""
    kept = space_timesteps(1000, "10,15,20")
    assert len(kept) == 45 and kept == sorted(kept)
    sections = [(0, 334), (334, 667), (667, 1000)]
    assert [sum(lo <= t < hi for t in kept) for lo, hi in sections] == [10, 15, 20]
    assert {0, 333, 334, 666, 667, 999} <= set(kept)
    assert kept[:10] == list(range(0, 334, 37))  # section 1: stride 333 / 9 = 37 exactly


@pytest.mark.parametrize("count", [1001, "500,501", "10,600"])
def test_impossible_counts_are_refused(count):
    """More steps than timesteps in a section is an error (ADM raises ValueError too)."""
    with pytest.raises(ValueError, match="cannot divide"):
        space_timesteps(1000, count)


def test_matches_adm_at_float_half_points():
    """ADM (repeated addition of 999/20) keeps 499, not 500, in the 21-step DiT grid."""
    assert space_timesteps(1000, 21) == [0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 499, 549, 599, 649, 699,
                                         749, 799, 849, 899, 949, 999]


# --- schedules -------------------------------------------------------------------------------------------------

def test_linear_betas():
    """DDPM linear: 1e-4 ... 0.02 over 1000 steps, equally spaced; other T rescaled by 1000/T as ADM."""
    b = Schedule("linear").betas
    assert len(b) == 1000
    assert b[0] == pytest.approx(1e-4, abs=1e-15) and b[-1] == pytest.approx(0.02, abs=1e-15)
    assert np.allclose(np.diff(b), (0.02 - 1e-4) / 999)
    b2 = linear_betas(2000)
    assert b2[0] == pytest.approx(5e-5) and b2[-1] == pytest.approx(0.01)


def test_scaled_linear_betas():
    """LDM scaled-linear: endpoints 0.00085 and 0.012, linear in sqrt(beta)."""
    b = Schedule("scaled_linear").betas
    assert b[0] == pytest.approx(0.00085, rel=1e-12) and b[-1] == pytest.approx(0.012, rel=1e-12)
    assert np.allclose(np.diff(np.sqrt(b)), (0.012 ** 0.5 - 0.00085 ** 0.5) / 999)


def test_cosine_schedule():
    """Cosine: alpha-bar strictly decreasing and equal to f(t+1)/f(0); betas clipped at 0.999 (the last one)."""
    s = Schedule("cosine")
    b, ac = s.betas, s.alphas_cumprod
    assert (b > 0).all() and (b <= 0.999).all() and b[-1] == 0.999
    assert (np.diff(ac) < 0).all()

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 250, 499, 900):  # unclipped there, so the product telescopes
        assert ac[t] == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        Schedule("quadratic")


# --- grid ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["linear", "cosine", "scaled_linear"])
@pytest.mark.parametrize("steps", [10, "ddim25", 100])
def test_grid_descends_and_ends_clean(name, steps):
    """grid: N descending timesteps, N+1 alpha-bars (their alphas_cumprod, then 1.0), increasing."""
    s = Schedule(name)
    timesteps, abar = grid(s, steps)
    kept = space_timesteps(1000, steps)
    assert timesteps.dtype == torch.long and timesteps.tolist() == kept[::-1]
    assert len(abar) == len(kept) + 1 and abar.dtype == torch.float64
    assert abar[-1].item() == 1.0
    assert torch.equal(abar[:-1], torch.as_tensor(s.alphas_cumprod[kept[::-1]]))
    assert (abar.diff() > 0).all()
