"""`tstitch`: sweep stitch allocations on the configured members and write the table, grid and plot."""
import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.cli.spelling import plain_groups

log = logging.getLogger(__name__)

@hydra.main(version_base=None, config_path=CONF, config_name="tstitch")
@guard
def main(cfg):
    from tstitch import files
    from tstitch.cli import schema
    from tstitch.data import seeds
    from tstitch.jobs import build, report, tracking
    from tstitch.jobs.sweep import sweep

    schema.check(cfg, "tstitch")  # also in the preflight; again here for jobs started without it (SLURM, multirun)
    out = Path(HydraConfig.get().runtime.output_dir)
    rows, grids, members, facts = sweep(cfg)
    names, allocations = [m.name for m in members], [r["fractions"] for r in rows]
    config = tracking.run_config(OmegaConf.to_container(cfg, resolve=True), allocations)
    n = len(grids[0])
    _, y, _ = seeds.draw(range(cfg.seed, cfg.seed + n), members[0].space.shape, members[-1].num_classes, cfg.labels,
                         cfg.device, build.prompts(cfg), cfg.seed)  # the grid's columns, as sweep() drew them
    start = time.perf_counter()
    label = report.write_run(out, rows, names, config, facts, cfg.logger, grids,
                             [report.fmt("fractions", a) for a in allocations],
                             title=f"rows: fractions of the steps, {' : '.join(names)}; columns: seeds {cfg.seed}-"
                                   f"{cfg.seed + n - 1}, the same in every row",
                             columns=report.column_labels(y, list(cfg.stitch.members.values())[-1].get("classes")))
    facts["stages"]["outputs"] = time.perf_counter() - start  # table, grid, plot, W&B
    files.write_json(out / "stages.json", facts["stages"])
    log.info("\n" + report.markdown(rows, names, label))
    t = facts["timing"]
    log.info(f"\n{len(rows)} allocations x {cfg.num_samples} samples, {cfg.solver.name} {cfg.solver.steps} steps, "
             f"guidance {cfg.guidance.scale}; metric: {facts['metric']}; times: medians (p25-p75) of {t['rounds']} "
             f"interleaved rounds, {t['workers']} batch(es) of {cfg.batch_size} side by side x "
             f"{t['threads_per_worker']} torch thread(s), CPU capability {t['cpu_capability']}; outputs in {out}")


def entry():
    sys.argv[1:] = plain_groups(sys.argv[1:], "tstitch")  # +experiment=NAME, +debug=tiny: as experiment=, debug=
    entry_point(main, "tstitch")()


if __name__ == "__main__":
    entry()
