"""Our sampler against a plain reference loop that does what the official T-Stitch code does, side by side in
one process on the same weights and seeds, plus the stitching overhead and each fast path's numerical agreement.

DiT (``reference_ddim``) follows DiT's ``sample.py`` + ``GaussianDiffusion.ddim_sample_loop`` and T-Stitch's
``TStitch``: float32 (TF32 on GPUs, as DiT's ``sample.py`` sets it), the batch doubled for guidance before the solver
(the solver works on both halves), ``forward_with_cfg`` (3 guided channels), timm's ``Attention`` as the current timm
runs it by default, fused (``scaled_dot_product_attention``: what the official code gets today), the learned-range
variance and x0 computed every step through ADM's coefficient tables, and a host sync per model call
(``t[0].item()`` picks the member). An extra row, "reference loop, unfused attention", runs the same loop with
``fused_attn = False``, as the timm of 2023 did when the official code was written; the ratios are against the fused
reference.

Stable Diffusion (``reference_sd``) follows T-Stitch's ``TStitchSD.__call__`` (a StableDiffusionPipeline holding
two UNets): float32 (torch's default TF32 flags, which diffusers keeps: convolutions only), prompt embeddings once
per batch (the empty prompt's for the unconditional half), the latents doubled every step, the scheduler SD v1.4
ships (``PNDMScheduler``: PLMS, "leading" spacing, ``steps_offset`` 1; N steps are N + 1 model calls), the small UNet
at loop index i iff (i + 1) / len(timesteps) <= r. Ours is ``solver="scheduler"`` (the members carry that shipped
config) with ``rule="official"``: the same grid and plan.

Ours is ``tstitch.sample`` with the configured fast path (forced: a path this device runs slower than fp32 is
timed as named, with a note saying that a run would fall back to fp32). Models, two members each (small first):
    toy: the toy zoo's small and large (shipped weights, 1x28x28);
    dit-s2, dit-b2, dit-xl2: two random DiTs of that size (4x32x32 latents, 256 tokens);
    sd1: a random BK-SDM-Tiny UNet, then a random SD v1.4/1.5 UNet (the paper's SD pair);
    bk-sdm-tiny: two random BK-SDM-Tiny UNets.
The SD members share one random 768-wide CLIP text encoder (2 layers, characters as tokens, 77 of them), as
BK-SDM-Tiny shares SD v1.4's; their latents are 4 x ``--latent`` x ``--latent`` (64: 512x512 images).

Timing (``tstitch.jobs.timing.interleaved``): every variant of a model (the reference loop, the unfused reference, ours
with each path, and for the stitching overhead the two members alone with the first path) runs once as a warm-up
(compilation lands there; its samples give "rel err"), then once per round, the order rotated each round. Rows:
images/s (median of the rounds, p25-p75), the ratio to the reference loop (median of the per-round ratios, p25-p75:
a round's runs share the machine's speed of the moment) and the relative L2 error of the final samples against the
reference. Stitching overhead: per round, the stitched time against r T_small + (1 - r) T_large from the members
alone; the median and quartiles of the rounds. Every line names the CPU capability (and the GPU) it ran on.
``--repeats`` is the rounds of the rows, ``--overhead-repeats`` those that also run the members alone (0: none).

    .venv/bin/python benchmarks/sampler_speed.py [--device cuda] [--models sd1] [--latent 64] [--batch 8]
        [--steps 10] [--out FILE]
"""
import argparse
import json
from dataclasses import asdict
from functools import partial

import torch

from tstitch.data import seeds
from tstitch.jobs import timing
from tstitch.models import fast
from tstitch.models.adapters._text import TextEncoders
from tstitch.models.adapters.dit import DiTMember
from tstitch.models.adapters.sd import SDMember
from tstitch.models.nets.dit import DiT
from tstitch.models.protocols import Space
from tstitch.models.schedules import Schedule, space_timesteps
from tstitch.sampling.guidance import guided
from tstitch.sampling.sample import sample
from tstitch.sampling.stitch import allocate


@torch.no_grad()
def reference_ddim(nets, noise, labels, fractions, steps, scale, null_class, channels=3, clip=False):
    """The official loop (see the module docstring). ``nets``: DiT networks, first runs first (two members);
    ``channels``: the guided channels (the official 3 of DiT's 4 latent channels; all of a 1-channel toy);
    ``clip``: clip x0 to [-1, 1] (ADM's clip_denoised, for pixel-space models)."""
    schedule = Schedule("linear")
    kept = space_timesteps(1000, steps)
    ac = torch.tensor(schedule.alphas_cumprod[kept], dtype=torch.float64)  # respaced process, as respace.py
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    recip, recipm1 = torch.sqrt(1 / ac), torch.sqrt(1 / ac - 1)

    def extract(a, t, shape):  # ADM's _extract_into_tensor
        return a.to(noise.device)[t].float().view(-1, *([1] * (len(shape) - 1)))

    def forward_with_cfg(net, x, t, y):
        half = x[: len(x) // 2]
        out = net(torch.cat([half, half]), t, y)
        eps, rest = out[:, :channels], out[:, channels:]
        cond, uncond = eps.chunk(2)
        half_eps = uncond + scale * (cond - uncond)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    x = torch.cat([noise, noise])
    y = torch.cat([labels, torch.full_like(labels, null_class)])
    for i in reversed(range(len(kept))):
        t = torch.tensor([i] * x.shape[0], device=x.device)
        original = torch.tensor(kept, device=x.device)[t]  # _WrappedModel's map_tensor
        net = nets[0] if original[0].item() / 1000 >= 1 - fractions[0] else nets[1]  # TStitch: a host sync
        out = forward_with_cfg(net, x, original, y)
        eps, v = out.chunk(2, dim=1)
        frac = (v + 1) / 2  # learned range: computed every step as p_mean_variance does, unused by DDIM
        _ = frac * extract(torch.log(betas), t, x.shape) + (1 - frac) * extract(post_log_var, t, x.shape)
        x0 = extract(recip, t, x.shape) * x - extract(recipm1, t, x.shape) * eps
        x0 = x0.clamp(-1, 1) if clip else x0
        eps = (extract(recip, t, x.shape) * x - x0) / extract(recipm1, t, x.shape)
        x = x0 * extract(ac_prev, t, x.shape).sqrt() + (1 - extract(ac_prev, t, x.shape)).sqrt() * eps
    return x[: len(noise)]


@torch.no_grad()
def reference_sd(unets, text, noise, prompts, ratio, steps, scale):
    """The official SD loop (see the module docstring). ``unets``: small, large; ``text``: their ``TextEncoders``;
    ``ratio``: TStitchSD's ``unet_s_ratio``."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler.from_config(SD_SCHEDULER)
    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    prompt_embeds = torch.cat([text([""] * len(prompts), noise.device)[0], text(prompts, noise.device)[0]])
    latents = noise * scheduler.init_noise_sigma
    for i, t in enumerate(timesteps):
        unet = unets[0] if (i + 1) / len(timesteps) <= ratio else unets[1]
        latent_model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_pred = unet(latent_model_input, t, encoder_hidden_states=prompt_embeds).sample
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + scale * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents).prev_sample
    return latents


def dit_reference(members, x, y, args):
    """``reference_ddim`` on the members' DiTs, ready to run, and the ``sample`` options of the same trajectory."""
    nets = [m.net for m in members]  # timm's attention as timm sets it (fused unless TIMM_FUSED_ATTN=0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as DiT's sample.py
    first, fractions = members[0], [args.fraction, 1 - args.fraction]
    run = partial(reference_ddim, nets, x, y, fractions, args.steps, args.guidance, first.num_classes,
                  first.cfg_channels or first.space.shape[0], first.space.clip)
    return run, {"fractions": fractions, "steps": args.steps, "solver": "ddim"}, allocate(fractions, args.steps)


def sd_reference(members, x, prompts, args):
    """``reference_sd`` on the members' UNets, ready to run, the ``sample`` options of the same trajectory (the
    shipped scheduler's grid, TStitchSD's plan; see the module docstring) and the model calls per member."""
    n, r = args.steps, args.fraction
    small = sum((i + 1) / (n + 1) <= r for i in range(n + 1))  # PNDM: n + 1 loop iterations
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # torch's defaults
    run = partial(reference_sd, [m.net for m in members], members[0].text, x, prompts, r, n, args.guidance)
    options = {"fractions": [r, 1 - r], "steps": n, "solver": "scheduler", "rule": "official"}
    return run, options, [small, n + 1 - small]


def attention(nets, fused):
    """Set timm's attention of DiT ``nets`` fused or unfused; returns the label of what they ran before."""
    blocks = [block for net in nets for block in net.blocks]
    before = "fused" if all(b.attn.fused_attn for b in blocks) else "unfused" if blocks else "none"
    for block in blocks:
        block.attn.fused_attn = fused
    return before


def random_dit(seed, device, **size):
    net = DiT(**size)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return net.to(device).eval().requires_grad_(False)


def random_unet(seed, device, latent, **config):
    """A ``UNet2DConditionModel`` with diffusers' own initialisation, seeded on the CPU (the same on every device)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet2DConditionModel(sample_size=latent, **config)
    return net.to(device).eval().requires_grad_(False)


def random_text(device, width=768, length=77, seed=0):
    """A random CLIP text encoder ``width`` wide (2 layers) behind a tokenizer made in memory: every byte one
    token, no merges. As ``TextEncoders``: conditions (B, ``length``, ``width``), SD 1.x's shape."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())  # CLIP's byte alphabet; a word's last character carries </w>
    vocab = {**{c: i for i, c in enumerate(chars)}, **{c + "</w>": len(chars) + i for i, c in enumerate(chars)}}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=length)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                            num_attention_heads=width // 64, max_position_embeddings=length,
                            bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPTextModel(config)
    return TextEncoders([(tokenizer, encoder.to(device).eval().requires_grad_(False))], penultimate=False)


SIZES = {"dit-s2": dict(hidden_size=384, depth=12, num_heads=6),
         "dit-b2": dict(hidden_size=768, depth=12, num_heads=12),
         "dit-xl2": dict(hidden_size=1152, depth=28, num_heads=16)}
# SD v1.4/1.5: diffusers' default UNet at SD's 768-wide text; BK-SDM-Tiny: that UNet without the mid block and the
# innermost stages, with one layer fewer per stage
UNETS = {"sd1": dict(cross_attention_dim=768),
         "bk-sdm-tiny": dict(cross_attention_dim=768, block_out_channels=(320, 640, 1280), layers_per_block=1,
                             down_block_types=("CrossAttnDownBlock2D",) * 3,
                             up_block_types=("CrossAttnUpBlock2D",) * 3, mid_block_type=None)}
SD_PAIRS = {"sd1": ("bk-sdm-tiny", "sd1"), "bk-sdm-tiny": ("bk-sdm-tiny", "bk-sdm-tiny")}
PROMPTS = ["a photo of a cat", "a red bicycle against a wall", "two boats on a lake at dawn", "a bowl of fruit",
           "a snowy mountain village", "an astronaut riding a horse", "a lighthouse in a storm", "a plate of pasta"]
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # dense tensor-core FLOP/s


# SD v1.4's scheduler/scheduler_config.json (CompVis/stable-diffusion-v1-4), as StableDiffusionPipeline loads it
SD_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
                "_pipeline": "StableDiffusionPipeline"}


def latents(side):
    return Space("sd-kl-f8", (4, side, side), 0.18215)


def pair(name, args):
    """The two members of model ``name`` (see the module docstring), small first."""
    device = args.device
    if name == "toy":
        from tstitch.models import zoo

        return [zoo.load("toy/small", device=device), zoo.load("toy/large", device=device)]
    if name in SD_PAIRS:
        text = random_text(device)
        return [SDMember(random_unet(k, device, args.latent, **UNETS[size]), text, f"{size}-random-{k}",
                         Schedule("scaled_linear"), latents(args.latent), scheduler_config=SD_SCHEDULER)
                for k, size in enumerate(SD_PAIRS[name], 1)]
    size = dict(input_size=32, patch_size=2, in_channels=4, num_classes=1000, **SIZES[name])
    return [DiTMember(random_dit(k, device, **size), f"{name}-random-{k}", Schedule("linear"), latents(32),
                      cfg_channels=3) for k in (1, 2)]


def step_flops(member, x, y, scale):
    """FLOPs per image of one guided step of ``member`` (both halves of the doubled batch), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    denoise = guided(member, member.condition(y), scale)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        denoise(x, 500)
    return counter.get_total_flops() / len(x)


def mfu(flops_per_image, seconds_per_image, device):
    """Model FLOPs utilisation: FLOPs per image / time, against the GPU's dense bf16 peak (None where the peak is
    not known)."""
    name = torch.cuda.get_device_name() if str(device).startswith("cuda") else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"flops_per_image": flops_per_image, "achieved_flops": flops_per_image / seconds_per_image,
            "mfu": flops_per_image / seconds_per_image / peak if peak else None, "device": name}


def bench(name, args):
    members = pair(name, args)
    params = {m.name: sum(p.numel() for p in m.net.parameters()) for m in members}
    print(f"{name}: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in params.items()) + " parameters", flush=True)
    first = members[0]
    x, y, _ = seeds.draw(range(args.batch), first.space.shape, first.num_classes, "random", args.device,
                         prompts=PROMPTS)
    run, opts, steps = (sd_reference if name in SD_PAIRS else dit_reference)(members, x, y, args)
    opts.update(guidance=args.guidance)
    fractions = opts["fractions"]
    variants = {"reference loop": run}
    if name not in SD_PAIRS:  # the same loop with the 2023 timm's unfused attention, a labelled extra row
        nets = [m.net for m in members]
        label = attention(nets, fused=False)
        attention(nets, fused=label == "fused")

        def unfused():
            attention(nets, fused=False)
            try:
                return run()
            finally:
                attention(nets, fused=label == "fused")
        variants["reference loop, unfused attention"] = unfused
    work = sum(step_flops(m, x, y, args.guidance) * n for m, n in zip(members, steps)) if name != "toy" else None
    del members, first  # the reference keeps its networks
    cap = fast.capability(args.device)
    for path in args.paths:  # every path's members resident, so that the rounds can interleave them
        precision = PATHS[path].get("precision", "fp32")
        if fast.choose_precision(precision, cap)[1]:
            print(f"note: ours, {path} is timed as named; a run would fall back to fp32 here: "
                  f"{fast.choose_precision(precision, cap)[1]}", flush=True)
        ms = fast.speed_up(pair(name, args), args.device, force=True, **PATHS[path])
        variants[f"ours, {path}"] = partial(lambda ms, o: sample(ms, x, y, **o).x, ms, opts)
        if path == args.paths[0] and args.overhead_repeats:
            for alone, f in (("small alone", [1.0, 0.0]), ("large alone", [0.0, 1.0])):
                variants[alone] = partial(lambda ms, o: sample(ms, x, y, **o).x, ms, {**opts, "fractions": f})
    out = {k: fn() for k, fn in variants.items()}  # warm-up (and compilation); the samples for rel err
    stitched = f"ours, {args.paths[0]}"
    rounds = {k: args.overhead_repeats if k.endswith("alone") else
              max(args.repeats, args.overhead_repeats) if k == stitched else args.repeats for k in variants}
    r = timing.interleaved({k: partial(lambda fn, n, i: (fn(), args.batch)[1] if i < n else 0, fn, rounds[k])
                            for k, fn in variants.items()}, max(rounds.values()), timing.clock_for(args.device))
    where = fast.machine(args.device)
    rows, ref = [], out["reference loop"]
    for k in variants:
        if k.endswith("alone"):
            continue
        t, ratio = r.stats(k), r.ratio("reference loop", k)
        rows.append({"model": name, "path": k, "images_per_s": 1 / t.median, "images_per_s_p25_p75":
                     [1 / t.p75, 1 / t.p25], "ratio": ratio.median, "ratio_p25_p75": [ratio.p25, ratio.p75],
                     "rounds": t.n, "rel_err": ((out[k] - ref).norm() / ref.norm()).item(), "machine": where})
        if k == "reference loop" and name not in SD_PAIRS:
            rows[-1]["attention"] = label
        if k == "reference loop, unfused attention":
            rows[-1]["attention"] = "unfused"
    if work:  # MFU of the last (fastest-configured) path
        rows[-1]["mfu"] = mfu(work, 1 / rows[-1]["images_per_s"], args.device)
    if not args.overhead_repeats:
        return rows, None, timing.drift(r)
    small, large, st = (r.seconds[k] for k in ("small alone", "large alone", stitched))  # {round: s per image}
    both = [i for i in r.used if i in small and i in large]  # the rounds the statistics use that ran them alone
    over = timing.stats([st[i] / (fractions[0] * small[i] + fractions[1] * large[i]) - 1 for i in both])
    med = [timing.stats([v[i] for i in both]).median * args.batch for v in (small, large, st)]
    overhead = {"model": name, "params": params, "steps": steps,  # steps: model calls per member
                "t_small": med[0], "t_large": med[1], "t_stitched": med[2],  # seconds per batch, medians
                "expected": fractions[0] * med[0] + fractions[1] * med[1], "overhead": asdict(over),
                "path": args.paths[0], "machine": where,
                "rounds": {k: r.seconds[k] for k in variants}, "used": r.used}  # seconds per image by round
    return rows, overhead, timing.drift(r)


PATHS = {"fp32": {}, "bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"}, "compile": {"compile": True},
         "bf16+compile": {"precision": "bf16", "compile": True},
         "bf16+graphs": {"precision": "bf16", "compile": True, "graphs": True},
         "bf16+channels_last": {"precision": "bf16", "channels_last": True}, "offload": {"offload": True}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["toy", "dit-s2"], choices=["toy", *SIZES, *SD_PAIRS],
                   help="toy: the toy zoo; dit-*: two random DiTs of that size; sd1: random BK-SDM-Tiny -> SD v1.4 "
                        "UNets; bk-sdm-tiny: two random BK-SDM-Tiny UNets")
    p.add_argument("--paths", nargs="+", default=["fp32", "bf16"], choices=list(PATHS))
    p.add_argument("--latent", type=int, default=64, help="latent side of the SD models (64: 512x512 images)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fraction", type=float, default=0.4)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the rows (after a warm-up run)")
    p.add_argument("--overhead-repeats", type=int, default=5,
                   help="rounds that also run the two members alone, for the stitching overhead (median of the "
                        "rounds' ratios); 0 skips it")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/sampler_speed.json")
    args = p.parse_args()
    if args.repeats < 1 or args.overhead_repeats < 0:
        p.error("--repeats must be at least 1 and --overhead-repeats at least 0")
    torch.set_num_threads(args.threads)
    rows, overheads, drifts = [], [], []
    for name in args.models:
        r, o, d = bench(name, args)
        rows += r
        overheads += [o] if o else []
        drifts += [f"{name}: {d.replace('timing.rounds=...', '--repeats N')}"] if d else []
    where, tag = fast.machine(args.device), fast.machine(args.device, short=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else "cpu", "machine": where, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "rows": rows, "overhead": overheads}, f, indent=2)
    sd = f", SD latents 4x{args.latent}x{args.latent}" if set(args.models) & set(SD_PAIRS) else ""
    solvers = "DDIM" if not set(args.models) & set(SD_PAIRS) else "DDIM (DiT), SD's PNDM (SD)"
    print(f"\n{where}: {args.device}, batch {args.batch}, {solvers} {args.steps} steps, guidance {args.guidance}, "
          f"fraction {args.fraction}{sd}, {args.threads} thread(s), interleaved rounds: {args.repeats} "
          f"({args.overhead_repeats} with the members alone); full numbers in {args.out}")
    print(f"{'model':11} {'path':33} {'images/s (p25-p75)':20} {'vs ref (p25-p75)':18} {'rel err':>9}  on")
    for r in rows:
        m = r.get("mfu") or {}
        extra = f"  MFU {100 * m['mfu']:.1f}%" if m.get("mfu") else (
            f"  {m['achieved_flops'] / 1e12:.2f} TFLOP/s" if m else "")
        extra += f"  ({r['attention']} attention)" if r["path"] == "reference loop" and "attention" in r else ""
        lo, hi = r["images_per_s_p25_p75"]
        rlo, rhi = r["ratio_p25_p75"]
        print(f"{r['model']:11} {r['path']:33} {r['images_per_s']:7.2f} {f'({lo:.2f}-{hi:.2f})':<12} "
              f"{r['ratio']:5.2f}x {f'({rlo:.2f}-{rhi:.2f})':<12} {r['rel_err']:9.2e}  {tag}{extra}")
    for o in overheads:
        v = o["overhead"]
        print(f"{o['model']:11} stitching overhead {100 * v['median']:+.1f}% (p25-p75 {100 * v['p25']:+.1f}% ... "
              f"{100 * v['p75']:+.1f}%, {v['n']} rounds; stitched {o['t_stitched']:.3f} s vs {o['expected']:.3f} s "
              f"from the members alone; steps {o['steps']}; ours, {o['path']})  {tag}")
    for d in drifts:
        print(f"note: {d}")


if __name__ == "__main__":
    main()
