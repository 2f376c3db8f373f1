"""`tstitch-report DIR [DIR ...]`: one table and one trade-off plot from many runs, written into the first DIR.

A DIR may hold `tstitch` or `tstitch-generate` run directories (a Hydra multirun, or single runs: each has a
results.jsonl) and W&B run directories (``wandb/offline-run-*``, read from their logged results table, e.g.
offline runs copied from a cluster)."""
import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf


def _runs(d):
    """(run directory, rows, member names, config, overrides) for every run below ``d``; W&B copies first, so
    that a run's own results.jsonl wins where both exist."""
    from tstitch import tracking

    for table in sorted(Path(d).rglob(f"files/media/table/{tracking.TABLE}_*.table.json")):
        run = table.parents[3]
        if (run.parents[1] / "results.jsonl").exists():  # <run dir>/wandb/<run>: the run dir's own table stands
            continue
        rows, names = tracking.read_offline(run)
        yield run, rows, names, {}, []
    for path in sorted(Path(d).rglob("results.jsonl")):
        run = json.loads((path.parent / "run.json").read_text()) if (path.parent / "run.json").exists() else {}
        overrides = path.parent / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(overrides)] if overrides.exists() else []
        yield (path.parent, [json.loads(line) for line in path.read_text().splitlines()], run.get("members"),
               run.get("config", {}), [o for o in overrides if not o.startswith(("stitch.fractions=", "hydra."))])


def collect(dirs):
    """Rows of every run below ``dirs``, each tagged with its run directory and, when the runs differ in more
    than the allocation (e.g. a multirun over solvers), its ``setting`` (the overrides that differ); one row
    per setting and allocation (a later run's row replaces an earlier one). Returns (rows, member names, the
    paper column's label or None)."""
    from tstitch import report

    runs = [r for d in dirs for r in _runs(d)]
    known = [set(r[4]) for r in runs if r[4]]  # runs that recorded their overrides (not W&B copies or reports)
    common = set.intersection(*known) if known else set()
    rows, names, label = {}, None, None
    for run, found, members, config, overrides in runs:
        names = names or members
        label = report.add_paper(found, config) or label
        own = " ".join(o for o in overrides if o not in common) or None
        for row in found:
            row = {**row, "run": str(run)}
            setting = own or row.get("setting")  # a report's own table keeps the settings it found
            if setting:
                row["setting"] = setting
            rows[(setting or "", tuple(row["fractions"]))] = row
    if not rows:
        raise FileNotFoundError(f"no results.jsonl below {', '.join(map(str, dirs))}; give tstitch run directories")
    out = [rows[k] for k in sorted(rows, key=lambda k: (k[0], [-f for f in k[1][::-1]]))]
    for r in out:  # a speedup measured within its own run stands; else against the setting's all-last-member row
        base = next((b for b in out if b.get("setting") == r.get("setting") and b["fractions"][-1] == 1.0
                     and b.get("s_per_image")), None)
        if r.get("speedup") is None and r.get("s_per_image"):
            r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None
    return out, names or [f"member {k}" for k in range(len(out[0]["fractions"]))], label


def main(argv=None):
    from tstitch import report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="run, multirun or W&B directories")
    args = p.parse_args(argv)
    try:
        rows, names, label = collect(args.dirs)
    except FileNotFoundError as e:
        print(f"tstitch-report: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.dirs[0])
    report.write_table(rows, names, out, label)
    report.tradeoff_plot(rows, names, out / "tradeoff.png", paper_label=label)
    print(report.markdown(rows, names, label))
    print(f"\n{len(rows)} allocations from {len({r['run'] for r in rows})} runs; report in {out}")


if __name__ == "__main__":
    main()
