"""The main job's wall time by stage, with its spread: each variant is the whole `tstitch` command in a fresh process
(start-up included), timed in interleaved rounds (``tstitch.jobs.timing``), and each stage read from the run's
``stages.json``: start-up (interpreter, imports, Hydra, model loading: the process's wall time less the rest),
warm-up, sampling (the timed rounds), scoring (decoding and the metric), outputs (table, grid, plot, W&B).

The variants compare how the two cores are used: ``workers`` (default: 2 batches side by side, one torch thread
each) against ``threads`` (one batch on 2 torch threads); ``--busy`` runs one more CPU-bound process beside every
run (the case where 2-thread torch was seen 10x slower). Every line names the CPU capability it ran on.

    .venv/bin/python benchmarks/main_job.py                      # 3 rounds of the default main job, both variants
    .venv/bin/python benchmarks/main_job.py --rounds 1 --variants workers -- sweep.first=[0.0,0.4,1.0]
    .venv/bin/python benchmarks/main_job.py --busy                # beside another busy process
"""
import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tstitch.jobs import timing

VARIANTS = {"workers": ["workers=2", "threads=2"], "threads": ["workers=1", "threads=2"]}
STAGES = ("start-up", "warm-up", "sampling", "scoring", "outputs")


def spin(stop):
    """A CPU-bound neighbour."""
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1000003


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--busy", action="store_true", help="one CPU-bound process beside every run")
    parser.add_argument("overrides", nargs="*", help="more tstitch overrides, after --")
    args = parser.parse_args()
    exe = Path(sys.executable).parent / "tstitch"
    root = Path(tempfile.mkdtemp(prefix="main_job_"))
    stages = {v: [] for v in args.variants}

    def run(variant):
        def call(r):
            out = root / f"{variant}-{r}"
            start = time.perf_counter()
            subprocess.run([str(exe), *VARIANTS[variant], "logger=none", f"hydra.run.dir={out}", *args.overrides],
                           check=True, capture_output=True)
            wall = time.perf_counter() - start
            inside = json.loads((out / "stages.json").read_text())
            stages[variant].append({"start-up": wall - sum(inside.values()), **inside, "total": wall})
            return 1
        return call

    stop = multiprocessing.Event()
    neighbour = multiprocessing.Process(target=spin, args=(stop,), daemon=True) if args.busy else None
    if neighbour:
        neighbour.start()
    try:
        rounds = timing.interleaved({v: run(v) for v in args.variants}, args.rounds, time.perf_counter)
    finally:
        if neighbour:
            stop.set()
            neighbour.join()
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"main job (tstitch {' '.join(args.overrides)}), {args.rounds} interleaved rounds, CPU capability "
          f"{capability}{', beside one busy process' if args.busy else ''}: seconds, median (min-max)")
    for v in args.variants:
        cells = []
        for stage in (*STAGES, "total"):
            values = [s[stage] for s in stages[v]]
            cells.append(f"{stage} {timing.stats(values).median:.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"  {v:8s} ({' '.join(VARIANTS[v])}): " + ", ".join(cells))
    if len(args.variants) == 2:
        a, b = args.variants
        ratio = rounds.ratio(b, a)
        print(f"  {b} / {a} whole-process time: {ratio.median:.2f}x (p25-p75 {ratio.p25:.2f}-{ratio.p75:.2f}), "
              f"CPU capability {capability}")


if __name__ == "__main__":
    main()
