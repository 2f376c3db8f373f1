"""The table of a run's rows in its files: results.md (for people), results.csv, results.jsonl, results.tex
(``booktabs``) and footprint.md (``table8``); and each row's speedup where its run measured none."""
import csv
from pathlib import Path

from tstitch.files import write_jsonl
from tstitch.jobs.columns import LISTS, flat, member_names
from tstitch.jobs.report.booktabs import latex
from tstitch.jobs.report.cells import cell, time_unit
from tstitch.jobs.report.keys import TIMES, columns, shown, spread_label, spread_shown
from tstitch.jobs.report.table8 import footprint_markdown


def add_speedups(rows, within=lambda row: row.get("setting")):
    """Each row's speedup against the row of the last member alone with the same ``within`` (e.g. the setting of a
    multirun over solvers), where the row has none measured in its own run; None without such a row."""
    for r in rows:
        if r.get("speedup") is not None or not r.get("s_per_image"):
            continue
        base = next((b for b in rows if within(b) == within(r) and b["fractions"][-1] == 1.0
                     and b.get("s_per_image")), None)
        r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None
    return rows


def markdown(rows, members, paper_label=None):
    """The table for people: times, speedups and FD/FID with their intervals in brackets (the CSV and JSON lines
    have them as their own columns), the timing column only where a row is flagged."""
    cols = shown(rows, paper_label)
    head = [h.replace("fractions", "fractions (" + " : ".join(members) + ")") for _, h in cols]
    head = [f"{h} ({spread_label(k)})" if spread_shown(k, rows) else h for (k, _), h in zip(cols, head)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    units = {k: time_unit([r.get(k) for r in rows]) for k in TIMES}  # one unit per column
    lines += ["| " + " | ".join(cell(k, r, units.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_table(rows, members, out_dir, paper_label=None):
    """The table of ``rows`` (``members``: the names of the fractions' members) in ``out_dir``: results.md (for
    people), results.jsonl (the rows as they are: ``fractions``, ``nfe`` and the records' lists), results.csv
    (numbers only: one column per member for each list, ``fraction_<member>``, ``nfe_<member>``,
    ``params_<member>``, ...; every interval end its own column), results.tex (``latex``) and, where the rows
    recorded their members, footprint.md (``footprint_markdown``)."""
    out_dir = Path(out_dir)
    (out_dir / "results.md").write_text(markdown(rows, members, paper_label) + "\n")
    if any(r.get("params") for r in rows):  # runs that recorded their members (not those made before)
        (out_dir / "footprint.md").write_text(footprint_markdown(rows, members) + "\n")
    (out_dir / "results.tex").write_text(latex(rows, members, paper_label))
    write_jsonl(out_dir / "results.jsonl", rows)
    names = member_names(members, rows)
    keys = [k for k, _ in columns() if any(k in r for r in rows)]
    keys = [c for k in keys for c in ([f"{LISTS[k]}_{m}" for m in names] if k in LISTS else [k])]
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            r = flat(r, names)
            w.writerow([r.get(k) for k in keys])
