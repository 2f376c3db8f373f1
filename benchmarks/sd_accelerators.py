"""ToMe for SD and DeepCache on top of T-Stitch (the shape of the paper's Figs. 21 and 22): the large member alone,
stitched at the first fraction (``--fraction``, small member first), and each with ToMe (``--tome-ratio``) or
DeepCache (``--deepcache-interval``, ``--deepcache-branch``) on the members named by ``--on`` (default: the large one,
-1), side by side in one process: six variants on the same weights, prompts and noise, timed in interleaved rounds
(``tstitch.jobs.timing.interleaved``). Rows: seconds per image (median of the rounds, p25-p75), the speedup over the
large member alone (median of the per-round ratios, p25-p75) and the relative L2 distance of the final latents from
the same variant without the accelerator (what the approximation changes).

Models (``--pair``): ``small``, a random BK-SDM-Tiny -> SD v1.x pair at reduced width (channels 64/128/256/256,
what a CPU runs in minutes); ``sd1``, the same at SD v1.4's width (``benchmarks/sampler_speed.py``'s random pair);
or two zoo entries, ``--models sd/bk_sdm_tiny sd/v1_4`` (real weights, on a GPU). The random pairs share a random
768-wide CLIP text encoder and run the scheduler SD v1.4 ships (PNDM; N steps are N + 1 model calls).

    .venv/bin/python benchmarks/sd_accelerators.py [--pair small] [--latent 32] [--steps 8] [--repeats 4]
    .venv/bin/python benchmarks/sd_accelerators.py --models sd/bk_sdm_tiny sd/v1_4 --device cuda --latent 64 \\
        --steps 50 --batch 1 --repeats 10
"""
import argparse
import copy
from functools import partial

import torch
from sampler_speed import SD_SCHEDULER, UNETS, latents, random_text, random_unet  # this script's folder

from tstitch.data import seeds
from tstitch.jobs import timing
from tstitch.models import fast, zoo
from tstitch.models.adapters.sd import SDMember
from tstitch.models.schedules import Schedule
from tstitch.sampling.sample import sample

PROMPTS = ["a photo of a cat", "a red bicycle against a wall", "two boats on a lake at dawn", "a bowl of fruit"]
NARROW = dict(block_out_channels=(64, 128, 256, 256))  # SD v1.x's layout at a fifth of its width
PAIRS = {"small": [dict(UNETS["bk-sdm-tiny"], block_out_channels=(64, 128, 256)), dict(UNETS["sd1"], **NARROW)],
         "sd1": [UNETS["bk-sdm-tiny"], UNETS["sd1"]]}


def pair(args):
    """The two members (small first): random UNets of ``args.pair``, or the zoo entries ``args.models``."""
    if args.models:
        return [zoo.load(name, device=args.device) for name in args.models]
    text = random_text(args.device)
    return [SDMember(random_unet(k, args.device, args.latent, **config), text, f"{args.pair}-random-{k}",
                     Schedule("scaled_linear"), latents(args.latent), scheduler_config=SD_SCHEDULER)
            for k, config in enumerate(PAIRS[args.pair], 1)]


def sharing(member):
    """Another member object whose UNet is a copy sharing the weights (an accelerator patches its own copy)."""
    net = member.net
    memo = {id(t): t for t in [*net.parameters(), *net.buffers()]}
    other = copy.copy(member)
    other.net = copy.deepcopy(net, memo)
    return other


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="small", choices=list(PAIRS))
    p.add_argument("--models", nargs=2, metavar=("SMALL", "LARGE"), help="two zoo entries instead of a random pair")
    p.add_argument("--device", default="cpu")
    p.add_argument("--latent", type=int, default=32, help="latent side of the random pairs (64: 512x512 images)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--fraction", type=float, default=0.4, help="the small member's share of the steps, stitched")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--tome-ratio", type=float, default=0.5)
    p.add_argument("--deepcache-interval", type=int, default=3)
    p.add_argument("--deepcache-branch", type=int, default=0)
    p.add_argument("--on", nargs="+", type=int, default=[-1], help="member positions the accelerators act on")
    p.add_argument("--repeats", type=int, default=4, help="interleaved rounds (after a warm-up run)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    plain = pair(args)
    sets = {"": plain,
            " + ToMe": fast.speed_up([sharing(m) for m in plain], args.device,
                                     tome={"ratio": args.tome_ratio, "members": args.on}),
            " + DeepCache": fast.speed_up([sharing(m) for m in plain], args.device,
                                          deepcache={"interval": args.deepcache_interval,
                                                     "branch": args.deepcache_branch, "members": args.on})}
    first = plain[0]
    x, y, _ = seeds.draw(range(args.batch), first.space.shape, None, "random", args.device, prompts=PROMPTS)
    options = dict(solver="scheduler", steps=args.steps, guidance=args.guidance)
    fractions = {"large alone": [0.0, 1.0], f"stitched {args.fraction:g}": [args.fraction, 1 - args.fraction]}
    variants = {f"{k}{acc}": partial(lambda ms, f: sample(ms, x, y, fractions=f, **options), ms, f)
                for acc, ms in sets.items() for k, f in fractions.items()}
    out = {k: fn() for k, fn in variants.items()}  # warm-up; the final latents and model calls
    r = timing.interleaved({k: partial(lambda fn, i: (fn(), args.batch)[1], fn) for k, fn in variants.items()},
                           args.repeats, timing.clock_for(args.device))
    params = [sum(t.numel() for t in m.net.parameters()) / 1e6 for m in plain]
    where = fast.machine(args.device)
    calls = out[f"stitched {args.fraction:g}"].nfe
    print(f"\n{where}: {args.device}, {' -> '.join(m.name for m in plain)} ({params[0]:.0f}M -> {params[1]:.0f}M "
          f"UNet parameters), latents 4x{args.latent}x{args.latent}, batch {args.batch}, {args.steps} steps of the "
          f"shipped scheduler (stitched: {calls} model calls), guidance {args.guidance}, ToMe ratio {args.tome_ratio}"
          f", DeepCache interval {args.deepcache_interval} branch {args.deepcache_branch}, on members {args.on}, "
          f"{args.threads} thread(s), {args.repeats} interleaved rounds")
    print(f"{'variant':28} {'s/image (p25-p75)':24} {'speedup vs large (p25-p75)':28} {'rel. change':>11}")
    base = "large alone"
    for k in variants:
        t, ratio = r.stats(k), r.ratio(base, k)
        plain_k = k.split(" + ")[0]
        change = (out[k].x - out[plain_k].x).norm() / out[plain_k].x.norm()
        print(f"{k:28} {t.median:7.3f} {f'({t.p25:.3f}-{t.p75:.3f})':<16} {ratio.median:6.2f}x "
              f"{f'({ratio.p25:.2f}-{ratio.p75:.2f})':<20} {change:11.2e}")
    line = timing.drift(r)
    if line:
        print(f"note: {line.replace('timing.rounds=...', '--repeats N')}")


if __name__ == "__main__":
    main()
