"""What the no-silent-wrong-result checks cost per batch on the toy zoo, against the batch's sampling time.

Per batch a run checks its inputs (``tstitch.checks.inputs``: dtypes, labels, one finite reduction over the
noise) and its samples (``tstitch.checks.bad_rows``: one finite reduction); nothing runs per step. Two
measurements, side by side in one process:

* the checks alone, timed over many repeats, against the median time of one stitched batch;
* paired rounds of a whole batch with the checks and with them replaced by no-ops (alternating order), whose
  median ratio is the end-to-end overhead (noisier: the difference is far below the rounds' spread).

    .venv/bin/python benchmarks/checks_overhead.py [--batch 100] [--steps 20] [--rounds 15] [--threads 1]
"""
import argparse
import statistics
import time

import torch

import tstitch
from tstitch import checks


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


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
    x, y, rng = tstitch.seeds.draw(range(args.batch), members[0].space.shape, num_classes=10)
    options = dict(fractions=[args.fraction, 1 - args.fraction], solver="ddim", steps=args.steps, guidance=3.0)

    def batch():
        return checks.bad_rows(tstitch.sample(members, x, y, **options).x)

    out = tstitch.sample(members, x, y, **options).x  # warm-up
    alone = timed(lambda: (checks.inputs(members, x, y, 3.0), checks.bad_rows(out)), 200)
    real_inputs, real_rows = checks.inputs, checks.bad_rows
    with_checks, without = [], []
    for k in range(args.rounds):
        order = (True, False) if k % 2 == 0 else (False, True)
        for on in order:
            if not on:  # the checks replaced by no-ops
                checks.inputs = lambda members, noise, labels, guidance: (noise, labels)
                checks.bad_rows = lambda x: []
            (with_checks if on else without).extend(timed(batch, 1))
            checks.inputs, checks.bad_rows = real_inputs, real_rows
    per_batch = statistics.median(with_checks)
    pairs = [a / b for a, b in zip(with_checks, without)]
    print(f"toy zoo, batch {args.batch}, DDIM {args.steps} steps, fractions {options['fractions']}, "
          f"{args.threads} thread(s), {args.rounds} rounds")
    print(f"one batch: median {per_batch * 1000:.1f} ms (rounds {min(with_checks) * 1000:.1f} ... "
          f"{max(with_checks) * 1000:.1f} ms)")
    print(f"the checks alone: median {statistics.median(alone) * 1e6:.0f} us per batch = "
          f"{100 * statistics.median(alone) / per_batch:.3f}% of the batch")
    print(f"paired rounds, with / without checks: median {statistics.median(pairs):.4f} "
          f"(rounds {min(pairs):.3f} ... {max(pairs):.3f})")


if __name__ == "__main__":
    main()
