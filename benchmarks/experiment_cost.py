"""Estimated GPU time of the experiments on real models (``conf/experiment/*.yaml`` but the toy ones), before
renting the GPUs: every job of the experiment's multirun (its swept allocations times its other swept settings),
the network evaluations each member makes for ``num_samples`` images (its steps of the plan, doubled under
guidance), and the seconds one evaluation takes per image:

- DiT-S/2, DiT-B/2, DiT-XL/2: the paper's own timing (8 images, DDIM-100, guidance 1.5, one RTX 3090:
  1.6 / 4.0 / 16.5 s, docs/paper.md) divided by the 100 guided steps and 8 images;
- any other network: its FLOPs per evaluation (counted by torch on the meta device: no weights, no memory) at the
  throughput that timing implies for DiT-XL/2 (FLOPs per guided DiT-XL/2 step / its seconds).

So the hours are RTX-3090 hours at the official code's speed (float32 with TF32); decoding, metrics and start-up
are left out, and small networks run below DiT-XL/2's throughput (DiT-S/2 took 2.2x its FLOP share), so those
estimates are low. ``sd_ssd1b_sdxl`` times the SDXL demo itself; its members have no FLOP model here.

    .venv/bin/python benchmarks/experiment_cost.py [NAME ...]
"""
import argparse
import itertools
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch.utils.flop_counter import FlopCounterMode

from tstitch.cli import CONF
from tstitch.sampling.stitch import allocate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_speed import UNETS as SAMPLER_UNETS  # noqa: E402 - the SD 1.x UNet sizes of the sampler benchmark

PAPER_SECONDS = {"dit-s2": 1.6, "dit-b2": 4.0, "dit-xl2": 16.5}  # 8 images, 100 guided steps, RTX 3090
UNETS = {"sd-v1-4": SAMPLER_UNETS["sd1"], "bk-sdm-tiny": SAMPLER_UNETS["bk-sdm-tiny"]}  # zoo entry -> UNet config


def jobs(name):
    """The composed config of every job of experiment ``name``'s multirun."""
    with initialize_config_dir(CONF, version_base=None):
        base = compose("generate", [f"experiment={name}"], return_hydra_config=True)
        params = base.hydra.sweeper.params or {}
        values = [list(o.sweep_string_iterator()) for o in
                  OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])]
        return [compose("generate", [f"experiment={name}", *(f"{k}={v}" for k, v in zip(params, combo))])
                for combo in itertools.product(*values)]


def evaluation_flops(entry):
    """FLOPs of one network evaluation for one image of zoo ``entry``, or None without a FLOP model."""
    shape = (1, *entry.space.shape)
    with torch.device("meta"):
        x, t = torch.zeros(shape), torch.zeros(1)
        if entry.family == "dit":
            from tstitch.models.nets.dit import DiT

            net, args = DiT(**entry.net), (x, t, torch.zeros(1, dtype=torch.long))
        elif entry.family == "uvit":
            from tstitch.models.nets.uvit import UViT

            net, args = UViT(**entry.net), (x, t, torch.zeros(1, dtype=torch.long))
        elif entry.name in UNETS:
            from diffusers import UNet2DConditionModel

            net = UNet2DConditionModel(sample_size=shape[-1], **UNETS[entry.name])
            args = (x, t, torch.zeros(1, 77, UNETS[entry.name]["cross_attention_dim"]))
        else:
            return None
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(*args)
    return counter.get_total_flops()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="experiments (default: every one on real models)")
    args = p.parse_args(argv)
    names = args.names or sorted(q.stem for q in (Path(CONF) / "experiment").glob("*.yaml")
                                 if not q.stem.startswith("toy"))
    flops, seconds = {}, {}  # per zoo entry name: FLOPs and seconds per evaluation per image

    def cost(entry):
        if entry.name not in flops:
            flops[entry.name] = evaluation_flops(entry)
            if entry.name in PAPER_SECONDS:
                seconds[entry.name] = PAPER_SECONDS[entry.name] / 8 / 100 / 2  # one half of a guided step
        return flops[entry.name]

    with initialize_config_dir(CONF, version_base=None):
        xl = compose("generate", ["stitch=dit_s_xl"]).stitch.members.large
    throughput = cost(xl) / seconds[xl.name]  # FLOP/s of DiT-XL/2 in the paper's timing
    print(f"throughput: {throughput / 1e12:.1f} TFLOP/s (DiT-XL/2, RTX 3090, the paper's timing)")
    print(f"{'experiment':<18}{'jobs':>5}{'images':>9}  {'evaluations per member (x 1e6)':<44}{'RTX 3090 h':>10}")
    for name in names:
        configs, hours, missing = jobs(name), 0.0, set()
        evaluations = {}
        for cfg in configs:
            members = list(cfg.stitch.members.values())
            guided = 2 if cfg.guidance.scale != 1 else 1
            for entry, n in zip(members, allocate(list(cfg.stitch.fractions), int(cfg.solver.steps))):
                count = n * cfg.num_samples * guided
                evaluations[entry.name] = evaluations.get(entry.name, 0) + count
                if cost(entry) is None:
                    missing.add(entry.name)
                    continue
                hours += count * seconds.get(entry.name, flops[entry.name] / throughput) / 3600
        images = sum(c.num_samples for c in configs)
        per = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in evaluations.items())
        shown = f"{hours:10.1f}" if not missing else f"{'-':>10}  (no FLOP model: {', '.join(sorted(missing))})"
        print(f"{name:<18}{len(configs):>5}{images:>9}  {per:<44}{shown}")


if __name__ == "__main__":
    main()
