"""The two callables the engine is built on, and the grid that connects solvers to stitching.

* A **member** is one pretrained model behind its family's adapter: ``member(x, t, cond) -> Output``, where
  ``t`` is a Python int or float, a timestep of the member's schedule (0 ... T-1; fractional between them), the
  same for the whole batch. It carries ``name``, ``schedule`` (``tstitch.schedules.Schedule``), ``space``
  (``Space``), ``cfg_channels``, ``num_classes``, ``condition(labels)`` (user class labels -> its condition) and
  ``null(cond)``, the condition that means "unconditional" in its own convention; ``net``, the network it runs
  per step (what ``tstitch.fast`` compiles, converts and offloads), and, where conditions are encoded by networks
  of their own (text), ``encoder``, an ``nn.Module`` of them. Stable Diffusion members also carry
  ``scheduler_config``, the diffusers scheduler config their checkpoint ships (``scheduler/``).
* A **denoiser** is what solvers call: ``denoiser(x, t) -> Output``; conditioning and guidance are bound in
  (``tstitch.guidance.guided``) and stitching composes several of them (``tstitch.stitch.Stitch``).
* A **solver** is a pure function ``solve(denoiser, x, timesteps, abar, *, schedule, steps, randn_like, clip,
  callback, **options) -> x0`` (every solver takes these keywords; ``tstitch.solvers``). It calls the denoiser at
  the ``timesteps`` of its ``Grid``, in order, and nowhere else.
* A **grid** (``Grid``) says, before sampling, where the solver will call the denoiser and which sampling step
  each call belongs to. Stitching assigns steps, not timestep values, to members: the plan is per step, and
  ``Stitch`` routes the c-th call to the member of its step (so a step of several calls, e.g. Heun's two, stays
  with one member, and a grid that repeats a timestep routes each call correctly).

Solvers know neither members nor stitching: they see a denoiser, a grid and the schedule.
"""
from dataclasses import dataclass
from itertools import pairwise

import torch


@dataclass
class Output:
    """A model's prediction at one step: the noise ``eps`` and, for models trained with a learned variance
    (ADM/DiT "learned range"), ``v`` in [-1, 1] interpolating log beta_t and log beta~_t."""

    eps: torch.Tensor
    v: torch.Tensor | None = None


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


@dataclass(frozen=True)
class Grid:
    """Where a solver calls the denoiser: ``timesteps[c]``, the timestep of call c in calling order (a Python int
    or float of the grid's schedule), and ``step[c]``, the sampling step it belongs to (0, 0, 1, 2, ...: each step
    is one or more consecutive calls). ``abar``: the alpha-bars the ADM-grid solvers step between (one per step
    and a final 1), None for solvers that bring their own."""

    timesteps: list
    step: list
    abar: torch.Tensor | None = None

    def __post_init__(self):
        steps = list(self.step)
        if len(steps) != len(self.timesteps) or steps[:1] not in ([], [0]) or any(
                b - a not in (0, 1) for a, b in pairwise(steps)):
            raise ValueError(f"a grid needs one step index per call, 0, ..., N-1 in order; got {self.step}")

    @property
    def steps(self):
        """N, the number of sampling steps."""
        return self.step[-1] + 1 if self.step else 0

    @property
    def starts(self):
        """The first call of each step."""
        return [c for c, s in enumerate(self.step) if c == 0 or s != self.step[c - 1]]
