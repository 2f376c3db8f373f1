import math

import torch

from tstitch.sampling.solvers.common import Solver, as_float, predict_x0


def dpmpp_2m(denoiser, x, timesteps, abar, *, schedule=None, steps=None, randn_like=torch.randn_like, clip=False,
             callback=None):
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2): multistep second order in log-SNR, data prediction.

    The last step, to clean data, is first order (it returns the final x0 prediction), as k-diffusion.
    """
    del randn_like  # deterministic
    abar = as_float(abar)
    lam = [0.5 * math.log(a / (1 - a)) if a < 1 else math.inf for a in abar]
    x0_prev = None
    for i, t in enumerate(timesteps):
        a, a_next = abar[i], abar[i + 1]
        x0 = predict_x0(denoiser(x, t), x, a, clip)
        if a_next >= 1:
            x = x0
        else:
            h = lam[i + 1] - lam[i]
            d = x0
            if x0_prev is not None:
                r = (lam[i] - lam[i - 1]) / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = ((1 - a_next) / (1 - a)) ** 0.5 * x - a_next ** 0.5 * math.expm1(-h) * d
        x0_prev = x0
        if callback is not None:
            callback(i, x, x0)
    return x


SOLVERS = {"dpmpp_2m": Solver(dpmpp_2m)}
