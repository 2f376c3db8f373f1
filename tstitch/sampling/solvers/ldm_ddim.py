"""DDIM on CompVis's grid (latent-diffusion ``DDIMSampler``), the sampler of T-Stitch's LDM experiments.

The update is ``ddim``'s (Song et al., 2021, eq. 12); the grid is CompVis's ``make_ddim_timesteps("uniform")``:
with c = T // steps, the model runs at t = 1 + c k for k = len(range(0, T, c)) - 1, ..., 0 (1, 11, ..., 991 at
100 steps of 1000; a step count that does not divide T gives that many steps, as there), and the alpha-bar after
the last step is alpha-bar(t = 0), not 1, so that with eta > 0 the last step adds noise too. ``eta`` defaults to
1.0, what the T-Stitch LDM scripts hard-code (CompVis's own default is 0).
"""
from dataclasses import dataclass

import torch

from tstitch.errors import ConfigError
from tstitch.models.protocols import Grid
from tstitch.rules import number
from tstitch.sampling.solvers.common import Solver, check_eta
from tstitch.sampling.solvers.ddim import ddim


def ldm_ddim(denoiser, x, timesteps, abar, *, eta=1.0, schedule=None, steps=None, randn_like=torch.randn_like,
             clip=False, callback=None):
    """DDIM with CompVis's grid (``ldm_grid``); eta in [0, 1]."""
    return ddim(denoiser, x, timesteps, abar, eta=eta, randn_like=randn_like, clip=clip, callback=callback)


def ldm_grid(schedule, steps, *, eta=1.0):
    """CompVis's uniform DDIM grid of ``steps`` on ``schedule`` (see the module docstring)."""
    check_eta(eta)
    n = schedule.num_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n // 2:
        raise ConfigError(f"solver.steps={steps!r} is not allowed for ldm_ddim: give an integer in [1, {n // 2}] "
                          "(CompVis's grid, t = 1 + (T // steps) k, has no step count above T / 2)")
    kept = [t + 1 for t in range(0, n, n // steps)][::-1]
    ac = schedule.alphas_cumprod
    abar = torch.tensor([*ac[kept], ac[0]], dtype=torch.float64)
    return Grid(kept, list(range(len(kept))), abar)


@dataclass
class Options:
    eta: float = number(0, 1)  # 1: the T-Stitch LDM scripts; 0: deterministic DDIM


SOLVERS = {"ldm_ddim": Solver(ldm_ddim, ldm_grid, respaced=False, options=Options)}
