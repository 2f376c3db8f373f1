"""How close each family's own sampler comes to its official one, on the tests' tiny models (CPU, float32):

* U-ViT, ``solver=dpm_solver`` against the official samplers' outputs in ``tests/data/uvit_dpm_solver_reference.pt``
  (baofff/U-ViT's ``dpm_solver_pytorch.py`` / ``dpm_solver_pp.py``), and ``dpmpp_2m`` on our grid for contrast;
* Stable Diffusion, ``solver=scheduler`` with the scheduler a tiny SD 1.x / SDXL directory ships (each scheduler's
  default config) against ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` latents.

Prints the relative L2 distance of the final samples per case (the tests assert <= 1e-4 and <= 1e-5).

    .venv/bin/python benchmarks/solver_agreement.py
"""
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' tiny models

import test_sd as sd
import test_uvit_dpm_solver as uvit
from diffusers.utils import logging

import tstitch
from tstitch.models import zoo


def relative(a, b):
    return float((a - b).norm() / b.norm())


def uvit_rows(root):
    torch.save(uvit.weights(), root / "nnet_ema.pth")
    reference = torch.load(uvit.REFERENCE)
    for kind, schedule in uvit.SCHEDULES.items():
        member = zoo.load({"name": kind, "family": "uvit", "net": uvit.TINY, "checkpoint": str(root / "nnet_ema.pth"),
                           "schedule": {"name": schedule, "num_timesteps": 1000},
                           "space": {"name": "sd-kl-f8", "shape": [4, 8, 8], "scale": 0.18215}, "null_class": 1000})
        for k, steps, guided in uvit.CASES:
            if k != kind:
                continue
            w = 1 + uvit.SCALE if guided else 1.0
            ref = reference[f"{kind}-{steps}-{'guided' if guided else 'unguided'}"]
            for solver in ("dpm_solver", "dpmpp_2m") if steps == 10 else ("dpm_solver",):
                out = tstitch.sample([member], uvit.noise(), uvit.LABELS, solver=solver, steps=steps, guidance=w).x
                yield f"U-ViT {kind}, {solver}, {steps} steps, w {w}", relative(out, ref)


def sd_rows(root):
    import diffusers

    dirs = SimpleNamespace(large=sd.save_sd(root / "large", 48, seed=1), xl=sd.save_sdxl(root / "xl"))
    for kind in ("sd", "xl"):
        for name in sd.SCHEDULERS:
            cls = diffusers.StableDiffusionXLPipeline if kind == "xl" else diffusers.StableDiffusionPipeline
            pipe = cls.from_pretrained(dirs.xl if kind == "xl" else dirs.large)
            pipe.scheduler = getattr(diffusers, name)(**sd.BETAS)
            pipe.save_pretrained(root / f"{kind}-{name}")
            expected = sd.pipeline_latents(sd.pipeline(cls, root / f"{kind}-{name}"), kind)
            yield f"{sd.PIPELINES[kind]}, {name} (default config)", relative(sd.alone(kind, root / f"{kind}-{name}").x,
                                                                            expected)


def main():
    import transformers

    torch.set_num_threads(1)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        for label, err in [*uvit_rows(Path(tmp)), *sd_rows(Path(tmp))]:
            print(f"{label:70} {err:.2e}", flush=True)


if __name__ == "__main__":
    main()
