"""Allocation search: grid candidates, cost prediction, Pareto fronts, and `tstitch-search` end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tstitch.errors import ConfigError
from tstitch.jobs import tracking
from tstitch.jobs.search import candidates, pareto, pick, predict
from tstitch.jobs.timing import Stats

EXE = str(Path(sys.executable).parent / "tstitch-search")


def test_candidates_cover_the_grid():
    three = candidates(3, 0.1)
    assert len(three) == 66 and all(abs(sum(a) - 1) < 1e-9 and min(a) >= 0 for a in three)
    assert len({tuple(a) for a in three}) == 66 and [0.0, 0.0, 1.0] in three and [0.4, 0.2, 0.4] in three
    assert candidates(2, 0.25) == [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]]
    with pytest.raises(ConfigError, match="grid that divides 1"):
        candidates(2, 0.3)


def test_predicted_cost_is_steps_times_cost_per_step():
    def costs(*values):
        return [Stats(v, v * 0.9, v * 1.1, 5) for v in values]

    assert predict(costs(1.0, 10.0), [0.4, 0.6], 10) == pytest.approx(4 * 1 + 6 * 10)
    assert predict(costs(1.0, 2.0, 4.0), [0.2, 0.3, 0.5], 10) == pytest.approx(2 + 6 + 20)


def test_pareto_keeps_what_nothing_beats():
    rows = [{"t": 1, "q": 9}, {"t": 2, "q": 5}, {"t": 3, "q": 6}, {"t": 4, "q": 1}, {"t": 2, "q": 7}]
    assert [(r["t"], r["q"]) for r in pareto(rows, "t", "q")] == [(1, 9), (2, 5), (4, 1)]
    assert [(r["t"], r["q"]) for r in pareto(rows, "t", "q", maximize=True)] == [(1, 9)]



def test_pick_is_the_cheapest_allocation_that_meets_the_target():
    from types import SimpleNamespace

    front = [{"fractions": [1.0, 0.0], "s_per_image": 1.0, "fd": 30.0, "acc": 0.5},
             {"fractions": [0.5, 0.5], "s_per_image": 2.0, "fd": 20.0, "acc": 0.7},
             {"fractions": [0.3, 0.7], "s_per_image": 3.0, "fd": 15.0, "acc": 0.8},
             {"fractions": [0.0, 1.0], "s_per_image": 4.0, "fd": 10.0, "acc": 0.9}]

    def best(target, objective="fd", maximize=False):
        row = pick(front, SimpleNamespace(target=target, objective=objective), maximize)
        return None if row is None else row["fractions"]

    assert best(25.0) == [0.5, 0.5] and best(15.0) == [0.3, 0.7] and best(100.0) == [1.0, 0.0]
    assert best(5.0) is None and best(None) is None
    assert best(0.75, "acc", maximize=True) == [0.3, 0.7] and best(0.95, "acc", maximize=True) is None

def run(tmp_path, *args, in_process=None):
    """A small `tstitch-search` into tmp_path: the installed command in a subprocess, or given the
    ``in_process`` fixture, its function in this process."""
    args = ["search.grid=0.5", "search.cost_samples=8", "search.num_samples=16", "search.confirm_samples=24",
            "solver.steps=4", "threads=1", "batch_size=16", "logger=none", f"hydra.run.dir={tmp_path}", *args]
    if in_process is not None:
        return in_process("tstitch-search", *args)
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def searched(tmp_path_factory, in_process_shared):
    """One search (a loose target, logger=wandb: the default) read by the tests below (the installed command runs in
    test_search_errors_are_one_line)."""
    tmp_path = tmp_path_factory.mktemp("search")
    r = run(tmp_path, "search.target=1000", "logger=wandb", in_process=in_process_shared)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp_path


def test_search_finds_and_confirms_a_front(searched):
    tmp_path = searched
    pool = [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert [p["fractions"] for p in pool] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert pool[0]["predicted_s_per_image"] > pool[1]["predicted_s_per_image"] > pool[2]["predicted_s_per_image"]
    front = [p["fractions"] for p in pool if p["front"]]
    confirmed = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(c["fractions"] for c in confirmed) == sorted(front) and all(c["fd"] > 0 for c in confirmed)
    assert [1.0, 0.0] in front  # the cheapest allocation is always on the front
    best = json.loads((tmp_path / "search.json").read_text())["best"]
    # a loose target: every confirmed allocation meets it, so the answer is the fastest one measured
    assert best is not None and (tmp_path / "frontier.png").exists()
    assert best["fractions"] == min(confirmed, key=lambda c: c["s_per_image"])["fractions"]


def test_search_goes_to_an_offline_wandb_run(searched):
    """logger=wandb (the default): the confirmed front as the run's results table, read back as results.jsonl's
    rows, with the frontier plot and the search's files."""
    tmp_path = searched
    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    rows, members = tracking.read_offline(wandb_run)
    confirmed = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert members == ["toy-dit-small", "toy-dit-large"]
    assert rows == [{k: v for k, v in c.items() if v is not None} for c in confirmed]
    assert list(wandb_run.glob("files/media/images/frontier_*.png"))


def test_search_errors_are_one_line(tmp_path, in_process):
    """The first through the installed command (exit code 2, one line), the second in-process."""
    r = run(tmp_path, "search.budget=0.0000001")
    assert r.returncode == 2 and "no allocation fits search.budget" in r.stderr.strip().splitlines()[-1]
    r = run(tmp_path / "b", "search.objective=fid", in_process=in_process)
    assert r.returncode == 2 and "search.objective='fid' is not a value of the metric" in r.stderr


class Stop(Exception):
    """Stands for a kill in the middle of a search."""


def test_interrupted_search_keeps_what_it_scored_and_resumes(tmp_path, in_process, monkeypatch):
    import tstitch.jobs.sweep

    real, sampled = tstitch.jobs.sweep.sweep, []

    def counting(cfg, allocations, num_samples, *args, on_row=None, stop_after=None, **kwargs):
        def row_done(row):
            on_row(row)
            sampled.append((num_samples, row["fractions"]))
            if stop_after is not None and len(sampled) == stop_after:
                raise Stop
        return real(cfg, allocations, num_samples, *args, on_row=row_done, **kwargs)

    grid = ["search.grid=0.25", "search.target=1000"]  # 2 costs, 5 candidates, then the front
    monkeypatch.setattr(tstitch.jobs.sweep, "sweep", lambda *a, **k: counting(*a, stop_after=4, **k))
    r = run(tmp_path, *grid, in_process=in_process)
    assert r.returncode == 1 and "Stop" in r.stderr  # stopped after the costs and two candidates
    lines = (tmp_path / "candidates.jsonl").read_text().splitlines()
    assert [json.loads(line)["fractions"] for line in lines] == [[0.0, 1.0], [0.25, 0.75]]
    assert not (tmp_path / "confirmed.jsonl").exists() and not (tmp_path / "results.jsonl").exists()
    with open(tmp_path / "candidates.jsonl", "a") as f:
        f.write('{"fractions": [0.5, 0.5], "fd": 1')  # a line cut short by the kill
    sampled.clear()
    monkeypatch.setattr(tstitch.jobs.sweep, "sweep", counting)
    r = run(tmp_path, *grid, in_process=in_process)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [f for n, f in sampled if n == 16] == [[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]]  # only what had no line
    assert not [f for n, f in sampled if n == 8]  # the costs were kept too
    pool = [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert [p["fractions"] for p in pool] == [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]]
    confirmed = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(c["fractions"] for c in confirmed) == sorted(p["fractions"] for p in pool if p["front"])
    assert sorted(f for n, f in sampled if n == 24) == sorted(c["fractions"] for c in confirmed)
    sampled.clear()
    r = run(tmp_path, *grid, "search.target=500", in_process=in_process)  # a finished search: nothing to sample
    assert r.returncode == 0 and sampled == [] and json.loads((tmp_path / "search.json").read_text())["costs"]
    r = run(tmp_path, *grid, "search.num_samples=17", in_process=in_process)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"tstitch-search: error: {tmp_path} holds a search with other settings (differs in: search.num_samples); "
        "resume with the same settings or choose a new hydra.run.dir=...")
