"""The two callables the engine is built on.

* A **member** is one pretrained model behind its family's adapter: ``member(x, t, cond) -> Output``, where
  ``t`` is a Python int, an original timestep of the member's schedule (0 ... T-1), the same for the whole
  batch. It carries ``name``, ``schedule`` (``tstitch.schedules.Schedule``), ``space`` (``Space``),
  ``cfg_channels``, ``num_classes``, ``condition(labels)`` (user class labels -> its condition) and
  ``null(cond)``, the condition that means "unconditional" in its own convention; ``net``, the network it runs
  per step (what ``tstitch.fast`` compiles, converts and offloads), and, where conditions are encoded by networks
  of their own (text), ``encoder``, an ``nn.Module`` of them.
* A **denoiser** is what solvers call: ``denoiser(x, t) -> Output``; conditioning and guidance are bound in
  (``tstitch.guidance.guided``) and stitching composes several of them (``tstitch.stitch.Stitch``).

Solvers know neither: they see a denoiser, a grid of timesteps and the alpha-bars of the shared schedule.
"""
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Output:
    """A model's prediction at one step: the noise ``eps`` and, for models trained with a learned variance
    (ADM/DiT "learned range"), ``v`` in [-1, 1] interpolating log beta_t and log beta~_t."""

    eps: torch.Tensor
    v: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Space:
    """The data space a model was trained in: its identity (e.g. ``sd-kl-f8``), the shape of one sample,
    the scale applied to the codec's output, and whether x0 predictions are clipped to [-1, 1] (pixels)."""

    name: str
    shape: tuple
    scale: float = 1.0
    clip: bool = False


class Wrapped:
    """A member seen through a wrapper (timing, autocast, another schedule's timesteps): every attribute is the
    member's own; a subclass changes ``__call__``."""

    def __init__(self, member):
        self.member = member

    def __getattr__(self, name):
        if name == "member":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.member, name)
