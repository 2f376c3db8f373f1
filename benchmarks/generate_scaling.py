"""Scaling of `tstitch-generate` over CPU processes (Lightning DDP, gloo) on the toy zoo.

Runs the same sample set (same seeds and settings) once per process count and round, in interleaved rounds
(``tstitch.jobs.timing.interleaved``: each round runs every process count, the order rotated from round to round), each
run in its own run directory; reads each run's manifest.json and prints one row per process count, each value the
median over the rounds with its p25-p75:

- images/s: sampling rate from the manifest (synchronised, warm-up excluded, all ranks together);
- efficiency: (images/s with n processes) / (n x images/s with the fewest processes), the median of the rounds'
  ratios (a round's runs see the machine at about the same time);
- predict s: the manifest's ``seconds`` (trainer.predict, including the DDP launch and warm-up);
- wall s and end-to-end images/s: num_samples / wall time of the whole command, start-up included, since
  Lightning's subprocess DDP launcher starts every rank as a new Python process; e2e efficiency is again the
  median of the rounds' ratios.

Every row names the CPU capability it ran on.

It also checks that every run's samples.npz is byte-identical to the first (image i depends only on seed i),
and exits 1 if not. Each process uses one torch thread (threads=1, OMP_NUM_THREADS=1). By default the quality
metric, W&B logger, speedup baseline and grid are switched off (where the config has them) so that only
generation is timed; pass Hydra overrides after the options to change any setting.

On a 2-core machine 2 processes cannot exceed 2x (efficiency 1.0), and any other load on the machine changes
the numbers from run to run: compare rows of one invocation, not across invocations.

    .venv/bin/python benchmarks/generate_scaling.py --num-samples 400 --batch-size 50 --steps 20 --devices 1 2 \
        --rounds 3
"""
import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from tstitch.jobs import timing
from tstitch.models import fast

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "tstitch-generate")


def timing_only():
    """Overrides that leave only generation to time, for the keys generate.yaml has."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "generate.yaml"))
    keys = [next(iter(d)) if isinstance(d, dict) else d for d in cfg.get("defaults", [])]
    groups = {k.split()[-1].lstrip("/").split("@")[0] for k in keys}  # "override /logger@x" -> "logger"
    out = [f"{g}=none" for g in ("logger", "metric") if g in groups]
    return out + [f"{k}=0" for k in ("baseline_batches", "grid_columns") if k in cfg]


def run(processes, run_dir, args):
    cmd = [EXE, f"num_samples={args.num_samples}", f"batch_size={args.batch_size}", f"solver.steps={args.steps}",
           "threads=1", f"trainer.devices={processes}", f"trainer.strategy={'ddp' if processes > 1 else 'auto'}",
           *timing_only(), *args.overrides, f"hydra.run.dir={run_dir}"]
    log = run_dir.with_suffix(".log")
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}\nfailed (exit {r.returncode}):\n{log.read_text()[-3000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if manifest["world_size"] != processes or manifest["generated"] != args.num_samples:
        sys.exit(f"{run_dir}: expected a fresh run on {processes} processes, manifest says world_size "
                 f"{manifest['world_size']}, generated {manifest['generated']}")
    return {"ips": manifest["images_per_second"], "predict": manifest["seconds"], "samples": run_dir / "samples.npz"}


def same_samples(a, b):
    if filecmp.cmp(a, b, shallow=False):
        return True
    with np.load(a) as x, np.load(b) as y:  # to say which array differs
        print(f"  {b} differs from {a}: arr_0 equal {np.array_equal(x['arr_0'], y['arr_0'])}, "
              f"arr_1 equal {np.array_equal(x['arr_1'], y['arr_1'])}")
    return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=50, help="per process")
    p.add_argument("--steps", type=int, default=20, help="solver steps")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2],
                   help="process counts (the first round's order; later rounds rotate it)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds: each runs every process count once")
    p.add_argument("--keep", action="store_true", help="keep the run directories (printed at the end)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. stitch.fractions=[0.5,0.5]")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.devices) or min(args.num_samples, args.batch_size, args.steps, args.rounds) < 1:
        p.error("--devices, --num-samples, --batch-size, --steps and --rounds must be positive")
    if len(set(args.devices)) != len(args.devices):
        p.error("--devices: give each process count once")

    base = Path(tempfile.mkdtemp(prefix="tstitch-scaling-"))
    try:
        runs = {n: {} for n in args.devices}  # per process count, the manifest summary of each round

        def one(n, r):
            runs[n][r] = run(n, base / f"p{n}-r{r}", args)
            return args.num_samples

        rounds = timing.interleaved({n: (lambda r, n=n: one(n, r)) for n in args.devices}, args.rounds,
                                    on_call=lambda n, r: print(f"round {r + 1}: {n} process(es)...", flush=True))
        # the runs are child processes, which the rounds' load reading counts as other work: every round counts
        rounds = timing.Rounds(rounds.seconds)
        ref = min(args.devices)  # efficiency relative to the fewest processes
        used = range(args.rounds)
        tag = fast.machine(short=True)
        print(f"\n{fast.machine()}: {args.num_samples} samples, batch {args.batch_size}/process, {args.steps} steps, "
              f"{os.cpu_count()} CPUs, 1 torch thread/process, {args.rounds} interleaved rounds; medians (p25-p75)")
        print(f"{'processes':>9} {'images/s':>20} {'efficiency':>18} {'predict s':>9} {'wall s':>20} "
              f"{'e2e images/s':>20} {'e2e efficiency':>18}  on")

        def cell(s, digits=1):
            return f"{s.median:.{digits}f} ({s.p25:.{digits}f}-{s.p75:.{digits}f})"

        for n in args.devices:
            scale = n / ref
            ips = timing.stats([runs[n][r]["ips"] for r in used])
            eff = timing.stats([runs[n][r]["ips"] / (scale * runs[ref][r]["ips"]) for r in used])
            predict = timing.stats([runs[n][r]["predict"] for r in used])
            wall = timing.stats([args.num_samples * rounds.seconds[n][r] for r in used])
            e2e = timing.stats([1 / rounds.seconds[n][r] for r in used])
            speedup = rounds.ratio(ref, n)  # the fewest processes' wall time / n's, per round
            e2e_eff = timing.Stats(speedup.median / scale, speedup.p25 / scale, speedup.p75 / scale, speedup.n)
            print(f"{n:>9} {cell(ips):>20} {cell(eff, 2):>18} {predict.median:>9.2f} {cell(wall, 2):>20} "
                  f"{cell(e2e):>20} {cell(e2e_eff, 2):>18}  {tag}")
        samples = [x["samples"] for n in args.devices for x in runs[n].values()]
        identical = all([same_samples(samples[0], s) for s in samples[1:]])
        print(f"samples.npz byte-identical across runs: {'yes' if identical else 'NO'}")
        if (line := timing.drift(rounds)) is not None:  # the spread only (no load readings, see above)
            print(f"note: {line.replace('timing.rounds=...', '--rounds N')}")
    finally:
        if args.keep:
            print(f"run directories kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
