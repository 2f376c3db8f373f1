"""Solvers: pure functions of a denoiser, all with one signature:

    solve(denoiser, x, timesteps, abar, *, schedule, steps, randn_like, clip, callback, **options) -> x0

Each comes with a grid function ``grid(schedule, steps, **options) -> tstitch.protocols.Grid``: where it will call
the denoiser (``timesteps``, in order) and which sampling step each call belongs to; ``tstitch.sample`` plans the
stitch on that grid and passes its ``timesteps`` and ``abar`` to the solver. ``schedule`` is the grid's
``tstitch.schedules.Schedule``, ``steps`` the step count as configured; ``randn_like`` supplies the noise of
stochastic solvers so that callers can give each sample its own generator (``tstitch.seeds.SeedNoise``).

* ADM grid (``tstitch.schedules.grid``: N original timesteps, respaced as ADM/DiT, one call per step, alpha-bars
  ending at 1): ``ddim``, ``ddpm``, ``dpmpp_2m``, and ``diffusers`` (a diffusers scheduler driven on that grid).
  These take the timesteps and alpha-bars and ignore ``schedule`` and ``steps``.
* Their own grid: ``scheduler``, a diffusers scheduler (by default the one the model ships) on its own
  timesteps and sigmas (``tstitch.solvers.hf``); ``dpm_solver``, U-ViT's official samplers, DPM-Solver-fast on
  continuous-time schedules and singlestep DPM-Solver++(3) on discrete ones (``tstitch.solvers.dpm_solver``).
"""
from collections.abc import Callable
from dataclasses import dataclass

from tstitch.errors import ConfigError
from tstitch.protocols import Grid
from tstitch.schedules import grid as adm_timesteps
from tstitch.solvers.ddim import ddim
from tstitch.solvers.ddpm import ddpm
from tstitch.solvers.dpm import dpmpp_2m
from tstitch.solvers.dpm_solver import dpm_grid, dpm_solver
from tstitch.solvers.hf import diffusers_grid, diffusers_scheduler, scheduler, scheduler_grid


def adm_grid(schedule, steps, **options):
    """ADM respacing of ``schedule`` (``steps``: an int or a string such as "ddim100" or "10,20")."""
    try:
        timesteps, abar = adm_timesteps(schedule, steps)
    except ValueError as e:
        raise ConfigError(f"steps={steps!r}: {e}; give an int or an ADM respacing string such as ddim50 "
                          "(solver.steps=...)") from None
    return Grid(timesteps.tolist(), list(range(len(timesteps))), abar)


@dataclass(frozen=True)
class Solver:
    """A solver and its grid. ``shipped``: the solver runs the diffusers scheduler a member ships, so it gets
    that member's ``scheduler_config`` as ``shipped=`` and its grid is that member's schedule; the member is the
    last that runs (the official T-Stitch pipelines run the large model's scheduler)."""

    solve: Callable
    grid: Callable = adm_grid
    shipped: bool = False


SOLVERS = {"ddim": Solver(ddim), "ddpm": Solver(ddpm), "dpmpp_2m": Solver(dpmpp_2m),
           "diffusers": Solver(diffusers_scheduler, diffusers_grid),
           "scheduler": Solver(scheduler, scheduler_grid, shipped=True), "dpm_solver": Solver(dpm_solver, dpm_grid)}


def entry(name):
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)} (solver=...)")
    return SOLVERS[name]


def get(name):
    """The solve function of solver ``name``."""
    return entry(name).solve
