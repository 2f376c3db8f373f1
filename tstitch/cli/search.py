"""`tstitch-search`: Pareto-optimal stitch allocations by measured cost and sampled quality."""
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from tstitch.cli import CONF, entry_point, guard

log = logging.getLogger(__name__)

@hydra.main(version_base=None, config_path=CONF, config_name="search")
@guard
def main(cfg):
    from omegaconf import OmegaConf

    from tstitch.cli import schema
    from tstitch.files import write_json, write_jsonl
    from tstitch.jobs import report, tracking
    from tstitch.jobs.search import search
    from tstitch.jobs.sweep import sweep

    schema.check(cfg, "search")  # also in the preflight; again here for jobs started without it (SLURM, multirun)
    out = Path(HydraConfig.get().runtime.output_dir)
    result = search(cfg, sweep, out)  # keeps each scored allocation in out as it goes; resumes from them
    names, objective = result["members"], cfg.search.objective
    report.write_table(result["confirmed"], names, out)
    write_jsonl(out / "candidates.jsonl", result["candidates"])  # every candidate, now with its place on the front
    write_json(out / "search.json", {k: result[k] for k in ("costs", "members", "metric", "best", "settings")})
    report.frontier_plot(result["candidates"], result["confirmed"], objective, names, out / "frontier.png")
    log.info(report.markdown(result["confirmed"], names))
    allocations = [r["fractions"] for r in result["confirmed"]]
    tracking.log_results(tracking.wandb_logger(cfg.logger, out, allocations),
                         tracking.run_config(OmegaConf.to_container(cfg, resolve=True), allocations),
                         result["confirmed"], names, {"costs": result["costs"], "best": result["best"]},
                         [out / "frontier.png"], {"results": [out / f for f in report.RESULT_FILES] + [
                             out / "candidates.jsonl", out / "search.json"]})
    costs = ", ".join(f"{n} {c * 1000:.3f} ms" for n, c in result["costs"].items())
    best = result["best"]
    log.info(f"\ncost per step and image: {costs}; {len(result['candidates'])} candidates scored on "
          f"{cfg.search.num_samples} seeds, {len(result['confirmed'])} on the front confirmed on "
          f"{cfg.search.confirm_samples}"
          + (f"; cheapest meeting {objective} target {cfg.search.target}: {report.fmt('fractions', best['fractions'])}"
             if best else "") + f"; outputs in {out}")


entry = entry_point(main, "search")

if __name__ == "__main__":
    entry()
