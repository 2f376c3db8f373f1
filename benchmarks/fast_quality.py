"""Quality of each fast path on the toy zoo: FD (toy feature net, against the Fashion-MNIST test set) and class
accuracy of the same stitched sample set under each precision, beside plain float32, with the relative L2
distance of the final samples. It does not time anything: each path runs as named (forced, even where a run on this
machine would fall back to fp32 for speed), and the header names the CPU capability it ran on.

    .venv/bin/python benchmarks/fast_quality.py [--num-samples 1000] [--paths fp32 bf16 fp16] [--fraction 0.4]
"""
import argparse

import torch
from sampler_speed import PATHS  # the named fast paths, one table for both benchmarks (this script's folder)

from tstitch.data import seeds
from tstitch.metrics import FashionMetric
from tstitch.models import fast, zoo
from tstitch.models.codecs import to_uint8
from tstitch.sampling.sample import sample


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.4)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--paths", nargs="+", default=["fp32", "bf16", "fp16"], choices=list(PATHS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    metric = FashionMetric()
    x, y, rng = seeds.draw(range(args.num_samples), (1, 28, 28), 10, "balanced")
    rows, ref = [], None
    for path in args.paths:
        members = fast.speed_up([zoo.load("toy/small"), zoo.load("toy/large")], "cpu", force=True, **PATHS[path])
        out = torch.cat([sample(members, x[i:i + args.batch], y[i:i + args.batch],
                                fractions=[args.fraction, 1 - args.fraction], solver="ddim", steps=args.steps,
                                guidance=args.guidance).x for i in range(0, len(x), args.batch)])
        ref = out if ref is None else ref
        rows.append({"path": path, **metric(to_uint8(out), y), "rel_err": ((out - ref).norm() / ref.norm()).item()})
    print(f"\n{fast.machine()}: toy zoo, {args.num_samples} samples, {args.fraction} : {1 - args.fraction}, "
          f"DDIM {args.steps}, guidance {args.guidance}")
    print(f"{'path':8} {'FD':>8} {'accuracy':>9} {'rel err':>9}")
    for r in rows:
        print(f"{r['path']:8} {r['fd']:8.2f} {100 * r['accuracy']:8.1f}% {r['rel_err']:9.2e}")


if __name__ == "__main__":
    main()
