"""Solvers: pure functions of a denoiser, all with one signature:

    solve(denoiser, x, timesteps, abar, *, schedule, steps, randn_like, clip, callback, **options) -> x0

Each comes with a grid function ``grid(schedule, steps, **options) -> protocols.Grid``: where it will call
the denoiser (``timesteps``, in order) and which sampling step each call belongs to; ``tstitch.sample`` plans the
stitch on that grid and passes its ``timesteps`` and ``abar`` to the solver. ``schedule`` is the grid's
``tstitch.models.schedules.Schedule``, ``steps`` the step count as configured; ``randn_like`` supplies the noise of
stochastic solvers so that callers can give each sample its own generator (``tstitch.data.seeds.SeedNoise``).

* ADM grid (``tstitch.models.schedules.grid``: N original timesteps, respaced as ADM/DiT, one call per step, alpha-bars
  ending at 1): ``ddim``, ``ddpm``, and ``diffusers`` (a diffusers scheduler driven on that grid) with its preset
  ``dpmpp_2m`` (DPM-Solver++(2M): diffusers' DPMSolverMultistepScheduler, ``tstitch.sampling.solvers.hf``).
  These take the timesteps and alpha-bars; ``ddim`` and ``ddpm`` ignore ``schedule`` and ``steps``, the diffusers
  ones build their scheduler on ``schedule``.
* Their own grid: ``scheduler``, a diffusers scheduler (by default the one the model ships) on its own
  timesteps and sigmas (``tstitch.sampling.solvers.hf``); ``dpm_solver``, U-ViT's official samplers, DPM-Solver-fast on
  continuous-time schedules and singlestep DPM-Solver++(3) on discrete ones (``tstitch.sampling.solvers.dpm_solver``);
  ``ldm_ddim``, DDIM on CompVis latent diffusion's grid (1, 11, ..., 991 to alpha-bar of t = 0; eta 1 by default, as
  the T-Stitch LDM scripts; ``tstitch.sampling.solvers.ldm_ddim``).

A solver's options (``solver.options`` in the config, keyword arguments of ``tstitch.sample``) are the keyword
arguments of its solve function that the sampler does not pass itself (``INTERNAL``), typed by the structured
config its module registers (``Solver(..., options=Options)``); ``check_config`` checks a config's ``solver``.
"""
import dataclasses
import functools
import importlib
import inspect
import pkgutil
from typing import Any

from omegaconf import MISSING

from tstitch.errors import ConfigError
from tstitch.models.schedules import space_timesteps
from tstitch.rules import Int, fail, validate
from tstitch.sampling.solvers.common import INTERNAL, Solver, adm_grid  # noqa: F401 - the record, the ADM grid


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
from tstitch.sampling.solvers.dpm_solver import dpm_solver  # noqa: E402, F401
from tstitch.sampling.solvers.hf import diffusers_scheduler, dpmpp_2m, scheduler  # noqa: E402, F401
from tstitch.sampling.solvers.ldm_ddim import ldm_ddim  # noqa: E402, F401


def entry(name):
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)} (solver=...)")
    return SOLVERS[name]


def get(name):
    """The solve function of solver ``name``."""
    return entry(name).solve


def keywords(name):
    """The options solver ``name`` takes: its solve function's keyword-only arguments but ``INTERNAL``; None when it
    takes any keyword (``**kwargs``)."""
    params = inspect.signature(entry(name).solve).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in INTERNAL]


def options(name):
    """The structured config of solver ``name``'s options: its module's (``Solver.options``), else one of its
    keywords with any value; None when it takes any keyword."""
    spec = entry(name)
    if spec.options is not None:
        return spec.options
    known = keywords(name)
    return None if known is None else _untyped(name, tuple(known))


@functools.cache
def _untyped(name, known):
    return dataclasses.make_dataclass(f"{name}_options", [(k, Any, dataclasses.field(default=MISSING)) for k in known])


def check_config(cfg, horizon):
    """A config's ``solver`` section: a registered solver, a step count its grid can make on schedules of
    ``horizon`` timesteps, and its options. (What depends on the loaded members, e.g. the scheduler a model ships,
    is checked once they are loaded: ``tstitch.sampling.sample.check``.)"""
    spec = entry(cfg.name)
    steps = cfg.steps
    if isinstance(steps, int) and steps > horizon:
        fail("solver.steps", steps, f"give at most {horizon} steps (the members' schedules have {horizon} timesteps)")
    if not spec.respaced:
        Int(1)(steps, "solver.steps")  # a grid of its own: a step count
    else:
        try:
            space_timesteps(horizon, steps)
        except (ValueError, TypeError) as e:
            fail("solver.steps", steps, f"give a step count or an ADM respacing string such as ddim50 or 10,20 ({e})")
    schema = options(cfg.name)
    if schema is not None:
        validate(cfg.get("options") or {}, schema, "solver.options")
