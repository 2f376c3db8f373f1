"""The paper's analysis (T-Stitch §3, Figs. 3 and 4) for any members of the zoo: along the reference member's
trajectory (the last member alone), the cosine similarity of every member's noise prediction with the reference's
per step, and the spectral error of every member's predicted x0 per step and frequency band
(``tstitch.jobs.analysis``).

It takes the main job's config (``conf/tstitch.yaml``) and its overrides, so any stitch, solver, step count and
guidance of the zoo works: ``stitch=dit_s_xl``, ``solver.steps=50``, ``guidance.scale=1.5``, ``num_samples=8``.
It writes ``analysis.png`` (the figure), ``analysis.json`` (the numbers: per call, timestep, cosine per member and
band errors per member) into ``out=DIR`` (default ``outputs/analysis``).

    .venv/bin/python experiments/analysis/analyze.py                       # the toy pair, 16 seeds, DDIM 20
    .venv/bin/python experiments/analysis/analyze.py stitch=dit_s_xl solver.steps=100 guidance.scale=1.5 num_samples=8
"""
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from tstitch.cli import schema
from tstitch.data import seeds
from tstitch.errors import ConfigError
from tstitch.jobs import analysis, build
from tstitch.searchpath import CONF


def main(argv):
    out = Path("outputs/analysis")
    bands, overrides = 8, []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "out":
            out = Path(value)
        elif key == "bands":
            bands = int(value)
        else:
            overrides.append(arg)
    if not any(a.startswith("num_samples=") for a in overrides):
        overrides.append("num_samples=16")
    try:
        with initialize_config_dir(config_dir=CONF, version_base=None):
            cfg = compose(config_name="tstitch", overrides=[*overrides, "metric=none", "logger=none"])
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    schema.check(cfg, "tstitch")
    out.mkdir(parents=True, exist_ok=True)
    if not out.is_dir():
        raise ConfigError(f"out={out} is not a directory")
    torch.set_num_threads(int(cfg.threads))
    members, _ = build.stitch(cfg, cfg.device)
    ids = range(cfg.seed, cfg.seed + cfg.num_samples)
    x, y, rng = seeds.draw(ids, members[0].space.shape, members[-1].num_classes, cfg.labels, cfg.device,
                           build.prompts(cfg), cfg.seed)
    options = build.sample_options(cfg, [0.0] * (len(members) - 1) + [1.0])
    for key in ("fractions", "rule"):
        options.pop(key)
    tr = analysis.trace(members, x, y, randn_like=rng.randn_like, **options)
    cos, err = analysis.figure(tr, out / "analysis.png", bands)
    numbers = {"members": tr.names, "reference": tr.names[tr.reference], "timesteps": [float(t) for t in tr.t],
               "step": tr.step, "cosine": cos.tolist(), "band_error": err.tolist(), "bands": bands,
               "num_samples": cfg.num_samples, "solver": cfg.solver.name, "steps": cfg.solver.steps,
               "guidance": cfg.guidance.scale}
    (out / "analysis.json").write_text(json.dumps(numbers, indent=1))
    for k, name in enumerate(tr.names):
        if k != tr.reference:
            first, last = cos[k, 0], cos[k, -1]
            print(f"{name} vs {tr.names[tr.reference]}: cosine {first:.3f} at the first call, {last:.3f} at the last; "
                  f"x0 spectrum error at the first call, low band {err[k, 0, 0]:.3f}, high band {err[k, 0, -1]:.3f}")
    print(f"wrote {out / 'analysis.png'} and {out / 'analysis.json'}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"analyze.py: error: {e}")
