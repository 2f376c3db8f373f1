from dataclasses import dataclass

import torch

from tstitch.errors import ConfigError
from tstitch.rules import one_of
from tstitch.sampling import gaussian
from tstitch.sampling.solvers.common import Solver, predict_x0


def ddpm(denoiser, x, timesteps, abar, *, variance="learned", schedule=None, steps=None, randn_like=torch.randn_like,
         clip=False, callback=None):
    """Ancestral sampling of the (respaced) DDPM chain (Ho et al., 2020), as ADM's ``p_sample``.

    ``variance``: "learned" uses the model's learned-range output v (ADM/DiT, Nichol & Dhariwal 2021);
    "small" is the posterior variance beta~_t, "large" is beta_t (with beta~_1 at the last step, as ADM).
    """
    if variance not in VARIANCES:
        raise ConfigError(f"unknown DDPM variance {variance!r}; use learned, small or large")
    chain = gaussian.chain(torch.as_tensor(abar, dtype=torch.float64)[:-1].flip(0))  # ascending time
    n = len(timesteps)
    large = torch.cat([chain["log_var_clipped"][:1], chain["log_betas"][1:]])
    for i, t in enumerate(timesteps):
        j = torch.tensor([n - 1 - i])  # index in the ascending chain
        out = denoiser(x, t)
        x0 = predict_x0(out, x, float(chain["abar"][j]), clip)
        mean = gaussian.posterior_mean(chain, j, x, x0)
        if variance == "learned":
            if out.v is None:
                raise ConfigError("DDPM with variance=learned needs a model with a learned variance (learn_sigma); "
                                  "use solver.variance=small for this model")
            log_var = gaussian.learned_range_log_var(chain, j, x, out.v)
        else:
            log_var = gaussian.at(chain["log_var_clipped"] if variance == "small" else large, j, x)
        x = mean + torch.exp(0.5 * log_var) * randn_like(x) if i < n - 1 else mean
        if callback is not None:
            callback(i, x, x0)
    return x


VARIANCES = ("learned", "small", "large")


@dataclass
class Options:
    variance: str = one_of(*VARIANCES)


SOLVERS = {"ddpm": Solver(ddpm, options=Options)}
