"""The notebook API: stitch members over one sampling trajectory.

    small, large = tstitch.load("toy/small"), tstitch.load("toy/large")
    x, y, rng = tstitch.data.seeds.draw(range(16), small.space.shape, num_classes=10)
    out = tstitch.sample([small, large], x, y, fractions=[0.4, 0.6], solver="ddim", steps=20, guidance=3.0)
    out.x, out.nfe  # final samples in the data space, function evaluations per member
"""
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from tstitch.data import seeds
from tstitch.errors import ConfigError
from tstitch.models import checks
from tstitch.models.protocols import Grid, Member
from tstitch.models.schedules import Schedule
from tstitch.models.zoo import load
from tstitch.rules import Section
from tstitch.sampling import solvers
from tstitch.sampling.guidance import guided
from tstitch.sampling.stitch import Stitch, alone, check_compatible, check_fractions, on_schedule, plan

OWN = ("fractions", "solver", "steps", "guidance", "channels", "rule", "randn_like", "callback")  # sample's keywords


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
    ("ddim100", "10,20"). The fractions apportion sampling steps (``rule``, see ``stitch.plan``); a step
    of several model calls runs on one member. ``members`` may also be zoo names or entry dicts, loaded here on
    the noise's device (each call loads them again: load once with ``tstitch.load`` to sample many batches).
    ``randn_like`` (stochastic solvers) must return finite noise of its argument's shape. Returns a ``Result``."""
    members = as_members(members, noise.device if isinstance(noise, torch.Tensor) else "cpu")
    fractions = check_fractions(alone(-1, len(members)) if fractions is None else fractions, len(members))
    check_compatible(members)
    noise, labels = checks.inputs(members, noise, labels, guidance)
    checks.channels(channels, members)
    steps = checks.steps(steps)
    grid, schedule, steps_plan, options = prepare(members, fractions, solver, steps, rule, solver_options)
    noise_source = randn_like
    if randn_like is not torch.randn_like and seeds.generators(randn_like) is None:  # a user's: checked
        noise_source = checks.FiniteNoise(randn_like)
    denoisers = member_denoisers(members, labels, schedule, guidance, channels, noise_source)
    stitched = Stitch(denoisers, grid.timesteps, steps_plan, grid.step)
    x = solvers.entry(solver).solve(stitched, noise, grid.timesteps, grid.abar, schedule=schedule, steps=steps,
                                    randn_like=noise_source, clip=members[0].space.clip, callback=callback, **options)
    if isinstance(noise_source, checks.FiniteNoise):
        noise_source.check()
    return Result(x, stitched.nfe, steps_plan, list(grid.timesteps))


def member_denoisers(members, labels, schedule, guidance, channels, randn_like=torch.randn_like) -> list:
    """Each member as a guided denoiser ``(x, t) -> Output`` on ``schedule``'s timesteps, conditioned on ``labels``
    (a member trained on another schedule is fed its own timestep of equal noise level). A member whose null
    condition is random (``null_draws``: LDM) draws it here, in member order, from ``randn_like``."""
    return [guided(on_schedule(m, schedule), m.condition(labels), guidance, _channels(channels, m), randn_like)
            for m in members]


def as_members(members, device="cpu") -> list:
    """A list of members from loaded members, zoo names or zoo entry dicts (loaded here, on ``device``), or one of
    these alone; anything else is one ConfigError line."""
    if isinstance(members, (str, dict)) or not isinstance(members, Iterable):
        members = [members]
    out = []
    for m in members:
        if isinstance(m, (str, dict)):
            m = load(m, device=device)
        elif not (callable(m) and hasattr(m, "space")):
            raise ConfigError(f"members must be loaded members (tstitch.load(...)), zoo names such as 'toy/large' "
                              f"or zoo entry dicts, not {type(m).__name__}")
        out.append(m)
    if not out:
        raise ConfigError("give one or more members: tstitch.load(...), or zoo names such as 'toy/large'")
    return out


def prepare(members: Sequence[Member], fractions: Sequence[float], solver: str = "ddim", steps: int | str = 50,
            rule: str = "steps", solver_options: dict | None = None) -> tuple[Grid, Schedule, list[int], dict]:
    """The solver's grid, its schedule, the plan (member per step) and the solver's options, checked before any
    model runs (a bad solver, scheduler or step count fails here, in one line).

    The grid is made on the schedule of the first member that runs (so a member with no steps changes nothing),
    or, for a solver that runs a shipped diffusers scheduler, on the last one's, with that member's scheduler.
    The official rule is T-Stitch's SD pipelines' when every member is a Stable Diffusion model, its LDM code's
    when every member is an LDM, else DiT's."""
    spec = solvers.entry(solver)
    running = [m for m, f in zip(members, fractions) if f > 0]
    lead = running[-1] if spec.shipped else running[0]
    options = check_options(solver, dict(solver_options or {}))
    steps = checks.steps(steps)
    if spec.shipped:
        options["shipped"] = lead.scheduler_config
    grid = spec.grid(lead.schedule, steps, **options)
    sd = all(m.family == "sd" for m in members)
    loop = (grid.starts, len(grid.timesteps)) if sd else None
    steps_plan = plan(fractions, [grid.timesteps[c] for c in grid.starts], rule, lead.schedule.num_timesteps, loop,
                      strict=all(m.family == "ldm" for m in members))
    return grid, lead.schedule, steps_plan, options


def check(members: Sequence[Member], fractions: Sequence[float] | None = None, solver: str = "ddim",
          steps: int | str = 50, rule: str = "steps", guidance: float = 1.0, channels: int | str | None = None,
          **solver_options) -> None:
    """``sample``'s keyword arguments checked against ``members`` without running a model: for callers that validate
    a configuration before any side effect. Raises ``ConfigError``."""
    members = as_members(members)
    fractions = check_fractions(alone(-1, len(members)) if fractions is None else fractions, len(members))
    checks.channels(channels, members)
    checks.check_guidance(guidance)
    prepare(members, fractions, solver, steps, rule, solver_options)


def check_options(solver: str, options: dict) -> dict:
    """``options`` of ``solver``, each one it takes (``solvers.options``), with the values its structured config
    allows; an unknown keyword (a misspelt ``tstitch.sample`` argument included) is one ConfigError line naming the
    nearest known one."""
    schema = solvers.options(solver)
    if schema is not None:
        known = [f.name for f in dataclasses.fields(schema)]
        for key in options:
            if key not in known:
                near = difflib.get_close_matches(key, [*OWN, *known], n=1, cutoff=0.6)
                hint = f"did you mean {near[0]}? " if near else ""
                raise ConfigError(f"unknown keyword argument {key!r}: {hint}tstitch.sample takes {', '.join(OWN)}, "
                                  f"and solver {solver} takes {', '.join(known) or 'no options'}")
        Section(schema)(options, "")  # the house rules of each value (Python values: no OmegaConf merge)
    return options


def _channels(channels, member):
    if channels is None:
        return member.cfg_channels
    return None if channels == "all" else channels
