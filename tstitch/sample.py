"""The notebook API: stitch members over one sampling trajectory.

    small, large = tstitch.load("toy/small"), tstitch.load("toy/large")
    x, y, rng = tstitch.seeds.draw(range(16), small.space.shape, num_classes=10)
    out = tstitch.sample([small, large], x, y, fractions=[0.4, 0.6], solver="ddim", steps=20, guidance=3.0)
    out.x, out.nfe  # final samples in the data space, function evaluations per member
"""
import inspect
from dataclasses import dataclass

import torch

from tstitch import checks, solvers
from tstitch.errors import ConfigError
from tstitch.guidance import guided
from tstitch.schedules import grid
from tstitch.stitch import Stitch, check_compatible, check_fractions, on_schedule, plan


@dataclass
class Result:
    x: torch.Tensor
    nfe: list
    plan: list
    timesteps: list


@torch.no_grad()
def sample(members, noise, labels, *, fractions=None, solver="ddim", steps=50, guidance=1.0, channels=None,
           rule="steps", randn_like=torch.randn_like, callback=None, **solver_options):
    """Sample from ``noise`` with ``members`` stitched by ``fractions`` (member 0 first; default: all steps to
    the last member). ``noise`` is float32 (another float dtype is cast to float32), one finite sample per row;
    ``labels`` an integer tensor or list of ints (class-conditional members) or a list of prompts, one per sample.
    ``guidance`` is the CFG scale w (1 = off), applied to the first ``channels`` channels (None: each member's
    own ``cfg_channels``, "all": every channel); ``steps`` an int or an ADM respacing string ("ddim100",
    "10,20"). Returns a ``Result``."""
    members = list(members)
    if not members:
        raise ConfigError("give one or more members (tstitch.load(...))")
    fractions = check_fractions([0.0] * (len(members) - 1) + [1.0] if fractions is None else fractions, len(members))
    check_compatible(members)
    noise, labels = checks.inputs(members, noise, labels, guidance)
    # The grid is the schedule of the first member that runs (so a member with no steps changes nothing); a
    # member trained on another schedule is fed its own timestep of equal noise level.
    schedule = next(m.schedule for m, f in zip(members, fractions) if f > 0)
    timesteps, abar = grid(schedule, steps)
    timesteps = timesteps.tolist()
    steps_plan = plan(fractions, timesteps, rule, schedule.num_timesteps)
    denoisers = [guided(on_schedule(m, schedule), m.condition(labels), guidance, _channels(channels, m))
                 for m in members]
    stitched = Stitch(denoisers, timesteps, steps_plan)
    solve = solvers.get(solver)
    if "schedule" in inspect.signature(solve).parameters:
        solver_options = {**solver_options, "schedule": schedule}
    x = solve(stitched, noise, timesteps, abar, randn_like=randn_like, clip=members[0].space.clip, callback=callback,
              **solver_options)
    return Result(x, stitched.nfe, steps_plan, timesteps)


def _channels(channels, member):
    if channels is None:
        return member.cfg_channels
    return None if channels == "all" else int(channels)
