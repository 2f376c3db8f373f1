"""`tstitch-report DIR [DIR ...] [--out OUT]`: one table and one trade-off plot from many runs, written into OUT (a
new ``outputs/report/<time>`` when not given), never into the runs it reads.

A DIR may hold `tstitch` or `tstitch-generate` run directories (a Hydra multirun, or single runs: each has a
results.jsonl) and W&B run directories (``wandb/offline-run-*``, read from their logged results table, e.g.
offline runs copied from a cluster). A run that cannot be read (a truncated results.jsonl, a damaged run.json) is
skipped with one line, the others are reported; the exit code is 1 when anything was skipped, 2 when nothing could
be reported, 0 otherwise."""
import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

MARK = "report.json"  # what tells a report's directory from a run's


class Unreadable(Exception):
    """A run directory whose results cannot be read; the message says which file and why."""


def _read_run(path):
    """(rows, run.json contents, overrides) of the run whose results.jsonl is ``path``."""
    rows = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise Unreadable(f"{path} line {k} is not valid JSON (a run killed while writing it?)") from None
        if not isinstance(row, dict) or not isinstance(row.get("fractions"), list):
            raise Unreadable(f"{path} line {k} is not a results row (no fractions)")
        rows.append(row)
    if not rows:
        raise Unreadable(f"{path} holds no rows")
    run = {}
    if (path.parent / "run.json").exists():
        try:
            run = json.loads((path.parent / "run.json").read_text())
        except ValueError:
            raise Unreadable(f"{path.parent / 'run.json'} is not valid JSON") from None
    overrides = path.parent / ".hydra" / "overrides.yaml"
    try:
        overrides = [str(o) for o in OmegaConf.load(overrides)] if overrides.exists() else []
    except Exception:  # noqa: BLE001 - YAML errors come in many types
        raise Unreadable(f"{overrides} is not valid YAML") from None
    return rows, run, overrides


def _runs(d, skipped):
    """(run directory, rows, member names, config, overrides) for every readable run below ``d``; W&B copies
    first, so that a run's own results.jsonl wins where both exist. Unreadable runs go to ``skipped`` (one line
    each); report directories (``report.json``) are not runs and are passed over."""
    from tstitch import tracking

    for table in sorted(Path(d).rglob(f"files/media/table/{tracking.TABLE}_*.table.json")):
        run = table.parents[3]
        if (run.parents[1] / "results.jsonl").exists():  # <run dir>/wandb/<run>: the run dir's own table stands
            continue
        try:
            rows, names = tracking.read_offline(run)
        except (ValueError, KeyError, TypeError) as e:
            skipped.append(f"{run}: its W&B results table is unreadable ({type(e).__name__})")
            continue
        yield run, rows, names, {}, []
    for path in sorted(Path(d).rglob("results.jsonl")):
        if (path.parent / MARK).exists():
            continue
        try:
            rows, run, overrides = _read_run(path)
        except (Unreadable, OSError) as e:
            skipped.append(str(e))
            continue
        yield (path.parent, rows, run.get("members"), run.get("config", {}),
               [o for o in overrides if not o.startswith(("stitch.fractions=", "hydra."))])


def collect(dirs, skipped=None):
    """Rows of every run below ``dirs``, each tagged with its run directory and, when the runs differ in more
    than the allocation (e.g. a multirun over solvers), its ``setting`` (the overrides that differ); one row
    per setting and allocation (a later run's row replaces an earlier one). Returns (rows, member names, the
    paper column's label or None); runs that could not be read are listed in ``skipped``."""
    from tstitch import report

    skipped = [] if skipped is None else skipped
    runs = [r for d in dirs for r in _runs(d, skipped)]
    known = [set(r[4]) for r in runs if r[4]]  # runs that recorded their overrides (not W&B copies or reports)
    common = set.intersection(*known) if known else set()
    rows, names, label = {}, None, None
    for run, found, members, config, overrides in runs:
        names = names or members
        label = report.add_paper(found, config) or label
        own = " ".join(o for o in overrides if o not in common) or None
        for row in found:
            row = {**row, "run": str(run)}
            setting = own or row.get("setting")
            if setting:
                row["setting"] = setting
            rows[(setting or "", tuple(row["fractions"]))] = row
    if not rows:
        raise FileNotFoundError(f"no results.jsonl below {', '.join(map(str, dirs))}; give tstitch run directories")
    out = [rows[k] for k in sorted(rows, key=lambda k: (k[0], [-f for f in k[1][::-1]]))]
    report.add_speedups(out)  # a speedup measured within its own run stands; else against the setting's alone row
    return out, names or [f"member {k}" for k in range(len(out[0]["fractions"]))], label


def output_dir(out, dirs):
    """The report's directory: ``out``, or a new ``outputs/report/<time>``; never a run's directory."""
    path = Path(out) if out else Path("outputs") / "report" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if (path / "results.jsonl").exists() and not (path / MARK).exists():
        raise ValueError(f"{path} holds a run's results; give the report its own directory (--out ...)")
    return path


def main(argv=None):
    from tstitch import report
    from tstitch.files import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="run, multirun or W&B directories")
    p.add_argument("--out", help="where the table and plot go (default: a new outputs/report/<time>)")
    args = p.parse_args(argv)
    skipped, problem = [], None
    try:
        out = output_dir(args.out, args.dirs)
        rows, names, label = collect(args.dirs, skipped)
    except (FileNotFoundError, ValueError) as e:
        problem = e
    for line in skipped:
        print(f"tstitch-report: skipped {line}", file=sys.stderr)
    if problem is not None:
        print(f"tstitch-report: error: {problem}", file=sys.stderr)
        sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    report.write_table(rows, names, out, label)
    report.tradeoff_plot(rows, names, out / "tradeoff.png", paper_label=label)
    write_json(out / MARK, {"sources": [str(Path(d).absolute()) for d in args.dirs], "skipped": skipped,
                            "runs": sorted({r["run"] for r in rows}), "made": datetime.now().isoformat()})
    print(report.markdown(rows, names, label))
    print(f"\n{len(rows)} allocations from {len({r['run'] for r in rows})} runs"
          + (f" ({len(skipped)} skipped)" if skipped else "") + f"; report in {out}")
    sys.exit(1 if skipped else 0)


if __name__ == "__main__":
    main()
