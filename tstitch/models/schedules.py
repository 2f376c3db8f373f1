"""Noise schedules and timestep respacing, as pure functions.

A schedule is the ``alphas_cumprod`` (alpha-bar) of a forward process at T timesteps; the sampling grid is a
descending subset of those T timesteps (ADM/DiT "respacing"). Solvers receive both and never see a model.
A continuous-time VP-SDE (``vp_continuous``, as U-ViT's 64x64 models) is read at s = (t + 1) / T, so the same
grid machinery serves it. ``time_of`` maps a noise level to a (fractional) timestep of a schedule with the same
log-SNR, which is how members trained on different schedules are stitched.
"""
import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch


def linear_betas(num_timesteps=1000, start=1e-4, end=0.02):
    """DDPM / ADM / DiT linear schedule (scaled so that T=1000 gives 1e-4 ... 0.02)."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * start, scale * end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(num_timesteps=1000, start=0.00085, end=0.012):
    """LDM / Stable Diffusion schedule: linear in sqrt(beta)."""
    return np.linspace(start ** 0.5, end ** 0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps=1000, s=0.008, max_beta=0.999):
    """Improved-DDPM cosine schedule (Nichol & Dhariwal, 2021, eq. 17)."""
    def alpha_bar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
                     for i in range(num_timesteps)], dtype=np.float64)


BETAS = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas}
VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0  # Song et al. (2021) VP-SDE, as U-ViT's continuous-time models


def vp_log_abar(s, beta_min=VP_BETA_MIN, beta_max=VP_BETA_MAX):
    """log alpha-bar of the linear VP-SDE at continuous time s in [0, 1]."""
    return -(beta_min * s + 0.5 * (beta_max - beta_min) * s ** 2)


def vp_time(log_abar, beta_min=VP_BETA_MIN, beta_max=VP_BETA_MAX):
    """The continuous time s with ``vp_log_abar(s) == log_abar`` (the positive root of the quadratic)."""
    d = beta_max - beta_min
    return (-beta_min + np.sqrt(beta_min ** 2 - 2 * d * log_abar)) / d


CONTINUOUS = ("vp_continuous",)
ENDPOINTS = ("linear", "scaled_linear")  # the schedules whose first and last beta a zoo entry may set


@dataclass(frozen=True)
class Schedule:
    """A VP forward process, q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), at timesteps t = 0 ... T-1
    (for ``vp_continuous``: at continuous time s = (t + 1) / T)."""

    name: str
    num_timesteps: int = 1000
    beta_start: float | None = None  # the first and last beta of "linear" / "scaled_linear" (at T = 1000); None:
    beta_end: float | None = None    # the named schedule's own (1e-4 ... 0.02, 0.00085 ... 0.012)

    def __post_init__(self):
        if self.name not in BETAS and self.name not in CONTINUOUS:
            raise ValueError(f"unknown noise schedule {self.name!r}; choose one of {sorted([*BETAS, *CONTINUOUS])}")
        ends = (self.beta_start, self.beta_end)
        if self.name not in ENDPOINTS:
            if ends != (None, None):
                raise ValueError(f"schedule {self.name!r} takes no beta_start / beta_end (only {', '.join(ENDPOINTS)})")
            return
        # the named schedule's own ends filled in, so that equal schedules compare equal
        own = inspect.signature(BETAS[self.name]).parameters
        for key, value, default in zip(("beta_start", "beta_end"), ends, (own["start"].default, own["end"].default)):
            object.__setattr__(self, key, default if value is None else float(value))
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"beta_start {self.beta_start} and beta_end {self.beta_end} must satisfy "
                             "0 < beta_start <= beta_end < 1")

    @property
    def continuous(self):
        return self.name in CONTINUOUS

    @property
    def alphas_cumprod(self):
        if self.continuous:
            return np.exp(vp_log_abar((np.arange(self.num_timesteps) + 1) / self.num_timesteps))
        if self.name in ENDPOINTS:
            return np.cumprod(1.0 - BETAS[self.name](self.num_timesteps, self.beta_start, self.beta_end))
        return np.cumprod(1.0 - BETAS[self.name](self.num_timesteps))

    @property
    def betas(self):
        ac = self.alphas_cumprod
        return 1.0 - ac / np.append(1.0, ac[:-1])

    def log_snr(self):
        ac = self.alphas_cumprod
        return np.log(ac) - np.log1p(-ac)

    def time_of(self, abar):
        """The timestep of this schedule at noise level ``abar`` (same log-SNR): fractional in general; exact
        for a continuous schedule, linear in log-SNR between neighbouring timesteps of a discrete one (clamped
        to 0 ... T-1 outside its range)."""
        if self.continuous:
            return float(vp_time(np.log(abar)) * self.num_timesteps - 1)
        lam = float(np.log(abar) - np.log1p(-abar))
        return float(np.interp(-lam, -self.log_snr(), np.arange(self.num_timesteps, dtype=np.float64)))

    def abar_at(self, t):
        """Alpha-bar at a (fractional) timestep: the inverse of ``time_of``."""
        if self.continuous:
            return float(np.exp(vp_log_abar((t + 1) / self.num_timesteps)))
        lam = float(np.interp(t, np.arange(self.num_timesteps, dtype=np.float64), self.log_snr()))
        return float(1.0 / (1.0 + np.exp(-lam)))


def space_timesteps(num_timesteps, section_counts):
    """The timesteps kept when respacing, with ADM's semantics.

    ``section_counts`` is an int, a comma string ("10,15,20": that many evenly spaced steps in each equal
    section of the T steps) or "ddimN" (the integer stride that gives exactly N steps, as DDIM's paper).
    Returns a sorted list of original timesteps.
    """
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        want = int(section_counts[len("ddim"):])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == want:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"cannot create exactly {want} steps with an integer stride over {num_timesteps}")
    if isinstance(section_counts, int):
        section_counts = [section_counts]
    elif isinstance(section_counts, str):
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count or count < 1:
            raise ValueError(f"cannot divide a section of {size} timesteps into {count} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):  # a running sum, as ADM: its float error decides the exact .5 cases
            steps.append(start + round(position))
            position += stride
        start += size
    return sorted(set(steps))


def grid(schedule, steps, dtype=torch.float64):
    """The sampling grid: descending original timesteps and their alpha-bars, plus a final clean point.

    Returns ``(timesteps, abar)`` with ``timesteps`` of length N (where the model is called) and ``abar`` of
    length N + 1, whose last entry is 1 (t = -1, clean data), as in ADM's respaced process.
    """
    kept = space_timesteps(schedule.num_timesteps, steps)
    ac = schedule.alphas_cumprod
    timesteps = torch.tensor(kept[::-1], dtype=torch.long)
    abar = torch.tensor(np.append(ac[kept[::-1]], 1.0), dtype=dtype)
    return timesteps, abar
