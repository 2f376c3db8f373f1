"""The notebook API: stitch members over one sampling trajectory.

    small, large = tstitch.load("toy/small"), tstitch.load("toy/large")
    x, y, rng = tstitch.seeds.draw(range(16), small.space.shape, num_classes=10)
    out = tstitch.sample([small, large], x, y, fractions=[0.4, 0.6], solver="ddim", steps=20, guidance=3.0)
    out.x, out.nfe  # final samples in the data space, function evaluations per member
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tstitch import checks, solvers
from tstitch.errors import ConfigError
from tstitch.guidance import guided
from tstitch.protocols import Grid, Member
from tstitch.schedules import Schedule
from tstitch.stitch import Stitch, alone, check_compatible, check_fractions, on_schedule, plan


@dataclass
class Result:
    x: torch.Tensor        # final samples in the members' data space, float32
    nfe: list[int]         # model calls per member
    plan: list[int]        # the member of each sampling step
    timesteps: list        # the timestep of each model call (the grid's; int, or float between timesteps)


@torch.no_grad()
def sample(members: Sequence[Member], noise: torch.Tensor, labels: torch.Tensor | Sequence, *,
           fractions: Sequence[float] | None = None, solver: str = "ddim", steps: int | str = 50, guidance: float = 1.0,
           channels: int | str | None = None, rule: str = "steps", randn_like: Callable = torch.randn_like,
           callback: Callable | None = None, **solver_options) -> Result:
    """Sample from ``noise`` with ``members`` stitched by ``fractions`` (member 0 first; default: all steps to
    the last member). ``noise`` is float32 (another float dtype is cast to float32), one finite sample per row;
    ``labels`` an integer tensor or list of ints (class-conditional members) or a list of prompts, one per sample.
    ``guidance`` is the CFG scale w (1 = off), applied to the first ``channels`` channels (None: each member's
    own ``cfg_channels``, "all": every channel); ``steps`` an int or, on the ADM grid, a respacing string
    ("ddim100", "10,20"). The fractions apportion sampling steps (``rule``, see ``tstitch.stitch.plan``); a step
    of several model calls runs on one member. Returns a ``Result``."""
    members = list(members)
    if not members:
        raise ConfigError("give one or more members (tstitch.load(...))")
    fractions = check_fractions(alone(-1, len(members)) if fractions is None else fractions, len(members))
    check_compatible(members)
    noise, labels = checks.inputs(members, noise, labels, guidance)
    grid, schedule, steps_plan, options = prepare(members, fractions, solver, steps, rule, solver_options)
    # a member trained on another schedule is fed its own timestep of equal noise level
    denoisers = [guided(on_schedule(m, schedule), m.condition(labels), guidance, _channels(channels, m))
                 for m in members]
    stitched = Stitch(denoisers, grid.timesteps, steps_plan, grid.step)
    x = solvers.entry(solver).solve(stitched, noise, grid.timesteps, grid.abar, schedule=schedule, steps=steps,
                                    randn_like=randn_like, clip=members[0].space.clip, callback=callback, **options)
    return Result(x, stitched.nfe, steps_plan, list(grid.timesteps))


def prepare(members: Sequence[Member], fractions: Sequence[float], solver: str = "ddim", steps: int | str = 50,
            rule: str = "steps", solver_options: dict | None = None) -> tuple[Grid, Schedule, list[int], dict]:
    """The solver's grid, its schedule, the plan (member per step) and the solver's options, checked before any
    model runs (a bad solver, scheduler or step count fails here, in one line).

    The grid is made on the schedule of the first member that runs (so a member with no steps changes nothing),
    or, for a solver that runs a shipped diffusers scheduler, on the last one's, with that member's scheduler.
    The official rule is T-Stitch's SD pipelines' when every member is a Stable Diffusion model, else DiT's."""
    spec = solvers.entry(solver)
    running = [m for m, f in zip(members, fractions) if f > 0]
    lead = running[-1] if spec.shipped else running[0]
    options = dict(solver_options or {})
    if spec.shipped:
        options["shipped"] = lead.scheduler_config
    grid = spec.grid(lead.schedule, steps, **options)
    sd = all(m.family == "sd" for m in members)
    loop = (grid.starts, len(grid.timesteps)) if sd else None
    steps_plan = plan(fractions, [grid.timesteps[c] for c in grid.starts], rule, lead.schedule.num_timesteps, loop)
    return grid, lead.schedule, steps_plan, options


def check(members: Sequence[Member], fractions: Sequence[float] | None = None, solver: str = "ddim",
          steps: int | str = 50, rule: str = "steps", guidance: float = 1.0, channels: int | str | None = None,
          **solver_options) -> None:
    """``sample``'s keyword arguments checked against ``members`` without running a model: for callers that validate
    a configuration before any side effect. Raises ``ConfigError``."""
    del guidance, channels
    fractions = check_fractions(alone(-1, len(members)) if fractions is None else fractions, len(members))
    prepare(members, fractions, solver, steps, rule, solver_options)


def _channels(channels, member):
    if channels is None:
        return member.cfg_channels
    return None if channels == "all" else int(channels)
