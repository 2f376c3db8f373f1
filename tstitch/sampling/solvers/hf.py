"""Diffusers schedulers as solvers; the denoiser stays the only thing they call.

* ``scheduler``: a scheduler on ITS OWN grid, as a diffusers pipeline runs it. By default the one the model ships
  (its ``scheduler/`` folder: SD v1.x ``PNDMScheduler`` with ``skip_prk_steps``, "leading" spacing and
  ``steps_offset: 1``; SDXL ``EulerDiscreteScheduler``) with its shipped config; ``scheduler=<class name>`` swaps
  the class keeping the shipped config, as ``XScheduler.from_config(pipe.scheduler.config)`` does; ``config``
  overrides keys (``timestep_spacing``, ``steps_offset``, ``use_karras_sigmas``, ...). ``set_timesteps(steps)``
  makes the grid, and the scheduler's own ``scale_model_input`` and ``step`` run it: one member alone gives the
  pipeline's latents.
* ``diffusers``: a scheduler built on the grid schedule's betas and driven on the ADM grid (``set_timesteps(
  timesteps=...)``), for schedulers that take custom timesteps.
* ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2), i.e. ``diffusers`` with
  ``DPMSolverMultistepScheduler`` (``algorithm_type: dpmsolver++``, ``solver_order: 2``); a pixel-space member's
  x0 predictions are clipped to [-1, 1] by its thresholding with the maximum at 1. Its last step, to clean data, is
  first order (the final x0 prediction), as k-diffusion's. (It equals the former hand-written solver to 2.5e-5 on
  the toy zoo and 5e-5 on exact Gaussian denoisers: tests/test_solvers.py.)

Predictions reach a scheduler as eps (``prediction_type: epsilon``; each member converts its own). A step of
several model calls (Heun's and KDPM2's two, PNDM's warm-up or Runge-Kutta steps, a singlestep DPM-Solver's
group) is one step of the grid, so it runs on one member. Schedulers that draw noise (EulerAncestral, DDPM, LCM,
TCD with eta > 0, the SDE variants of DPM-Solver) get one generator per image, the ``randn_like`` of
``tstitch.data.seeds.SeedNoise`` (diffusers' ``generator`` list): each image stays a function of its seed.
"""
import functools
import inspect
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Optional

import torch
from omegaconf import MISSING

from tstitch.data.seeds import generators
from tstitch.errors import ConfigError
from tstitch.models.protocols import Grid
from tstitch.models.schedules import grid as adm_timesteps
from tstitch.rules import number
from tstitch.sampling.solvers.common import Solver, check_eta

BATCH_NOISE = {  # schedulers whose noise is one stream per batch: refused, with a per-image alternative
    "DPMSolverSDEScheduler": "DPMSolverMultistepScheduler (deterministic, or config {algorithm_type: "
                             "sde-dpmsolver++} for noise per image)"}
SOME = "PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler or UniPCMultistepScheduler"


@functools.cache
def _parameters(fn):
    return inspect.signature(fn).parameters


def scheduler_class(name):
    import diffusers

    cls = getattr(diffusers, str(name), None) if str(name).endswith("Scheduler") else None
    if not isinstance(cls, type):
        raise ConfigError(f"unknown diffusers scheduler {name!r}; use a class name such as {SOME} "
                          "(solver.options.scheduler=...)")
    if cls.__name__ in BATCH_NOISE:
        raise ConfigError(f"{cls.__name__} draws one noise stream for the whole batch, so an image would depend "
                          f"on its batch, not only on its seed; use {BATCH_NOISE[cls.__name__]}")
    return cls


def build(cls, base, config, schedule):
    """``cls`` from ``base`` (a shipped config, or the schedule's betas) as its pipeline loads it (``_pipeline``
    StableDiffusionPipeline: ``steps_offset`` 1, ``clip_sample`` off), then ``config`` on top; its alpha-bars must
    be the grid schedule's."""
    params = _parameters(cls.__init__)
    unknown = sorted(set(config or {}) - set(params))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no config key {unknown[0]!r}; its keys: "
                          f"{sorted(k for k in params if k not in ('self', 'kwargs'))} (solver.options.config)")
    merged = {k: v for k, v in base.items() if k in params}
    if base.get("_pipeline") == "StableDiffusionPipeline":  # what its __init__ does to an outdated config
        if "steps_offset" in params and merged.get("steps_offset", params["steps_offset"].default) != 1:
            merged["steps_offset"] = 1
        if "clip_sample" in params and merged.get("clip_sample", params["clip_sample"].default) is True:
            merged["clip_sample"] = False
    merged.update(config or {})
    if "prediction_type" in params:
        merged["prediction_type"] = "epsilon"
    s = cls(**merged)  # = cls.from_config(merged): merged holds only its init keys
    ac = getattr(s, "alphas_cumprod", None)
    ours = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float64)
    if ac is None or len(ac) != len(ours) or not torch.allclose(ac.double(), ours, rtol=1e-4, atol=0):
        raise ConfigError(f"{cls.__name__} with {dict(config or {})} does not run the models' noise schedule "
                          f"{schedule.name}; drop the beta keys from solver.options.config or use one of {SOME}")
    return s


def make(s, steps=None, timesteps=None, device=None):
    """``s.set_timesteps`` for ``steps`` (its own grid) or ``timesteps`` (ours); returns the grid: the calls'
    timesteps (integral ones as ints) and the step of each call."""
    _set_timesteps(s, steps, timesteps, device)
    name = type(s).__name__
    calls = [int(t) if float(t).is_integer() else float(t) for t in s.timesteps.tolist()]
    grid = Grid(calls, _steps(s))
    starts = [calls[c] for c in grid.starts]
    if not calls or any(b >= a for a, b in pairwise(starts)):
        raise ConfigError(f"{name} at {steps} steps gives the timesteps {starts[:6]}...: not a descending grid "
                          f"(more steps than its spacing can make); choose fewer solver.steps")
    return grid


def _set_timesteps(s, steps, timesteps, device):
    try:
        if timesteps is None:
            s.set_timesteps(steps, device=device)
        else:
            s.set_timesteps(timesteps=[int(t) for t in timesteps], device=device)
    except (ValueError, ZeroDivisionError, TypeError, IndexError) as e:
        raise ConfigError(f"{type(s).__name__} cannot make {steps} steps ({' '.join(str(e).split())[:160]}); choose "
                          "another solver.steps") from None


def _steps(s):
    """The sampling step of each of ``s``'s model calls."""
    n = len(s.timesteps)
    if hasattr(s, "state_in_first_order"):  # Heun, KDPM2: a call and its correction; the last step is one call
        return [c // 2 for c in range(n)]
    if hasattr(s, "order_list"):  # singlestep DPM-Solver: a group of orders 1, 2(, 3) is one step
        return [sum(o == 1 for o in s.order_list[:c + 1]) - 1 for c in range(n)]
    if hasattr(s, "prk_timesteps"):  # PNDM: Runge-Kutta steps of 4 calls, then PLMS (warm-up: 2 calls)
        prk = len(s.prk_timesteps)
        if prk:
            return [c // 4 for c in range(prk)] + [prk // 4 + c for c in range(n - prk)]
        return [max(c - 1, 0) for c in range(n)]
    return list(range(n))


def shipped_scheduler(shipped, scheduler, config, schedule):
    if scheduler is None and shipped is None:
        raise ConfigError("the model ships no diffusers scheduler (only Stable Diffusion checkpoints have a "
                          f"scheduler/ folder): name one, solver.options.scheduler=DDIMScheduler ({SOME})")
    cls = scheduler_class(scheduler or shipped["_class_name"])
    return build(cls, dict(shipped) if shipped else _betas(schedule), config, schedule)


def _betas(schedule):
    """A scheduler config of the members' own training schedule."""
    return {"num_train_timesteps": schedule.num_timesteps, "trained_betas": schedule.betas.tolist()}


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"solver=scheduler takes a positive int step count, not {steps!r} (solver.steps=50); "
                          "ADM respacing strings are for the ADM-grid solvers")


def scheduler_grid(schedule, steps, *, scheduler=None, config=None, shipped=None, eta=0.0):
    _check_steps(steps)
    check_eta(eta)
    return _cached_grid("own", schedule, steps, scheduler, _frozen(config), _frozen(shipped))


@functools.lru_cache(maxsize=64)
def _cached_grid(kind, schedule, steps, scheduler, config, shipped):
    """A grid is data: made once per setting (building and setting a scheduler costs milliseconds per run)."""
    config, shipped = _thawed(config), _thawed(shipped)
    if kind == "own":
        return make(shipped_scheduler(shipped, scheduler, config, schedule), steps)
    return make(_on_our_grid(schedule, scheduler, config), steps, adm_timesteps(schedule, steps)[0].tolist())


def _frozen(value):
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _frozen(v)) for k, v in value.items())))
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _thawed(value):
    if isinstance(value, tuple) and value[:1] == ("dict",):
        return {k: _thawed(v) for k, v in value[1]}
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


def scheduler(denoiser, x, timesteps, abar, *, scheduler=None, config=None, shipped=None, eta=0.0, schedule=None,
              steps=None, randn_like=torch.randn_like, clip=False, callback=None):
    """A diffusers scheduler on its own grid (see the module docstring); ``eta`` as the pipelines' (DDIM, TCD)."""
    s = shipped_scheduler(shipped, scheduler, config, schedule)
    _set_timesteps(s, steps, None, x.device)
    return run(s, denoiser, x, timesteps, eta, randn_like, callback)


def _on_our_grid(schedule, scheduler, config):
    import diffusers

    cls = getattr(diffusers, str(scheduler), None) if str(scheduler).endswith("Scheduler") else None
    if not isinstance(cls, type) or "timesteps" not in _parameters(cls.set_timesteps):
        raise ConfigError(f"diffusers scheduler {scheduler!r} cannot follow the stitch's timesteps (no custom "
                          "timesteps, or no such scheduler); use EulerDiscreteScheduler, DPMSolverMultistepScheduler, "
                          "HeunDiscreteScheduler or LCMScheduler (solver.options.scheduler=...), or solver=scheduler "
                          "for its own grid")
    return build(scheduler_class(scheduler), _betas(schedule), config, schedule)


def diffusers_grid(schedule, steps, *, scheduler="EulerDiscreteScheduler", config=None, eta=0.0):
    check_eta(eta)
    return _cached_grid("ours", schedule, steps, scheduler, _frozen(config), None)


def diffusers_scheduler(denoiser, x, timesteps, abar, *, scheduler="EulerDiscreteScheduler", config=None, eta=0.0,
                        schedule=None, steps=None, randn_like=torch.randn_like, clip=False, callback=None):
    """A diffusers scheduler on the ADM grid: its calls are at ``timesteps`` (the ADM timesteps, each step's
    repeated where the scheduler calls twice; see the module docstring)."""
    s = _on_our_grid(schedule, scheduler, config)
    _set_timesteps(s, steps, list(dict.fromkeys(timesteps)), x.device)
    return run(s, denoiser, x, timesteps, eta, randn_like, callback)


DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
CLIP = {"thresholding": True, "sample_max_value": 1.0}  # dynamic thresholding whose s is always 1: x0 in [-1, 1]


def dpmpp_2m(denoiser, x, timesteps, abar, *, schedule=None, steps=None, randn_like=torch.randn_like, clip=False,
             callback=None):
    """DPM-Solver++(2M) on the ADM grid: diffusers' DPMSolverMultistepScheduler (see the module docstring). With
    ``clip``, ``x`` is images, (batch, channels, ...), as its thresholding reads them."""
    if schedule is None:
        raise ConfigError("dpmpp_2m builds diffusers' DPMSolverMultistepScheduler on the members' noise schedule: "
                          "pass schedule=... (tstitch.sample does)")
    return diffusers_scheduler(denoiser, x, timesteps, abar, scheduler="DPMSolverMultistepScheduler",
                               config={**DPMPP_2M, **(CLIP if clip else {})}, schedule=schedule, steps=steps,
                               randn_like=randn_like, clip=clip, callback=callback)


def run(s, denoiser, x, timesteps, eta, randn_like, callback):
    """The pipelines' loop: ``x * init_noise_sigma``, then per call ``scale_model_input``, the denoiser at the grid's
    timestep, ``step`` (with ``eta`` and the per-image generators where the scheduler takes them)."""
    if len(timesteps) != len(s.timesteps):
        raise ValueError(f"{len(timesteps)} grid timesteps for {len(s.timesteps)} scheduler calls")
    accepts = _parameters(type(s).step)
    extra = {"eta": check_eta(eta)} if "eta" in accepts else {}
    if "generator" in accepts:
        g = generators(randn_like)
        if g is not None and len(g) != len(x):
            raise ValueError(f"{len(g)} generators for a batch of {len(x)}")
        extra["generator"] = g
    x = x * s.init_noise_sigma
    for c, t in enumerate(s.timesteps):
        out = denoiser(s.scale_model_input(x, t), timesteps[c])
        step = s.step(out.eps, t, x, **extra)
        x = step.prev_sample
        if callback is not None:
            callback(c, x, _x0(s, step))
    return x


def _x0(s, step):
    """The step's x0 prediction: its output's, or (DPM-Solver++ schedulers, which return none) the data
    prediction the scheduler keeps for its next step; None where neither is there."""
    x0 = getattr(step, "pred_original_sample", getattr(step, "denoised", None))
    if x0 is None and str(getattr(s.config, "algorithm_type", "")).endswith("dpmsolver++"):
        x0 = s.model_outputs[-1]
    return x0


@dataclass
class SchedulerOptions:
    scheduler: Optional[str] = MISSING  # null: the one the model ships
    config: Optional[dict[str, Any]] = MISSING  # constructor arguments over the base config
    eta: float = number(0, 1)


@dataclass
class DiffusersOptions(SchedulerOptions):
    scheduler: str = MISSING


SOLVERS = {"diffusers": Solver(diffusers_scheduler, diffusers_grid, options=DiffusersOptions),
           "dpmpp_2m": Solver(dpmpp_2m),
           "scheduler": Solver(scheduler, scheduler_grid, shipped=True, respaced=False, options=SchedulerOptions)}
