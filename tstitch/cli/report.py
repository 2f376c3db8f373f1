"""`tstitch-report DIR [DIR ...]`: one table and one trade-off plot from many runs, written into the first DIR.

A DIR may hold `tstitch` or `tstitch-generate` run directories (a Hydra multirun, or single runs: each has a
results.jsonl) and W&B run directories (``wandb/offline-run-*``, read from their logged results table, e.g.
offline runs copied from a cluster)."""
import argparse
import json
import sys
from pathlib import Path


def _runs(d):
    """(run directory, rows, member names) for every run below ``d``; W&B copies first, so that a run's own
    results.jsonl wins where both exist."""
    from tstitch import tracking

    for table in sorted(Path(d).rglob(f"files/media/table/{tracking.TABLE}_*.table.json")):
        run = table.parents[3]
        rows, names = tracking.read_offline(run)
        yield run, rows, names
    for path in sorted(Path(d).rglob("results.jsonl")):
        run = json.loads((path.parent / "run.json").read_text()) if (path.parent / "run.json").exists() else {}
        yield path.parent, [json.loads(line) for line in path.read_text().splitlines()], run.get("members")


def collect(dirs):
    """Rows of every run below ``dirs``, each tagged with its run directory; one row per allocation (a later
    run's row replaces an earlier one with the same fractions)."""
    rows, names = {}, None
    for d in dirs:
        for run, found, members in _runs(d):
            names = names or members
            for row in found:
                rows[tuple(row["fractions"])] = {**row, "run": str(run)}
    if not rows:
        raise FileNotFoundError(f"no results.jsonl below {', '.join(map(str, dirs))}; give tstitch run directories")
    out = sorted(rows.values(), key=lambda r: r["fractions"][::-1], reverse=True)
    base = next((r for r in out if r["fractions"][-1] == 1.0 and r.get("s_per_image")), None)
    for r in out:  # a speedup measured within its own run stands; else against the all-last-member row
        if r.get("speedup") is None and r.get("s_per_image"):
            r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None
    return out, names or [f"member {k}" for k in range(len(out[0]["fractions"]))]


def main(argv=None):
    from tstitch import report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="run, multirun or W&B directories")
    args = p.parse_args(argv)
    try:
        rows, names = collect(args.dirs)
    except FileNotFoundError as e:
        print(f"tstitch-report: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.dirs[0])
    report.write_table(rows, names, out)
    report.tradeoff_plot(rows, names, out / "tradeoff.png")
    print(report.markdown(rows, names))
    print(f"\n{len(rows)} allocations from {len({r['run'] for r in rows})} runs; report in {out}")


if __name__ == "__main__":
    main()
