"""What every run writes into its directory: the table, run.json, the sample grid, the trade-off plot and the W&B
run."""
from pathlib import Path

from tstitch.files import write_json
from tstitch.jobs.report.grids import image_grid
from tstitch.jobs.report.paper import add_paper
from tstitch.jobs.report.plots import tradeoff_plot
from tstitch.jobs.report.tables import write_table

RESULT_FILES = ("results.md", "results.csv", "results.jsonl", "results.tex", "footprint.md", "run.json",
                "manifest.json")


def write_run(out, rows, names, config, facts, logger_cfg, grids=(), grid_labels=(), title=None, columns=None,
              plot=True):
    """What every run writes into its directory ``out`` (the main job's and ``tstitch-generate``'s): the table
    (``results.{md,csv,jsonl,tex}``, with the paper's column where the config has one), ``run.json`` (members,
    ``facts``, config), ``grid.png`` of ``grids`` (one row each, ``grid_labels``; ``title`` and ``columns`` as
    ``image_grid``), the trade-off plot (``plot``) and the W&B run (``logger_cfg``; with the files as artifacts,
    samples.npz where there is one, see ``tracking``). Returns the paper column's label or None."""
    from tstitch.jobs import tracking

    label = add_paper(rows, config)
    write_table(rows, names, out, label)
    write_json(Path(out) / "run.json", {"members": names, **facts, "config": config})
    images = []
    if len(grids):
        image_grid(grids, Path(out) / "grid.png", list(grid_labels), title=title, columns=columns)
        images.append(Path(out) / "grid.png")
    if plot and tradeoff_plot(rows, names, Path(out) / "tradeoff.png", paper_label=label) is not None:
        images.append(Path(out) / "tradeoff.png")
    allocations = [r["fractions"] for r in rows]
    tracking.log_results(tracking.wandb_logger(logger_cfg, out, allocations), config, rows, names, facts, images,
                         {"results": [Path(out) / f for f in RESULT_FILES], "samples": [Path(out) / "samples.npz"]})
    return label
