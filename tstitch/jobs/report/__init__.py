"""Outputs of a sweep, one module each: the table's columns (``keys``) and cells (``cells``), its files
(``tables``: results.md, .csv, .jsonl; ``booktabs``: results.tex; ``table8``: footprint.md, the paper's Table 8),
the paper's values beside ours (``paper``), the sample grid (``grids``), the speed-quality plots (``plots``, their
point labels in ``labels``) and what every run writes (``run``). Their public names are all here:
``from tstitch.jobs import report; report.write_table(...)``. To replace one in a test, patch the module that
defines it and the modules that import it by name (``run`` calls ``tables.write_table``, not
``report.write_table``)."""
from tstitch.jobs.columns import LISTS, flat, member_names, unflat
from tstitch.jobs.report.booktabs import LATEX_SPECIAL, latex, tex
from tstitch.jobs.report.cells import cell, fmt, interval, time_unit
from tstitch.jobs.report.grids import class_names, column_labels, image_grid
from tstitch.jobs.report.keys import (
    BEFORE,
    FOOTPRINT,
    PAPER_ONLY,
    RECORDS,
    SPREADS,
    TIMES,
    axis,
    columns,
    paper_keys,
    shown,
    spread_label,
    spread_shown,
    spreads,
)
from tstitch.jobs.report.labels import OFFSETS, place_labels
from tstitch.jobs.report.paper import add_paper, lookup
from tstitch.jobs.report.plots import frontier_plot, interval_lines, time_bars, tradeoff_plot
from tstitch.jobs.report.run import RESULT_FILES, write_run
from tstitch.jobs.report.table8 import footprint_markdown, footprint_of
from tstitch.jobs.report.tables import add_speedups, markdown, write_table

__all__ = ["BEFORE", "FOOTPRINT", "LATEX_SPECIAL", "LISTS", "OFFSETS", "PAPER_ONLY", "RECORDS", "RESULT_FILES",
           "SPREADS", "TIMES", "add_paper", "add_speedups", "axis", "cell", "class_names", "column_labels", "columns",
           "flat", "fmt", "footprint_markdown", "footprint_of", "frontier_plot", "image_grid", "interval",
           "interval_lines", "latex", "lookup", "markdown", "member_names", "paper_keys", "place_labels", "shown",
           "spread_label", "spread_shown", "spreads", "tex", "time_bars", "time_unit", "tradeoff_plot", "unflat",
           "write_run", "write_table"]
