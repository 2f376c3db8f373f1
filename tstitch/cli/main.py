"""`tstitch`: sweep stitch allocations on the configured members and write the table, grid and plot."""
import json
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tstitch.cli import CONF, entry_point, guard


def log_wandb(cfg, rows, out, member_names, metric):
    if cfg.logger.mode == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, mode=cfg.logger.mode, dir=str(out),
                     config=OmegaConf.to_container(cfg, resolve=True), reinit=True)
    cols = ["fractions", "nfe", "s_per_image", "speedup", "fd", "accuracy"]
    table = wandb.Table(columns=cols, data=[[json.dumps(r.get(c)) if isinstance(r.get(c), list) else r.get(c)
                                             for c in cols] for r in rows])
    for r in rows:
        run.log({"fraction_first": r["fractions"][0], **{k: r[k] for k in ("s_per_image", "speedup", "fd",
                                                                          "accuracy") if r.get(k) is not None}})
    media = {"results": table, "grid": wandb.Image(str(out / "grid.png"))}
    if (out / "tradeoff.png").exists():
        media["tradeoff"] = wandb.Image(str(out / "tradeoff.png"))
    run.log(media)
    run.summary.update({"members": member_names, "metric": metric})
    run.finish()
    return run.dir if hasattr(run, "dir") else None


@hydra.main(version_base=None, config_path=CONF, config_name="tstitch")
@guard
def main(cfg):
    from tstitch import report
    from tstitch.run import run

    out = Path(HydraConfig.get().runtime.output_dir)
    rows, grids, members, metric = run(cfg)
    names = [m.name for m in members]
    report.write_table(rows, names, out)
    report.image_grid(grids, out / "grid.png", [report.fmt("fractions", r["fractions"]) for r in rows])
    report.tradeoff_plot(rows, names, out / "tradeoff.png")
    (out / "run.json").write_text(json.dumps({"members": names, "metric": metric,
                                              "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2))
    log_wandb(cfg, rows, out, names, metric)
    print()
    print(report.markdown(rows, names))
    print(f"\n{len(rows)} allocations x {cfg.num_samples} samples, {cfg.solver.name} {cfg.solver.steps} steps, "
          f"guidance {cfg.guidance.scale}; metric: {metric}; outputs in {out}")


entry = entry_point(main)

if __name__ == "__main__":
    entry()
