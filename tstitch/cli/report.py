"""`tstitch-report DIR [DIR ...]`: one table and one trade-off plot from the results.jsonl of many runs
(a multirun directory, or several run directories), written into the first DIR."""
import argparse
import json
import sys
from pathlib import Path


def collect(dirs):
    """Rows of every results.jsonl below ``dirs``, each tagged with its run directory; one row per allocation
    (a later run's row replaces an earlier one with the same fractions)."""
    rows = {}
    names = None
    for d in dirs:
        for path in sorted(Path(d).rglob("results.jsonl")):
            run = json.loads((path.parent / "run.json").read_text()) if (path.parent / "run.json").exists() else {}
            names = names or run.get("members")
            for line in path.read_text().splitlines():
                row = json.loads(line)
                rows[tuple(row["fractions"])] = {**row, "run": str(path.parent)}
    if not rows:
        raise FileNotFoundError(f"no results.jsonl below {', '.join(map(str, dirs))}; give tstitch run directories")
    out = sorted(rows.values(), key=lambda r: r["fractions"][::-1], reverse=True)
    base = next((r for r in out if r["fractions"][-1] == 1.0), None)
    for r in out:  # speedup against the all-last-member row, when the runs include it
        r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None
    return out, names or [f"member {k}" for k in range(len(out[0]["fractions"]))]


def main(argv=None):
    from tstitch import report

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dirs", nargs="+", help="run or multirun directories holding results.jsonl files")
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
