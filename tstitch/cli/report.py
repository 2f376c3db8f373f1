"""`tstitch-report runs=DIR [out=OUT]` (several: ``runs=[A,B]``): one table and one trade-off plot from many runs,
written into OUT (a new ``outputs/report/<time>`` when not given), never into the runs it reads. The spelling of
before, ``tstitch-report DIR [DIR ...] [--out OUT]``, still runs (``tstitch.cli.spelling``).

A DIR may hold `tstitch` or `tstitch-generate` run directories (a Hydra multirun, or single runs: each has a
results.jsonl) and W&B run directories (``wandb/offline-run-*``, read from their logged results table, e.g.
offline runs copied from a cluster). A run that cannot be read (a truncated results.jsonl, a malformed row, a
damaged run.json) is skipped with one line, and each job a multirun's ``multirun.yaml`` names that has no
results.jsonl (not finished, or failed) is one line; the others are reported. The exit code is 1 when anything
was skipped or missing, 2 when nothing could be reported, 0 otherwise."""
import itertools
import json
import logging
import math
import sys
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import ListConfig, OmegaConf

from tstitch.cli import CONF, entry_point, guard
from tstitch.cli.spelling import translate
from tstitch.errors import ConfigError

log = logging.getLogger(__name__)

MARK = "report.json"  # what tells a report's directory from a run's


class Unreadable(Exception):
    """A run directory whose results cannot be read; the message says which file and why."""


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_row(row, where, size=None):
    """Refuse a row the table could not show (``Unreadable``, naming ``where``): fractions that are not a list of
    numbers in [0, 1] (``size`` of them, when known), a column of the wrong type (text, a per-member list or a
    number)."""
    from tstitch.jobs import report

    if not isinstance(row, dict) or not isinstance(row.get("fractions"), list):
        raise Unreadable(f"{where} is not a results row (no fractions)")
    fractions = row["fractions"]
    if not fractions or not all(_number(f) and 0 <= f <= 1 for f in fractions):
        raise Unreadable(f"{where} is not a results row (fractions {json.dumps(fractions)} are not numbers in [0, 1])")
    if size is not None and len(fractions) != size:
        raise Unreadable(f"{where} has {len(fractions)} fractions for the run's {size} members")
    for key, _ in report.columns():
        value = row.get(key)
        if value is None or key == "fractions":
            continue
        if key in ("setting", "timing_flag"):
            ok, want = isinstance(value, str), "text"
        elif key == "nfe":
            ok, want = isinstance(value, list) and all(_number(v) for v in value), "a list of numbers"
        elif key in report.LISTS:  # the members' records: None where one is unknown (tstitch.jobs.footprint)
            ok = isinstance(value, list) and all(v is None or _number(v) for v in value)
            want = "a list of numbers or nulls"
        else:
            ok, want = _number(value), "a finite number"
        if not ok:
            raise Unreadable(f"{where} is not a results row ({key} is {json.dumps(value)[:40]}, not {want})")


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
        rows.append(row)
    if not rows:
        raise Unreadable(f"{path} holds no rows")
    run = {}
    if (path.parent / "run.json").exists():
        try:
            run = json.loads((path.parent / "run.json").read_text())
        except ValueError:
            raise Unreadable(f"{path.parent / 'run.json'} is not valid JSON") from None
    members = run.get("members") if isinstance(run, dict) else None
    size = len(members) if isinstance(members, list) and members else None
    for k, row in enumerate(rows, 1):
        check_row(row, f"{path} line {k}", size)
        size = len(row["fractions"])  # every row of a run has as many fractions as the first
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
    from tstitch.jobs import tracking

    for table in sorted(Path(d).rglob(f"files/media/table/{tracking.TABLE}_*.table.json")):
        run = table.parents[3]
        if (run.parents[1] / "results.jsonl").exists():  # <run dir>/wandb/<run>: the run dir's own table stands
            continue
        try:
            rows, names = tracking.read_offline(run)
            for k, row in enumerate(rows, 1):
                check_row(row, f"{run}: its W&B results table, row {k},", len(names) if names else None)
        except (ValueError, KeyError, TypeError) as e:
            skipped.append(f"{run}: its W&B results table is unreadable ({type(e).__name__})")
            continue
        except Unreadable as e:
            skipped.append(str(e))
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
    from tstitch.jobs import report

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


def missing_jobs(dirs):
    """One line for each job of each Hydra multirun below ``dirs`` (its ``multirun.yaml``) that has no
    results.jsonl: not started, not finished, or failed. Jobs are matched to their directories by their overrides
    (``.hydra/overrides.yaml``), as Hydra's basic sweeper expands them; other sweepers are not checked."""
    lines = []
    for spec in sorted(p for d in dirs for p in Path(d).rglob("multirun.yaml")):
        try:
            jobs, swept = _jobs(spec)
        except Exception as e:  # noqa: BLE001 - YAML and override parsing raise many types
            lines.append(f"{spec}: cannot tell which jobs the multirun has ({type(e).__name__}); check it by hand")
            continue
        found = {}
        for overrides in spec.parent.rglob(".hydra/overrides.yaml"):
            try:
                found[frozenset(str(o) for o in OmegaConf.load(overrides))] = overrides.parents[1]
            except Exception:  # noqa: BLE001 - a damaged record: the job counts as missing
                continue
        for num, job in enumerate(jobs):
            run = found.get(frozenset(job))
            if run is None or not (run / "results.jsonl").exists():
                what = " ".join(o for o in job if o.split("=", 1)[0] in swept) or " ".join(job)
                where = f" in {run}" if run is not None else ""
                lines.append(f"{spec.parent}: job {num} of {len(jobs)} ({what}) has no results.jsonl{where} (not "
                             "finished, or failed); wait for it, or run that job again")
    return lines


def _jobs(spec):
    """(the jobs of the multirun ``spec`` as lists of overrides, in Hydra's job order; the swept keys), or ([], ())
    for a sweeper other than Hydra's basic one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(spec)
    if not str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).endswith("BasicSweeper"):
        return [], ()
    params = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    task = [str(o) for o in cfg.hydra.overrides.task]
    choices, swept = {}, set()
    for o in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + task):
        key = o.get_key_element()
        if o.is_sweep_override():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            swept.add(key)
        else:
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())], swept


def output_dir(out):
    """The report's directory ``out`` (Path), refused when it is a run's directory."""
    path = Path(out)
    if (path / "results.jsonl").exists() and not (path / MARK).exists():
        raise ConfigError(f"{path} holds a run's results; give the report its own directory (out=...)")
    return path


def run_dirs(cfg):
    """The directories of ``runs=`` (one path or a list), as strings."""
    if OmegaConf.is_missing(cfg, "runs"):
        raise ConfigError("give runs=DIR (a run, multirun or W&B directory), or several: runs=[DIR,DIR]")
    runs = cfg.runs
    runs = list(runs) if isinstance(runs, ListConfig) else [runs]
    bad = [r for r in runs if isinstance(r, bool) or not isinstance(r, (str, int))]
    if not runs or bad:
        raise ConfigError(f"runs={OmegaConf.to_container(cfg, resolve=True)['runs']} is not a directory or a list "
                          "of them; give runs=DIR or runs=[DIR,DIR] (quote a path Hydra would read otherwise: "
                          "runs='...')")
    return [str(r) for r in runs]


def gather(dirs, out):
    """(rows, member names, paper label, skipped, missing) of the runs below ``dirs``; when nothing can be
    reported (or ``out`` is a run's directory), the skipped and missing runs' lines go to stderr first and a
    ConfigError says why."""
    skipped, problem = [], None
    missing = missing_jobs(dirs)
    try:
        output_dir(out)
        rows, names, label = collect(dirs, skipped)
    except (FileNotFoundError, ValueError, ConfigError) as e:
        problem = e
    if problem is not None:
        say(skipped, missing)
        raise ConfigError(str(problem))
    return rows, names, label, skipped, missing


def say(skipped, missing):
    for line in skipped:
        print(f"tstitch-report: skipped {line}", file=sys.stderr)
    for line in missing:
        print(f"tstitch-report: missing {line}", file=sys.stderr)


@hydra.main(version_base=None, config_path=CONF, config_name="report")
@guard
def main(cfg):
    from tstitch.files import write_json
    from tstitch.jobs import report

    dirs = run_dirs(cfg)
    shown = HydraConfig.get().run.dir  # ``out`` as given (relative stays relative); Hydra made it
    out = output_dir(HydraConfig.get().runtime.output_dir)
    rows, names, label, skipped, missing = gather(dirs, out)
    say(skipped, missing)
    report.write_table(rows, names, out, label)
    report.tradeoff_plot(rows, names, out / "tradeoff.png", paper_label=label)
    write_json(out / MARK, {"sources": [str(Path(d).absolute()) for d in dirs], "skipped": skipped,
                            "missing": missing, "runs": sorted({r["run"] for r in rows}),
                            "made": datetime.now().isoformat()})
    log.info(report.markdown(rows, names, label))
    lacking = ", ".join(f"{len(v)} {k}" for k, v in (("skipped", skipped), ("missing", missing)) if v)
    log.info(f"\n{len(rows)} allocations from {len({r['run'] for r in rows})} runs"
             + (f" ({lacking})" if lacking else "") + f"; report in {shown}")
    sys.exit(1 if skipped or missing else 0)


def check(cfg, argv):
    """Before Hydra makes ``out`` (and its log): the runs are given and hold something to report, and ``out`` is
    not a run's directory."""
    from tstitch.cli import run_dir_of

    gather(run_dirs(cfg), run_dir_of(argv) or cfg.out)


OLD_FLAGS = {"--out": "out"}  # tstitch-report DIR [DIR ...] [--out OUT], the spelling before key=value


def entry():
    sys.argv[1:] = translate("tstitch-report", sys.argv[1:], OLD_FLAGS, paths={"out"}, bare_key="runs")
    entry_point(main, "report", after=check)()


if __name__ == "__main__":
    entry()
