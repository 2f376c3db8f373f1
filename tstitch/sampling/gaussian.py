"""Gaussian diffusion algebra shared by the DDPM solver and the training loss (Ho et al. 2020; Nichol &
Dhariwal 2021), over a chain given by its alpha-bars in ascending time. Pure tensor functions."""
import math

import torch


def chain(abar):
    """Posterior q(x_{t-1} | x_t, x_0) coefficients of the chain with alpha-bars ``abar`` (ascending t)."""
    abar = torch.as_tensor(abar, dtype=torch.float64)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    betas = 1 - abar / abar_prev
    var = betas * (1 - abar_prev) / (1 - abar)
    return {
        "abar": abar,
        "betas": betas,
        "log_betas": torch.log(betas),
        # the posterior variance is 0 at t = 0; ADM clips its log to the value at t = 1
        "log_var_clipped": torch.log(torch.cat([var[1:2], var[1:]])),
        "coef_x0": betas * abar_prev.sqrt() / (1 - abar),
        "coef_xt": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
    }


def at(values, index, like):
    return values.to(like.device)[index].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def x0_from_eps(c, index, x, eps):
    abar = at(c["abar"], index, x)
    return (x - (1 - abar).sqrt() * eps) / abar.sqrt()


def posterior_mean(c, index, x, x0):
    return at(c["coef_x0"], index, x) * x0 + at(c["coef_xt"], index, x) * x


def learned_range_log_var(c, index, x, v):
    """ADM's learned-range variance: log sigma^2 = f log beta_t + (1 - f) log beta~_t with f = (v + 1) / 2."""
    frac = (v + 1) / 2
    return frac * at(c["log_betas"], index, x) + (1 - frac) * at(c["log_var_clipped"], index, x)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under N(mean, e^(2 log_scale)), elementwise."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))
