"""Solvers: pure functions of a denoiser, all with one signature:

    solve(denoiser, x, timesteps, abar, *, schedule, steps, randn_like, clip, callback, **options) -> x0

Each comes with a grid function ``grid(schedule, steps, **options) -> protocols.Grid``: where it will call
the denoiser (``timesteps``, in order) and which sampling step each call belongs to; ``tstitch.sample`` plans the
stitch on that grid and passes its ``timesteps`` and ``abar`` to the solver. ``schedule`` is the grid's
``tstitch.models.schedules.Schedule``, ``steps`` the step count as configured; ``randn_like`` supplies the noise of
stochastic solvers so that callers can give each sample its own generator (``tstitch.data.seeds.SeedNoise``).

* ADM grid (``tstitch.models.schedules.grid``: N original timesteps, respaced as ADM/DiT, one call per step, alpha-bars
  ending at 1): ``ddim``, ``ddpm``, ``dpmpp_2m``, and ``diffusers`` (a diffusers scheduler driven on that grid).
  These take the timesteps and alpha-bars and ignore ``schedule`` and ``steps``.
* Their own grid: ``scheduler``, a diffusers scheduler (by default the one the model ships) on its own
  timesteps and sigmas (``tstitch.sampling.solvers.hf``); ``dpm_solver``, U-ViT's official samplers, DPM-Solver-fast on
  continuous-time schedules and singlestep DPM-Solver++(3) on discrete ones (``tstitch.sampling.solvers.dpm_solver``).
"""
import importlib
import pkgutil

from tstitch.errors import ConfigError
from tstitch.sampling.solvers.common import Solver, adm_grid  # noqa: F401 - the record and the ADM grid, for callers


def _registered():
    """``{name: Solver}`` of every module of this package (its ``SOLVERS``): adding a solver is one module here and
    one yaml in ``conf/solver/``."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        found.update(getattr(importlib.import_module(f"{__name__}.{info.name}"), "SOLVERS", {}))
    return found


SOLVERS = _registered()

# the solve functions by name, for the Python API (``solvers.ddim(...)``); registration is the modules' SOLVERS
from tstitch.sampling.solvers.ddim import ddim  # noqa: E402, F401
from tstitch.sampling.solvers.ddpm import ddpm  # noqa: E402, F401
from tstitch.sampling.solvers.dpm import dpmpp_2m  # noqa: E402, F401
from tstitch.sampling.solvers.dpm_solver import dpm_solver  # noqa: E402, F401
from tstitch.sampling.solvers.hf import diffusers_scheduler, scheduler  # noqa: E402, F401


def entry(name):
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)} (solver=...)")
    return SOLVERS[name]


def get(name):
    """The solve function of solver ``name``."""
    return entry(name).solve
