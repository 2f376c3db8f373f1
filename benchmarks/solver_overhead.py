"""The solvers' own cost per step, without a network: two members whose prediction costs almost nothing
(eps = 0.1 x) stitched 0.4 : 0.6 on SD-sized latents (8 x 4 x 64 x 64), 50 steps, one thread; the best of 15
runs in process CPU time (this VM's wall clock drifts with other load). What is left is the solver loop, the
diffusers scheduler's ``step`` and the stitching, per step.

    .venv/bin/python benchmarks/solver_overhead.py [ddim diffusers:EulerDiscreteScheduler scheduler: ...]

``solver:Scheduler`` passes ``scheduler=Scheduler``; ``scheduler:`` alone runs the shipped config below (SD v1.4's
PNDM). An older checkout runs the same file with ``PYTHONPATH=<checkout>`` (solvers it lacks fail).
"""
import sys
import time

import torch

from tstitch.protocols import Output, Space
from tstitch.sample import sample
from tstitch.schedules import Schedule

SHIPPED = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False, "_pipeline": "StableDiffusionPipeline"}


class Cheap:
    name, family, cfg_channels, num_classes, scheduler_config = "cheap", "sd", None, 10, SHIPPED
    schedule, space = Schedule("scaled_linear"), Space("sd-kl-f8", (4, 64, 64), 0.18215)

    def __call__(self, x, t, cond):
        return Output(0.1 * x)

    def condition(self, labels):
        return labels

    def null(self, cond):
        return cond


def per_step(solver, options, x, y, steps=50, runs=15):
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        sample([Cheap(), Cheap()], x, y, fractions=[0.4, 0.6], solver=solver, steps=steps, **options)
        best = min(best, time.process_time() - start)
    return best / steps


def main():
    torch.set_num_threads(1)
    x, y = torch.randn(8, 4, 64, 64, generator=torch.Generator().manual_seed(0)), torch.zeros(8, dtype=torch.long)
    for spec in sys.argv[1:] or ["ddim", "diffusers:EulerDiscreteScheduler", "diffusers:DPMSolverMultistepScheduler",
                                 "scheduler:", "scheduler:EulerDiscreteScheduler"]:
        solver, _, scheduler = spec.partition(":")
        options = {"scheduler": scheduler} if scheduler else {}
        print(f"{spec:40} {1000 * per_step(solver, options, x, y):.3f} ms/step", flush=True)


if __name__ == "__main__":
    main()
