"""The two callables the engine is built on, and the grid that connects solvers to stitching.

* A **member** is one pretrained model behind its family's adapter: ``member(x, t, cond) -> Output``, where
  ``t`` is a Python int or float, a timestep of the member's schedule (0 ... T-1; fractional between them), the
  same for the whole batch. It carries ``name``, ``schedule`` (``tstitch.models.schedules.Schedule``), ``space``
  (``Space``), ``cfg_channels``, ``num_classes``, ``condition(labels)`` (user class labels -> its condition) and
  ``null(cond)``, the condition that means "unconditional" in its own convention (a member with ``null_draws``
  draws it: ``null(cond, randn_like)``, LDM's uniform noise); ``net``, the network it runs
  per step (what ``tstitch.models.fast`` compiles, converts and offloads), and, where conditions are encoded by networks
  of their own (text), ``encoder``, an ``nn.Module`` of them. Stable Diffusion members also carry
  ``scheduler_config``, the diffusers scheduler config their checkpoint ships (``scheduler/``).
* A **denoiser** is what solvers call: ``denoiser(x, t) -> Output``; conditioning and guidance are bound in
  (``tstitch.sampling.guidance.guided``) and stitching composes several of them (``tstitch.sampling.stitch.Stitch``).
* A **solver** is a pure function ``solve(denoiser, x, timesteps, abar, *, schedule, steps, randn_like, clip,
  callback, **options) -> x0`` (every solver takes these keywords; ``sampling.solvers``). It calls the denoiser at
  the ``timesteps`` of its ``Grid``, in order, and nowhere else.
* A **grid** (``Grid``) says, before sampling, where the solver will call the denoiser and which sampling step
  each call belongs to. Stitching assigns steps, not timestep values, to members: the plan is per step, and
  ``Stitch`` routes the c-th call to the member of its step (so a step of several calls, e.g. Heun's two, stays
  with one member, and a grid that repeats a timestep routes each call correctly).

Solvers know neither members nor stitching: they see a denoiser, a grid and the schedule.

The contracts are ``typing.Protocol`` classes below (``Member``, ``Denoiser``, ``Solver``, ``Codec``, ``Metric``);
``MemberBase`` gives every adapter the optional parts of ``Member`` explicitly, so no caller probes for them.
"""
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class Member(Protocol):
    """One pretrained model behind its family's adapter (see the module docstring). The attributes after ``net``
    are the optional parts, with the defaults of ``MemberBase``."""

    family: str                     # the adapter's family: "dit", "uvit", "sd"
    name: str
    schedule: Any                   # tstitch.models.schedules.Schedule
    space: Space
    cfg_channels: int | None        # guide only the first k channels (DiT's official 3), None: every channel
    num_classes: int | None         # class-conditional: the classes; None: text-conditioned (prompts)
    net: torch.nn.Module            # the network run per step (what tstitch.models.fast compiles, converts, offloads)
    encoder: torch.nn.Module | None  # networks that encode conditions (text encoders), None
    guidance_embedded: bool         # the guidance scale is an input of the network (LCM): no unconditional half
    null_draws: bool                # null(cond, randn_like) draws the unconditional input per sample (LDM)
    scheduler_config: dict | None   # the diffusers scheduler config the checkpoint ships (solver=scheduler)
    offloaded: bool                 # its network moves itself to the device (tstitch.models.fast offload)
    sampler: dict                   # its family's own sampler: {"solver", "steps", "guidance"} (tstitch.pipeline)

    def __call__(self, x: torch.Tensor, t: int | float, cond: Any) -> "Output": ...

    def condition(self, labels: Any) -> Any: ...

    def null(self, cond: Any) -> Any: ...


class MemberBase:
    """The optional parts of ``Member``, explicit: an adapter's member class derives from this and overrides what
    its family has (a member of no zoo family, e.g. one written by hand, is of family ``custom``)."""

    family = "custom"
    cfg_channels = None
    encoder = None
    guidance_embedded = False
    null_draws = False
    scheduler_config = None
    offloaded = False
    sampler = {"solver": "ddim", "steps": 50, "guidance": 1.0}


class Denoiser(Protocol):
    """What solvers call: conditioning and guidance bound in (``tstitch.sampling.guidance.guided``), possibly stitched
    (``tstitch.sampling.stitch.Stitch``)."""

    def __call__(self, x: torch.Tensor, t: int | float) -> "Output": ...


class Solver(Protocol):
    """A pure function of a denoiser (``sampling.solvers``); every solver takes these keywords."""

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, timesteps: list, abar: torch.Tensor | None, *,
                 schedule: Any, steps: int | str, randn_like: Callable, clip: bool, callback: Callable | None,
                 **options: Any) -> torch.Tensor: ...


@runtime_checkable
class Codec(Protocol):
    """Between a data space and uint8 images (``tstitch.models.codecs``): ``source`` names it in records."""

    scale: float
    source: str

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: Any) -> "Codec": ...


@runtime_checkable
class Metric(Protocol):
    """Sample quality (``tstitch.metrics``): of images in memory, of a sample file, and what it compared with."""

    def __call__(self, images: torch.Tensor, labels: Any) -> dict: ...

    def score_file(self, path: Any) -> dict: ...

    def describe(self) -> dict: ...


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
