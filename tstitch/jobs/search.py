"""Allocation search: which fractions of the steps to give each member, for the best quality at each cost.

The paper's "about 40% to the small model" is a hypothesis to test, not a constant. ``search`` (1) measures each
member's cost per step, (2) predicts the time of every allocation on a grid from those costs (the plan's step
counts times the cost per step), (3) drops allocations over a time budget, (4) scores every remaining one on a
small seed set, (5) keeps the Pareto front of (predicted time, quality) and (6) samples the front again on a
larger seed set with measured time, whose Pareto front is the answer.

Given a run directory, every sampled allocation is kept there as soon as it is scored (``costs.jsonl``,
``candidates.jsonl``, ``confirmed.jsonl``: one JSON line each), so that a search that was stopped resumes where it
was: run again with the same directory and settings, only the allocations without a line are sampled.
``search.json`` holds the settings the lines were made with; other settings are refused, except the budget, the
target and the objective, which only choose among scored allocations.
"""
import itertools
import json
from pathlib import Path

from omegaconf import OmegaConf

from tstitch.errors import ConfigError
from tstitch.files import dumps, write_json
from tstitch.jobs import timing
from tstitch.jobs.report import add_speedups
from tstitch.sampling.stitch import allocate, alone


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
    """The cost model's seconds per image of an allocation (``tstitch.jobs.timing.predict``) from the members' costs
    per step (``tstitch.jobs.timing.Stats``) and the steps the plan gives each member."""
    return timing.predict(costs, allocate(fractions, steps)).median


def pareto(rows, time_key, quality, maximize=False):
    """The rows no other row beats on both time (lower) and quality, in order of time."""
    sign = -1 if maximize else 1
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r[time_key], sign * r[quality])):
        if sign * r[quality] < best:
            front.append(r)
            best = sign * r[quality]
    return front


SETTINGS = ("stitch", "solver", "guidance", "metric", "prompts", "seed", "labels", "fast", "batch_size", "device",
            "search.grid", "search.cost_samples", "search.num_samples",
            "search.confirm_samples")  # what a scored line depends on


def settings(cfg):
    from tstitch.models.accelerators import recorded

    out = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
           for k in SETTINGS for v in [OmegaConf.select(cfg, k)]}
    return {**out, "fast": recorded(out["fast"])}  # an accelerator that is off is left out (as tstitch-generate)


def check_settings(out, current):
    """Lines in ``out`` were scored with one configuration: resume only with the same one."""
    path = Path(out) / "search.json"
    stored = json.loads(path.read_text()).get("settings") if path.exists() else None
    plain = json.loads(dumps(current))  # as it reads back from the file
    if stored is None:
        write_json(path, {"settings": current})
    elif stored != plain:
        diff = [k for k in SETTINGS if stored.get(k) != plain.get(k)]
        raise ConfigError(f"{out} holds a search with other settings (differs in: {', '.join(diff)}); resume with "
                          "the same settings or choose a new hydra.run.dir=...")


def scored(path):
    """The rows of a JSON-lines record by allocation; a line cut short by a kill is skipped."""
    rows = {}
    if path is not None and path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            row.pop("front", None)
            rows[tuple(row["fractions"])] = row
    return rows


def search(cfg, sweep, out=None):
    """Rows of every candidate (predicted s/image, small-set quality, on the front or not) and of the confirmed
    front (measured s/image, large-set quality); ``sweep`` is ``jobs.sweep.sweep``. With ``out`` (the run directory)
    each scored allocation is recorded there at once, and allocations recorded by an earlier search with the same
    settings are not sampled again."""
    from tstitch.jobs import build, timing

    s = cfg.search
    k, steps = len(cfg.stitch.members), int(cfg.solver.steps)
    if out is not None:
        check_settings(out, settings(cfg))
    loaded = {"stitch": build.stitch(cfg, cfg.device), "metric": build.metric(cfg)}  # once, not per sweep
    members = [m.name for m in loaded["stitch"][0]]

    def scored_rows(allocations, num_samples, record, phase, timed, extra=dict):
        """Rows of ``allocations`` at ``num_samples`` seeds: those in the record file, the others sampled (each
        with ``extra(row)`` added, then appended to the record); ``timed``: in interleaved rounds."""
        path = Path(out) / record if out is not None else None
        rows = scored(path)

        def keep(row):
            row = {**row, **extra(row)}  # a copy: sweep() adds speedups to its own rows later
            rows[tuple(row["fractions"])] = row
            if path is not None:
                with open(path, "a") as f:
                    f.write(dumps(row) + "\n")

        todo = [a for a in allocations if tuple(a) not in rows]
        if todo:
            sweep(cfg, todo, num_samples, **loaded, on_row=keep, timed=timed, phase=phase)
        return [rows[tuple(a)] for a in allocations]

    alone_rows = scored_rows([alone(i, k) for i in range(k)], s.cost_samples, "costs.jsonl", "costs", True)
    costs = timing.costs([timing.Stats(r["s_per_image"], r.get("s_per_image_p25", r["s_per_image"]),
                                       r.get("s_per_image_p75", r["s_per_image"]), 1) for r in alone_rows],
                         [steps] * k)  # seconds per step per image, per member, timed in the same rounds
    pool = [{"fractions": a, "predicted_s_per_image": predict(costs, a, steps)} for a in candidates(k, s.grid)]
    if s.budget is not None:
        pool = [r for r in pool if r["predicted_s_per_image"] <= s.budget]
        if not pool:
            raise ConfigError(f"no allocation fits search.budget={s.budget} s/image (the cheapest member alone "
                              f"takes {min(c.median for c in costs) * steps:.4g}); raise the budget")
    predicted = {tuple(r["fractions"]): r["predicted_s_per_image"] for r in pool}
    rows = scored_rows([r["fractions"] for r in pool], s.num_samples, "candidates.jsonl", "candidates", False,
                       lambda row: {"predicted_s_per_image": predicted[tuple(row["fractions"])]})
    maximize = direction(s)
    if s.objective not in rows[0]:
        given = sorted(set(rows[0]) - {"fractions", "nfe", "s_per_image", "predicted_s_per_image"})
        raise ConfigError(f"search.objective={s.objective!r} is not a value of the metric (it gives {given}); "
                          "set metric and objective")
    pool = [{**r, "predicted_s_per_image": predicted[tuple(r["fractions"])]} for r in rows]
    front = pareto(pool, "predicted_s_per_image", s.objective, maximize)
    for r in pool:
        r["front"] = r in front
    # timed in interleaved rounds, each with the cost model of the members timed alone in those same rounds
    confirmed = scored_rows([r["fractions"] for r in front], s.confirm_samples, "confirmed.jsonl", "confirm", True)
    final = pareto(confirmed, "s_per_image", s.objective, maximize)
    for r in confirmed:
        r["front"] = r in final
    add_speedups(confirmed)  # against the last member alone, if it is on the front
    metric = loaded["metric"].describe() if loaded["metric"] is not None else None
    return {"costs": {m: c.median for m, c in zip(members, costs)}, "members": members, "candidates": pool,
            "confirmed": confirmed, "metric": metric, "best": pick(final, s, maximize), "settings": settings(cfg)}


def direction(s):
    """Whether the objective is maximized: ``search.maximize`` when given, else the metric value's own direction
    (``tstitch.metrics.values``: FD and FID lower, accuracy, IS and CLIP score higher)."""
    from tstitch import metrics

    if s.maximize is not None:
        return bool(s.maximize)
    value = metrics.values().get(s.objective)
    return value.maximize if value is not None else False


def pick(front, s, maximize):
    """The cheapest confirmed allocation that meets ``search.target`` (None without a target or when none does)."""
    if s.target is None:
        return None
    ok = [r for r in front if (r[s.objective] >= s.target if maximize else r[s.objective] <= s.target)]
    return min(ok, key=lambda r: r["s_per_image"]) if ok else None
