"""U-ViT's official samplers (baofff/U-ViT ``eval*.py``), as ``solver=dpm_solver``; which one runs follows the
grid's schedule, the schedule of the first member that runs:

* continuous-time VP-SDE (``vp_continuous``: U-ViT-M/L): DPM-Solver-fast (Lu et al., 2022, "DPM-Solver", Sec. 3.4
  and Algorithms 1-2): K = steps // 3 + 1 steps uniform in log-SNR from t = 1 to t = 1e-4, orders 3, ..., 3 then
  (2, 1), 1 or 2 so that the model calls number exactly ``steps``; noise prediction.
* discrete time (betas, e.g. Stable Diffusion's for U-ViT-H): singlestep DPM-Solver++ of order 3 (Lu et al., 2022,
  "DPM-Solver++", data prediction), the "fast" arrangement on ``steps`` + 1 time-uniform points from t = 1 to 1/N:
  a step of order k spans k intervals, its inner model calls at the grid points inside.

Time is continuous, t in (0, 1]; a discrete schedule of N steps is read as the official code reads it, log alpha_t
linear in t between t = n / N (alpha-bar of timestep n - 1) and extended past the ends. Timestep t of our
``Schedule`` is N t - 1 for both kinds (U-ViT nets get N t, 999 t for continuous ones). No clipping (the official
samplers have none). A step of order k is k model calls of one member: ``Grid.step``.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from tstitch.errors import ConfigError
from tstitch.models.protocols import Grid
from tstitch.models.schedules import VP_BETA_MAX, VP_BETA_MIN, vp_time
from tstitch.sampling.solvers.common import Solver

EPS_CONTINUOUS = 1e-4  # the official end time of DPM-Solver-fast (eval.py, eval_ldm.py)


def _lerp(x, xp, fp):
    """Piecewise-linear interpolation through (xp, fp), xp ascending, extended by the end segments."""
    i = int(np.clip(np.searchsorted(xp, x) - 1, 0, len(xp) - 2))
    return fp[i] + (x - xp[i]) * (fp[i + 1] - fp[i]) / (xp[i + 1] - xp[i])


class VP:
    """A VP schedule in continuous time t in (0, 1]: log alpha_t, sigma_t = sqrt(1 - alpha_t^2) and the half
    log-SNR lambda_t = log alpha_t - log sigma_t, which is monotone, so t is a function of it."""

    def __init__(self, schedule):
        self.continuous, self.n = schedule.continuous, schedule.num_timesteps
        if not self.continuous:
            self.t = (np.arange(self.n) + 1.0) / self.n
            self.log_alpha_n = 0.5 * np.log(schedule.alphas_cumprod)  # decreasing in t

    def log_alpha(self, t):
        if self.continuous:
            return -0.25 * t ** 2 * (VP_BETA_MAX - VP_BETA_MIN) - 0.5 * t * VP_BETA_MIN
        return float(_lerp(t, self.t, self.log_alpha_n))

    def alpha(self, t):
        return math.exp(self.log_alpha(t))

    def sigma(self, t):
        return math.sqrt(-math.expm1(2 * self.log_alpha(t)))

    def lam(self, t):
        return self.log_alpha(t) - math.log(self.sigma(t))

    def time(self, lam):
        """The t with lambda_t = ``lam``."""
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * lam)
        if self.continuous:
            return float(vp_time(2 * log_alpha))
        return float(_lerp(log_alpha, self.log_alpha_n[::-1], self.t[::-1]))

    def timestep(self, t):
        """Our timestep (of ``Schedule``) at continuous time t."""
        return self.n * t - 1


@dataclass(frozen=True)
class Step:
    """One singlestep update from ``s`` to ``t`` of order ``len(inner) + 1``, with model calls at ``s`` and at the
    ``inner`` times, which sit at fractions ``r`` of the step in lambda."""

    s: float
    t: float
    inner: tuple
    r: tuple


def orders(steps):
    """The fast arrangement of ``steps`` model calls into steps of order 3, 2 or 1 (DPM-Solver, Sec. 3.4)."""
    k = steps // 3 + 1
    return [3] * (k - 2) + [2, 1] if steps % 3 == 0 else [3] * (k - 1) + [steps % 3]


def plan_steps(vp, steps):
    """The steps of the official sampler for the schedule's kind (see the module docstring)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"solver=dpm_solver takes a positive int step count (its model calls), not {steps!r} "
                          "(solver.steps=50)")
    out = []
    if vp.continuous:  # DPM-Solver-fast: outer steps uniform in lambda; inner points at r = 1/2 or 1/3, 2/3
        kinds = orders(steps)
        lams = np.linspace(vp.lam(1.0), vp.lam(EPS_CONTINUOUS), len(kinds) + 1)
        outer = [vp.time(lam) for lam in lams]
        for i, order in enumerate(kinds):
            r = {1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}[order]
            s, t = outer[i], outer[i + 1]
            h = vp.lam(t) - vp.lam(s)
            out.append(Step(s, t, tuple(vp.time(vp.lam(s) + ri * h) for ri in r), r))
        return out
    points = np.linspace(1.0, 1.0 / vp.n, steps + 1)  # DPM-Solver++ "fast": time-uniform, inner calls on the points
    j = 0
    for order in orders(steps):
        s, t, inner = points[j], points[j + order], tuple(points[j + 1:j + order])
        h = vp.lam(t) - vp.lam(s)
        out.append(Step(s, t, inner, tuple((vp.lam(u) - vp.lam(s)) / h for u in inner)))
        j += order
    return out


def dpm_grid(schedule, steps, **options):
    vp = VP(schedule)
    plan = plan_steps(vp, steps)
    calls = [(i, u) for i, st in enumerate(plan) for u in (st.s, *st.inner)]
    return Grid([vp.timestep(u) for _, u in calls], [i for i, _ in calls])


def dpm_solver(denoiser, x, timesteps, abar, *, schedule=None, steps=None, randn_like=torch.randn_like, clip=False,
               callback=None):
    """U-ViT's official sampler for ``schedule`` (see the module docstring); ``timesteps`` are ``dpm_grid``'s."""
    vp = VP(schedule)
    data = not vp.continuous  # DPM-Solver++ predicts data (x0), DPM-Solver noise
    # In the variables of the prediction the updates read the same (DPM-Solver++, Sec. 4): noise prediction
    # steps with (alpha, sigma, h), data prediction with (sigma, alpha, -h). ``a`` scales x, ``b`` the model term.
    a, b = (vp.sigma, vp.alpha) if data else (vp.alpha, vp.sigma)
    call = iter(timesteps)

    def predict(z, u):
        eps = denoiser(z, next(call)).eps
        return (z - vp.sigma(u) * eps) / vp.alpha(u) if data else eps

    for i, st in enumerate(plan_steps(vp, steps)):
        h = (vp.lam(st.t) - vp.lam(st.s)) * (-1 if data else 1)
        d0 = predict(x, st.s)
        if not st.inner:  # order 1 (DDIM)
            x_new = a(st.t) / a(st.s) * x - b(st.t) * math.expm1(h) * d0
        elif len(st.inner) == 1:  # order 2 (Algorithm 1)
            (s1,), (r1,) = st.inner, st.r
            u1 = a(s1) / a(st.s) * x - b(s1) * math.expm1(r1 * h) * d0
            d1 = predict(u1, s1)
            x_new = a(st.t) / a(st.s) * x - b(st.t) * math.expm1(h) * (d0 + 0.5 / r1 * (d1 - d0))
        else:  # order 3 (Algorithm 2)
            (s1, s2), (r1, r2) = st.inner, st.r
            u1 = a(s1) / a(st.s) * x - b(s1) * math.expm1(r1 * h) * d0
            d1 = predict(u1, s1)
            u2 = (a(s2) / a(st.s) * x - b(s2) * math.expm1(r2 * h) * d0
                  - r2 / r1 * b(s2) * (math.expm1(r2 * h) / (r2 * h) - 1) * (d1 - d0))
            d2 = predict(u2, s2)
            x_new = (a(st.t) / a(st.s) * x - b(st.t) * math.expm1(h) * d0
                     - b(st.t) / r2 * (math.expm1(h) / h - 1) * (d2 - d0))
        if callback is not None:
            callback(i, x_new, d0 if data else (x - vp.sigma(st.s) * d0) / vp.alpha(st.s))
        x = x_new
    return x


SOLVERS = {"dpm_solver": Solver(dpm_solver, dpm_grid, respaced=False)}
