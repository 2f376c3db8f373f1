"""What every solver module shares: the x0 / eps conversions, the ADM grid and ``Solver``, the record a module
registers its solvers with (``SOLVERS = {name: Solver(...)}``), with the structured config of its options."""
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tstitch.errors import ConfigError
from tstitch.models.protocols import Grid
from tstitch.models.schedules import grid as adm_timesteps


def predict_x0(out, x, abar_t, clip):
    """x0 from the eps prediction, optionally clipped to [-1, 1] (pixel-space models)."""
    x0 = (x - (1 - abar_t) ** 0.5 * out.eps) / abar_t ** 0.5
    return x0.clamp(-1, 1) if clip else x0


def eps_from_x0(x, x0, abar_t):
    return (x - abar_t ** 0.5 * x0) / (1 - abar_t) ** 0.5


def as_float(abar):
    return [float(a) for a in torch.as_tensor(abar, dtype=torch.float64)]


def adm_grid(schedule, steps, **options):
    """ADM respacing of ``schedule`` (``steps``: an int or a string such as "ddim100" or "10,20")."""
    try:
        timesteps, abar = adm_timesteps(schedule, steps)
    except ValueError as e:
        raise ConfigError(f"steps={steps!r}: {e}; give an int or an ADM respacing string such as ddim50 "
                          "(solver.steps=...)") from None
    return Grid(timesteps.tolist(), list(range(len(timesteps))), abar)


def check_eta(eta):
    """``eta``, the stochasticity of DDIM-type steps, as a float in [0, 1] (0: deterministic, 1: DDPM's variance);
    NaN or inf would make every sample NaN, and above 1 the step's variance exceeds what the next level allows."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta) or not 0 <= eta <= 1:
        raise ConfigError(f"eta={eta!r} is not allowed: give a number in [0, 1] (0: deterministic DDIM, 1: DDPM's "
                          "variance) (solver.options.eta=...)")
    return float(eta)


@dataclass(frozen=True)
class Solver:
    """A solver and its grid. ``respaced``: its ``steps`` may be an ADM respacing string (the ADM grid).
    ``shipped``: the solver runs the diffusers scheduler a member ships, so it gets that member's
    ``scheduler_config`` as ``shipped=`` and its grid is that member's schedule; the member is the last that runs (the
    official T-Stitch pipelines run the large model's). ``options``: see ``tstitch.sampling.solvers.options``."""

    solve: Callable
    grid: Callable = adm_grid
    shipped: bool = False
    respaced: bool = True
    options: type | None = None  # a structured config (``tstitch.config``) of the keyword arguments of ``solve``
    # that are options (not ``INTERNAL``), their types and ranges; None: those keywords, any value


INTERNAL = ("randn_like", "clip", "callback", "schedule", "steps", "shipped")  # what the sampler passes itself
