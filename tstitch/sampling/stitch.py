"""Trajectory stitching (Pan et al., 2024), written once: a denoiser that routes each step to one member.

The switch schedule is data: ``plan(fractions, timesteps)`` gives, for each sampling step, the index of the
member that runs it. Member 0 takes the first (noisiest) steps, member K-1 the last. Steps, not timestep values:
a solver's ``Grid`` says which calls make each step (``tstitch.models.protocols``), and all calls of a step go to the
step's member.
"""
import math

import numpy as np

from tstitch.errors import ConfigError
from tstitch.models.protocols import Output, Wrapped


def check_fractions(fractions, members=None):
    try:
        fractions = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ConfigError(f"stitch fractions must be a list of numbers, one per member, not {fractions!r}; e.g. "
                          "fractions=[0.4, 0.6]") from None
    if not all(math.isfinite(f) for f in fractions):
        raise ConfigError(f"stitch fractions {fractions} hold NaN or inf; each must be a number in [0, 1]")
    if any(f < -1e-9 for f in fractions):
        raise ConfigError(f"stitch fractions {fractions} has a negative entry; each must be in [0, 1]")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigError(f"stitch fractions {fractions} sum to {sum(fractions):g}, not 1; "
                          "give one fraction per member, e.g. stitch.fractions=[0.4,0.6]")
    if members is not None and len(fractions) != members:
        raise ConfigError(f"{len(fractions)} stitch fractions for {members} members; give one per member")
    return [max(f, 0.0) for f in fractions]  # a complement like 1 - 0.8 - 0.2 may be -5e-17


def alone(k, n):
    """The allocation that gives every step to member ``k`` of ``n`` (``-1``: the last, the reference of a
    speedup)."""
    k = k % n
    return [float(j == k) for j in range(n)]


def allocate(fractions, steps):
    """Integer steps per member: the boundaries floor(N * cumsum(f) + 1/2) (cumulative rounding, halves up).

    The counts always sum to N and each is within 1 of N * f_k; with two members the first gets
    floor(N * r + 1/2) steps. The official DiT rule (``plan(rule="official")``) switches by timestep
    instead: on DiT's uniform 10/20/50/100/250-step grids it gives the same counts, but where N * r is a half
    its answer depends on where the grid points fall (at N = 25: 17 small steps for r = 0.7, 22 for 0.9).
    ``fractions`` as ``check_fractions`` returns them.
    """
    bounds = [0] + [math.floor(steps * c + 0.5 + 1e-9) for c in np.cumsum(fractions)[:-1]] + [steps]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def plan(fractions, timesteps, rule="steps", num_timesteps=1000, loop=None, strict=False):
    """Member index per sampling step, for ``timesteps`` (where each step starts) in sampling (descending) order.

    ``rule="steps"``: member k runs a block of ``allocate(fractions, N)[k]`` consecutive steps.
    ``rule="official"``, the rule of the official T-Stitch code of the family:
      * DiT (``loop`` None), by timestep. Two members as ``TStitch``: the small one iff t / T >= 1 - r; more as
        ``MultiTStitch``: the first member k whose float32 cumulative fraction reaches the progress 1 - t / T.
      * LDM (``strict``), by timestep, two members as ``TStitchProxy``: the small one iff r == 1 or t / T > 1 - r.
      * Stable Diffusion (``loop=(starts, length)``: the pipeline loop's index of each step's first call and the
        loop's length, ``len(scheduler.timesteps)``, e.g. 51 for PNDM at 50 steps), by loop index, as ``TStitchSD``:
        the small member at loop index i iff (i + 1) / length <= r. A step of several loop iterations (Heun's
        two calls, PNDM's warm-up) goes where its first iteration goes, so it is never split.

    The other trajectory schedules of the paper's Table 7 (each a fixed plan, the same for every batch and run):
      * ``rule="reverse"``: the blocks of ``steps`` in reverse member order (the last member first: "large to
        small").
      * ``rule="interleave"``: the same step counts as ``steps``, spread evenly over the trajectory (each step to
        the member furthest behind its share so far, ties to the earlier member; at 0.5 : 0.5, S, L, S, L, ...).
      * ``rule="decreasing"`` (two members): step i runs member 0 with a probability falling linearly over the
        steps, with mean ``fractions[0]`` (from 1 to 0 at 0.5 : 0.5, the paper's "decreasing probability"); the
        draws come from a fixed generator (``PLAN_SEED``), so the plan is data, not chance per batch, and the
        NFE per member are what the draws gave (close to, not exactly, N x fraction).

    ``fractions`` as ``check_fractions`` returns them (they are checked once, where they enter: the config's
    schema, ``tstitch.sample``).
    """
    fractions = [float(f) for f in fractions]
    timesteps = [float(t) for t in timesteps]
    if rule in ("steps", "reverse"):
        counts = allocate(fractions, len(timesteps))
        order = range(len(counts)) if rule == "steps" else reversed(range(len(counts)))
        return [k for k in order for _ in range(counts[k])]
    if rule == "interleave":
        return interleave(allocate(fractions, len(timesteps)))
    if rule == "decreasing":
        return decreasing(fractions, len(timesteps))
    if rule == "official" and loop is not None:
        if len(fractions) != 2:
            raise ConfigError(f"rule=official for Stable Diffusion is TStitchSD's two-member rule, not for "
                              f"{len(fractions)} members; use stitch.rule=steps")
        starts, length = loop
        return [0 if (i + 1) / length <= fractions[0] else 1 for i in starts]
    if rule == "official" and strict:
        if len(fractions) != 2:
            raise ConfigError(f"rule=official for LDM is TStitchProxy's two-member rule, not for {len(fractions)} "
                              "members; use stitch.rule=steps")
        return [0 if fractions[0] == 1.0 or t / num_timesteps > 1 - fractions[0] else 1 for t in timesteps]
    if rule == "official" and len(fractions) == 2:
        return [0 if t / num_timesteps >= 1 - fractions[0] else 1 for t in timesteps]
    if rule == "official":
        cum = np.cumsum(np.asarray(fractions, dtype=np.float32))
        return [next((k for k, c in enumerate(cum) if 1 - t / num_timesteps <= c), len(cum) - 1) for t in timesteps]
    raise ConfigError(f"unknown stitch rule {rule!r}; use one of {', '.join(RULES)}")


RULES = ("steps", "official", "reverse", "interleave", "decreasing")  # plan's rules (stitch.rule)
PLAN_SEED = 0  # the generator of rule="decreasing"'s draws


def interleave(counts):
    """Member per step for step ``counts`` spread evenly: step i goes to the member whose share of the steps so far
    is furthest behind its share of the whole (ties to the earlier member)."""
    n, done, out = sum(counts), [0] * len(counts), []
    for i in range(n):
        k = max(range(len(counts)), key=lambda m: (counts[m] * (i + 1) / n - done[m], -m) if done[m] < counts[m]
                else (-math.inf, -m))
        done[k] += 1
        out.append(k)
    return out


def decreasing(fractions, steps):
    """Two members: member 0 at step i with probability p_i, linear in i from ``a`` to ``b`` with mean
    ``fractions[0]`` (a = min(1, 2 r), b = 2 r - a), drawn from ``numpy.random.default_rng(PLAN_SEED)``."""
    if len(fractions) != 2:
        raise ConfigError(f"stitch.rule=decreasing is a two-member schedule, not for {len(fractions)} members; use "
                          "stitch.rule=steps or interleave")
    r = fractions[0]
    a = min(1.0, 2 * r)
    p = np.linspace(a, 2 * r - a, steps) if steps > 1 else np.array([r])
    draws = np.random.default_rng(PLAN_SEED).random(steps)
    return [0 if u < q else 1 for u, q in zip(draws, p)]


def check_compatible(members):
    """Members must share the data space (its identity, e.g. the latent space of one VAE encoder, the shape, the
    scale and clipping); noise schedules may differ (see ``on_schedule``). Otherwise name the two and the mismatch."""
    first = members[0]
    for m in members[1:]:
        if m.space != first.space:
            raise ConfigError(f"cannot stitch {first.name} with {m.name}: different space ({first.space} vs "
                              f"{m.space}); stitch only models trained in the same data space (latent space, "
                              "shape and scale)")


class Retimed(Wrapped):
    """``member`` driven on the timesteps of another ``schedule``: grid timestep t (an int, or a float between
    timesteps) becomes the member's own (fractional) timestep at the same noise level. Its learned-range variance
    is dropped (it interpolates variances of the member's own schedule), so DDPM needs ``variance=small|large``
    there."""

    def __init__(self, member, schedule):
        super().__init__(member)
        self.schedule, self.abar, self.own = schedule, schedule.alphas_cumprod, {}

    def __call__(self, x, t, cond):
        if t not in self.own:
            abar = self.abar[int(t)] if float(t).is_integer() else self.schedule.abar_at(t)
            self.own[t] = self.member.schedule.time_of(abar)
        return Output(self.member(x, self.own[t], cond).eps)


def on_schedule(member, schedule):
    """``member`` as seen on ``schedule``'s timesteps: itself when it was trained on that schedule."""
    return member if member.schedule == schedule else Retimed(member, schedule)


class Stitch:
    """Denoiser combinator: ``Stitch(denoisers, timesteps, steps_plan, step)(x, t)`` sends the c-th call to the
    member that the plan gives its step, ``steps_plan[step[c]]``, and counts function evaluations (model calls)
    per member in ``nfe``. ``timesteps`` and ``step`` are a ``Grid``'s (``step`` None: one call per step): the
    calls must come at those timesteps, in that order, as solvers make them; another call is an error, not a
    silent reroute. One ``Stitch`` serves one trajectory."""

    def __init__(self, denoisers, timesteps, steps_plan, step=None):
        step = list(range(len(timesteps))) if step is None else [int(s) for s in step]
        n = step[-1] + 1 if step else 0
        if len(steps_plan) != n:
            raise ValueError(f"plan has {len(steps_plan)} entries for {n} steps")
        self.denoisers, self.timesteps = list(denoisers), list(timesteps)
        self.owner = [steps_plan[s] for s in step]  # the member of each call
        self.nfe = [0] * len(self.denoisers)
        self.calls = 0

    def __call__(self, x, t):
        c = self.calls
        if c >= len(self.owner) or (isinstance(t, (int, float)) and t != self.timesteps[c]):
            expected = self.timesteps[c] if c < len(self.owner) else "none"
            raise ValueError(f"call {c} at timestep {t}, but the grid's call {c} is at {expected}: a solver must "
                             "call the denoiser at its grid's timesteps, in order")
        self.calls = c + 1
        k = self.owner[c]
        self.nfe[k] += 1
        return self.denoisers[k](x, t)
