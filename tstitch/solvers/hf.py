"""Diffusers schedulers as solvers, for users who expect them: ``solver=diffusers`` with
``solver.options.scheduler=EulerDiscreteScheduler`` (or ``DPMSolverMultistepScheduler``, ``HeunDiscreteScheduler``,
``LCMScheduler``: any that accepts custom timesteps).

The scheduler is built on the stitch's own schedule (``trained_betas``) and follows our grid (``set_timesteps(
timesteps=...)``), so the stitch plan and the NFE count hold as with our solvers; the denoiser stays the only
thing it calls. Deterministic schedulers only: a stochastic one draws its noise from one generator for the
whole batch, so an image would no longer be a function of its seed.
"""
import inspect

import torch

from tstitch.errors import ConfigError


def diffusers_scheduler(denoiser, x, timesteps, abar, *, scheduler="EulerDiscreteScheduler", config=None,
                        schedule=None, randn_like=torch.randn_like, clip=False, callback=None):
    import diffusers

    cls = getattr(diffusers, str(scheduler), None)
    if cls is None or "timesteps" not in inspect.signature(cls.set_timesteps).parameters:
        raise ConfigError(f"diffusers scheduler {scheduler!r} cannot follow the stitch's timesteps (no custom "
                          "timesteps); use EulerDiscreteScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler "
                          "or LCMScheduler (solver.options.scheduler=...)")
    if "Ancestral" in cls.__name__ or (config or {}).get("algorithm_type", "").startswith("sde"):
        raise ConfigError(f"{scheduler} with {config} is stochastic with one generator per batch; pick a "
                          "deterministic scheduler (every image must be a function of its seed)")
    s = cls(num_train_timesteps=schedule.num_timesteps, trained_betas=schedule.betas.tolist(),
            prediction_type="epsilon", **dict(config or {}))
    s.set_timesteps(timesteps=[int(t) for t in timesteps], device=x.device)
    x = x * s.init_noise_sigma
    for i, t in enumerate(s.timesteps):
        out = denoiser(s.scale_model_input(x, t), int(t))
        step = s.step(out.eps, t, x)
        x = step.prev_sample
        if callback is not None:
            callback(i, x, getattr(step, "pred_original_sample", None))
    return x
