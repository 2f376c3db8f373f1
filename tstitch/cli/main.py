"""`tstitch`: sweep stitch allocations on the configured members and write the table, grid and plot."""
import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard

log = logging.getLogger(__name__)

@hydra.main(version_base=None, config_path=CONF, config_name="tstitch")
@guard
def main(cfg):
    from tstitch import report, tracking
    from tstitch.run import run

    out = Path(HydraConfig.get().runtime.output_dir)
    rows, grids, members, facts = run(cfg)
    names = [m.name for m in members]
    config = tracking.run_config(OmegaConf.to_container(cfg, resolve=True), [r["fractions"] for r in rows])
    label = report.add_paper(rows, config)
    report.write_table(rows, names, out, label)
    report.image_grid(grids, out / "grid.png", [report.fmt("fractions", r["fractions"]) for r in rows])
    report.tradeoff_plot(rows, names, out / "tradeoff.png", paper_label=label)
    (out / "run.json").write_text(json.dumps({"members": names, **facts, "config": config}, indent=2))
    tracking.log_results(tracking.wandb_logger(cfg.logger, out, [r["fractions"] for r in rows]), config, rows, names, facts,
                         [out / "grid.png", out / "tradeoff.png"])
    log.info("\n" + report.markdown(rows, names, label))
    log.info(f"\n{len(rows)} allocations x {cfg.num_samples} samples, {cfg.solver.name} {cfg.solver.steps} steps, "
          f"guidance {cfg.guidance.scale}; metric: {facts['metric']}; outputs in {out}")


entry = entry_point(main, "tstitch")

if __name__ == "__main__":
    entry()
