"""Allocation search: which fractions of the steps to give each member, for the best quality at each cost.

The paper's "about 40% to the small model" is a hypothesis to test, not a constant. ``search`` (1) measures each
member's cost per step, (2) predicts the time of every allocation on a grid from those costs (the plan's step
counts times the cost per step), (3) drops allocations over a time budget, (4) scores every remaining one on a
small seed set, (5) keeps the Pareto front of (predicted time, quality) and (6) samples the front again on a
larger seed set with measured time, whose Pareto front is the answer.
"""
import itertools

from omegaconf import open_dict

from tstitch.errors import ConfigError
from tstitch.stitch import allocate


def candidates(k, grid):
    """Every allocation of k members on a grid of ``grid`` (fractions summing to 1): 66 for k = 3 at 0.1."""
    n = round(1 / grid)
    if k < 2 or abs(n * grid - 1) > 1e-9:
        raise ConfigError(f"search needs two or more members and a grid that divides 1 (search.grid={grid})")
    return [[c / n for c in cut] for cut in _compositions(n, k)]


def _compositions(n, k):
    for bars in itertools.combinations(range(n + k - 1), k - 1):
        edges = (-1, *bars, n + k - 1)
        yield [edges[i + 1] - edges[i] - 1 for i in range(k)]


def predict(costs, fractions, steps):
    """Seconds per image of an allocation from the members' seconds per step per image."""
    return sum(c * n for c, n in zip(costs, allocate(fractions, steps)))


def pareto(rows, time_key, quality, maximize=False):
    """The rows no other row beats on both time (lower) and quality, in order of time."""
    sign = -1 if maximize else 1
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r[time_key], sign * r[quality])):
        if sign * r[quality] < best:
            front.append(r)
            best = sign * r[quality]
    return front


def search(cfg, run):
    """Rows of every candidate (predicted s/image, small-set quality, on the front or not) and of the confirmed
    front (measured s/image, large-set quality); ``run`` is ``tstitch.run.run``."""
    from tstitch import metrics
    from tstitch.run import load_stitch

    s = cfg.search
    k, steps = len(cfg.stitch.members), int(cfg.solver.steps)
    loaded = {"stitch": load_stitch(cfg, cfg.device), "metric": metrics.build(cfg.get("metric"))}  # once, not per sweep

    def sweep(allocations, num_samples):
        with open_dict(cfg):
            cfg.sweep = {"first": None, "allocations": allocations}
            cfg.num_samples = num_samples
        rows, _, members, facts = run(cfg, **loaded)
        return rows, members, facts["metric"]

    alone, members, _ = sweep([[float(i == j) for j in range(k)] for i in range(k)], s.cost_samples)
    costs = [r["s_per_image"] / steps for r in alone]  # seconds per step per image, per member
    pool = [{"fractions": a, "predicted_s_per_image": predict(costs, a, steps)} for a in candidates(k, s.grid)]
    if s.budget is not None:
        pool = [r for r in pool if r["predicted_s_per_image"] <= s.budget]
        if not pool:
            raise ConfigError(f"no allocation fits search.budget={s.budget} s/image (the cheapest member alone "
                              f"takes {min(costs) * steps:.4g}); raise the budget")
    scored, _, metric = sweep([r["fractions"] for r in pool], s.num_samples)
    if s.objective not in scored[0]:
        raise ConfigError(f"search.objective={s.objective!r} is not a value of the metric (it gives "
                          f"{sorted(k for k in scored[0] if k not in ('fractions', 'nfe'))}); set metric and objective")
    for r, q in zip(pool, scored):
        r.update(nfe=q["nfe"], **{s.objective: q[s.objective]})
    front = pareto(pool, "predicted_s_per_image", s.objective, s.maximize)
    for r in pool:
        r["front"] = r in front
    confirmed, _, _ = sweep([r["fractions"] for r in front], s.confirm_samples)
    for r in confirmed:
        r["predicted_s_per_image"] = predict(costs, r["fractions"], steps)
    final = pareto(confirmed, "s_per_image", s.objective, s.maximize)
    for r in confirmed:
        r["front"] = r in final
    return {"costs": dict(zip([m.name for m in members], costs)), "members": [m.name for m in members],
            "candidates": pool, "confirmed": confirmed, "metric": metric, "best": pick(final, s)}


def pick(front, s):
    """The cheapest confirmed allocation that meets ``search.target`` (None without a target or when none does)."""
    if s.target is None:
        return None
    ok = [r for r in front if (r[s.objective] >= s.target if s.maximize else r[s.objective] <= s.target)]
    return min(ok, key=lambda r: r["s_per_image"]) if ok else None
