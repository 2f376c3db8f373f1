"""What the no-silent-wrong-result checks cost per batch on the toy zoo, against the batch's sampling time.

Per batch a run checks its inputs (``tstitch.models.checks.inputs``: dtypes, labels, one finite reduction over the
noise) and its samples (``tstitch.models.checks.bad_rows``: one finite reduction); nothing runs per step. Two
measurements, side by side in one process, after a warm-up batch:

* the checks alone, timed over many repeats (median, p25-p75), against the median time of one stitched batch;
* a whole batch with the checks and with them replaced by no-ops, in interleaved rounds
  (``tstitch.jobs.timing.interleaved``: the order alternates), whose median per-round ratio is the end-to-end overhead
  (noisier: the difference is far below the rounds' spread).

Every result line names the CPU capability it ran on.

    .venv/bin/python benchmarks/checks_overhead.py [--batch 100] [--steps 20] [--rounds 15] [--threads 1]
"""
import argparse

import torch

import tstitch
from tstitch.jobs import timing
from tstitch.models import checks, fast


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.4)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    members = [tstitch.load("toy/small"), tstitch.load("toy/large")]
    x, y, rng = tstitch.data.seeds.draw(range(args.batch), members[0].space.shape, num_classes=10)
    options = dict(fractions=[args.fraction, 1 - args.fraction], solver="ddim", steps=args.steps, guidance=3.0)
    clock = timing.clock_for("cpu")

    def batch(on):
        real = checks.inputs, checks.bad_rows
        if not on:  # the checks replaced by no-ops
            checks.inputs = lambda members, noise, labels, guidance: (noise, labels)
            checks.bad_rows = lambda x: []
        try:
            checks.bad_rows(tstitch.sample(members, x, y, **options).x)
        finally:
            checks.inputs, checks.bad_rows = real
        return args.batch

    out = tstitch.sample(members, x, y, **options).x  # warm-up
    alone = []
    for _ in range(200):
        start = clock()
        checks.inputs(members, x, y, 3.0), checks.bad_rows(out)
        alone.append(clock() - start)
    alone = timing.stats(alone, "checks")
    rounds = timing.interleaved({"with checks": lambda r: batch(True), "without": lambda r: batch(False)},
                                args.rounds, clock)
    one = rounds.stats("with checks")
    ratio = rounds.ratio("with checks", "without")
    ms = [args.batch * 1000 * v for v in (one.median, one.p25, one.p75)]
    tag = fast.machine(short=True)
    print(f"{fast.machine()}: toy zoo, batch {args.batch}, DDIM {args.steps} steps, fractions {options['fractions']}, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds")
    print(f"one batch: median {ms[0]:.1f} ms (p25-p75 {ms[1]:.1f} ... {ms[2]:.1f} ms)  {tag}")
    print(f"the checks alone: median {alone.median * 1e6:.0f} us per batch (p25-p75 {alone.p25 * 1e6:.0f} ... "
          f"{alone.p75 * 1e6:.0f} us) = {100 * alone.median / (one.median * args.batch):.3f}% of the batch  {tag}")
    print(f"interleaved rounds, with / without checks: median {ratio.median:.4f} (p25-p75 {ratio.p25:.4f} ... "
          f"{ratio.p75:.4f})  {tag}")
    if (line := timing.drift(rounds)) is not None:
        print(f"note: {line.replace('timing.rounds=...', '--rounds N')}")


if __name__ == "__main__":
    main()
