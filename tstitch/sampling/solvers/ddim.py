from dataclasses import dataclass

import torch

from tstitch.rules import number
from tstitch.sampling.solvers.common import Solver, adm_grid, as_float, check_eta, eps_from_x0, predict_x0


def ddim(denoiser, x, timesteps, abar, *, eta=0.0, schedule=None, steps=None, randn_like=torch.randn_like, clip=False,
         callback=None):
    """DDIM (Song et al., 2021, eq. 12), as ADM's ``ddim_sample``; eta in [0, 1], 0 is deterministic."""
    eta, abar = check_eta(eta), as_float(abar)
    for i, t in enumerate(timesteps):
        a, a_prev = abar[i], abar[i + 1]
        out = denoiser(x, t)
        x0 = predict_x0(out, x, a, clip)
        eps = eps_from_x0(x, x0, a)
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev - sigma ** 2) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * randn_like(x)
        if callback is not None:
            callback(i, x, x0)
    return x


def ddim_grid(schedule, steps, *, eta=0.0):
    """The ADM grid, with ``eta`` checked before any model runs."""
    check_eta(eta)
    return adm_grid(schedule, steps)


@dataclass
class Options:
    eta: float = number(0, 1)  # 0: deterministic DDIM, 1: DDPM's variance


SOLVERS = {"ddim": Solver(ddim, ddim_grid, options=Options)}
