"""The solvers' own cost per step, without a network: two members whose prediction costs almost nothing
(eps = 0.1 x) stitched 0.4 : 0.6 on SD-sized latents (8 x 4 x 64 x 64), 50 steps, one thread. After a warm-up
run each, the solvers run in 15 interleaved rounds (``tstitch.jobs.timing.interleaved``, the order rotated each round)
timed in process CPU time (this VM's wall clock drifts with other load): per solver the median ms per step with
p25-p75, and its time against the first solver's as the median of the per-round ratios. What is left is the
solver loop, the diffusers scheduler's ``step`` and the stitching, per step. Every line names the CPU capability.

    .venv/bin/python benchmarks/solver_overhead.py [ddim diffusers:EulerDiscreteScheduler scheduler: ...]

``solver:Scheduler`` passes ``scheduler=Scheduler``; ``scheduler:`` alone runs the shipped config below (SD v1.4's
PNDM). An older checkout runs the same file with ``PYTHONPATH=<checkout>`` (solvers it lacks fail; the timing
module, which needs only torch, is this file's checkout's).
"""
import importlib.util
import sys
import time
from pathlib import Path

import torch

from tstitch.models.protocols import Output, Space
from tstitch.models.schedules import Schedule
from tstitch.sampling.sample import sample

SHIPPED = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False, "_pipeline": "StableDiffusionPipeline"}
STEPS, ROUNDS = 50, 15


def own(name):
    """``tstitch/<name>.py`` of this file's checkout (whatever ``tstitch`` PYTHONPATH points at)."""
    spec = importlib.util.spec_from_file_location(f"own_{name}", Path(__file__).resolve().parents[1] / "tstitch"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine():
    """The CPU capability (``tstitch.models.fast.machine``; torch's own where an older checkout lacks it)."""
    try:
        from tstitch.models.fast import machine
    except ImportError:
        return f"CPU {torch.backends.cpu.get_cpu_capability()}", torch.backends.cpu.get_cpu_capability()
    return machine(), machine(short=True)


class Cheap:
    name, family, cfg_channels, num_classes, scheduler_config = "cheap", "sd", None, 10, SHIPPED
    schedule, space = Schedule("scaled_linear"), Space("sd-kl-f8", (4, 64, 64), 0.18215)

    def __call__(self, x, t, cond):
        return Output(0.1 * x)

    def condition(self, labels):
        return labels

    def null(self, cond):
        return cond


def main():
    torch.set_num_threads(1)
    timing = own("timing")
    x, y = torch.randn(8, 4, 64, 64, generator=torch.Generator().manual_seed(0)), torch.zeros(8, dtype=torch.long)
    specs = sys.argv[1:] or ["ddim", "diffusers:EulerDiscreteScheduler", "diffusers:DPMSolverMultistepScheduler",
                             "scheduler:", "scheduler:EulerDiscreteScheduler"]

    def run(spec):
        solver, _, scheduler = spec.partition(":")
        options = {"scheduler": scheduler} if scheduler else {}
        sample([Cheap(), Cheap()], x, y, fractions=[0.4, 0.6], solver=solver, steps=STEPS, **options)
        return STEPS  # so that the rounds' times are per step

    for spec in specs:  # warm-up: imports, scheduler set-up
        run(spec)
    rounds = timing.interleaved({spec: lambda r, spec=spec: run(spec) for spec in specs}, ROUNDS, time.process_time)
    where, tag = machine()
    print(f"{where}: {STEPS} steps, 8 x 4 x 64 x 64, 1 thread, {ROUNDS} interleaved rounds, process CPU time")
    for spec in specs:
        t, ratio = rounds.stats(spec), rounds.ratio(spec, specs[0])
        print(f"{spec:40} {1000 * t.median:.3f} ms/step (p25-p75 {1000 * t.p25:.3f} ... {1000 * t.p75:.3f}), "
              f"{ratio.median:.2f}x {specs[0]}'s time (p25-p75 {ratio.p25:.2f} ... {ratio.p75:.2f})  {tag}", flush=True)
    if (line := timing.drift(rounds)) is not None:
        print(f"note: {line.split(' (timing.rounds')[0]}")


if __name__ == "__main__":
    main()
