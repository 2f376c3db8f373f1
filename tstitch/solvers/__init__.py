"""Solvers: pure functions ``solve(denoiser, x, timesteps, abar, *, randn_like, clip, callback, ...) -> x0``.

``timesteps`` are the N original timesteps where the denoiser is called, in sampling order, and ``abar``
their alpha-bars followed by 1 (clean data), from ``tstitch.schedules.grid``. Every solver makes exactly one
denoiser call per step (NFE = N). ``randn_like`` supplies the noise of stochastic solvers so that callers
can give each sample its own generator. A solver that takes a ``schedule`` argument gets the stitch's
``tstitch.schedules.Schedule`` as well (diffusers schedulers are built on it).
"""
from tstitch.errors import ConfigError
from tstitch.solvers.ddim import ddim
from tstitch.solvers.ddpm import ddpm
from tstitch.solvers.dpm import dpmpp_2m
from tstitch.solvers.hf import diffusers_scheduler

SOLVERS = {"ddim": ddim, "ddpm": ddpm, "dpmpp_2m": dpmpp_2m, "diffusers": diffusers_scheduler}


def get(name):
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)} (solver=...)")
    return SOLVERS[name]
