"""W&B through Lightning's ``WandbLogger``: offline by default (files under ``<run dir>/wandb``, upload later
with ``wandb sync``), online when ``logger.mode=online``, nothing at all with ``logger=none``.

A run logs its resolved config (``stitch.fractions``: the allocations it ran), one metrics step per allocation, a
``results`` table, the sample grid and the trade-off plot (``wandb.Image``s, under ``grid`` and ``tradeoff``) and
its files as artifacts. It is named by its allocation(s), grouped by its sweep and tagged with its experiment and
command (``identity``); ``logger.name``, ``logger.group`` and ``logger.tags`` set them by hand.

The table has a column per field of the rows, numbers as numbers: ``fraction_<member>`` and ``nfe_<member>`` per
member (``report.flat``) and so the members' records (``params_<member>``, ``storage_bytes_<member>``, ...:
``tstitch.jobs.footprint``), the times and their quartiles, the peak memory, the metrics and their intervals, text
for ``setting`` and ``timing_flag``. ``read_offline`` rebuilds results.jsonl's rows from it (``tstitch-report`` on
offline runs alone, footprint.md included).

Artifacts (``log_files``): ``results-<run id>`` (type ``results``: results.{md,csv,jsonl,tex}, run.json,
manifest.json) and ``samples-<run id>`` (type ``samples``: ``tstitch-generate``'s samples.npz). A file of at most
``COPY_LIMIT`` (100 MiB) is copied into the artifact (staged under ``$WANDB_DATA_DIR``, uploaded by ``wandb sync``);
a larger one, a 50k sample set say (9.8 GB at 256 x 256), is recorded by reference (``file://<absolute path>``, with
its MD5, which W&B reads the file once to compute): nothing is copied or uploaded, and the path is only good on the
file system that holds it.
"""
import json
import os
from pathlib import Path

from tstitch.files import finite
from tstitch.jobs.columns import flat, member_names, unflat

TABLE = "results"
COPY_LIMIT = 100 * 2**20  # bytes: larger files go into an artifact by reference, not copied


def allocation_label(allocations):
    """``0.4:0.6`` for one allocation, ``0:1..1:0 x11`` for a sweep."""
    text = [":".join(f"{f:g}" for f in a) for a in allocations]
    return text[0] if len(text) == 1 else f"{text[0]}..{text[-1]} x{len(text)}"


def identity(allocations, hydra=None, env=os.environ):
    """The W&B run's ``name`` (its allocation(s); in a multirun also the job's own overrides, e.g. solver=ddim),
    ``group`` (a multirun: its sweep directory; a SLURM job array: its array job) and ``tags`` (the experiment of
    ``+experiment=...`` and the command), from Hydra's config of the running job (``HydraConfig.get()``)."""
    from hydra.types import RunMode

    from tstitch.errors import command

    name, group, tags = allocation_label(allocations), None, []
    if hydra is not None:
        if hydra.mode == RunMode.MULTIRUN:
            own = [o for o in hydra.overrides.task if not o.lstrip("+~").startswith(("stitch.fractions=", "hydra",
                                                                                        "experiment="))]
            name = " ".join([name, *own])
            group = str(hydra.sweep.dir)
        experiment = hydra.runtime.choices.get("experiment")
        tags = [experiment] if experiment else []
        tags.append(command(hydra.job.config_name))
    if group is None and env.get("SLURM_ARRAY_JOB_ID"):
        group = f"slurm-array-{env['SLURM_ARRAY_JOB_ID']}"
    return {"name": name, "group": group, "tags": tags}


def wandb_logger(logger_cfg, out_dir, allocations=None):
    """A ``WandbLogger`` writing under ``out_dir``, or None when ``logger_cfg.mode`` is ``disabled``; named,
    grouped and tagged by ``identity`` of ``allocations`` (the fraction vectors the run samples) and the running
    Hydra job, unless ``logger.name``/``group`` say otherwise (``logger.tags`` are added)."""
    if logger_cfg is None or logger_cfg.get("mode", "disabled") == "disabled":
        return None
    if logger_cfg.mode not in ("offline", "online"):
        from tstitch.errors import ConfigError

        raise ConfigError(f"logger.mode must be offline, online or disabled, not {logger_cfg.mode!r}")
    from hydra.core.hydra_config import HydraConfig

    run = identity(allocations, HydraConfig.get() if HydraConfig.initialized() else None)
    os.environ.setdefault("WANDB_SILENT", "true")
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project=logger_cfg.project, entity=logger_cfg.get("entity"), save_dir=str(out_dir),
                         offline=logger_cfg.mode == "offline", name=logger_cfg.get("name") or run["name"],
                         group=logger_cfg.get("group") or run["group"],
                         tags=[*run["tags"], *(logger_cfg.get("tags") or [])])
    logger._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which wandb >= 0.19 warns about
    return logger


def run_config(config, allocations):
    """The resolved config as the run ran it: ``stitch.fractions`` is its allocation, or the list of the
    allocations of its sweep (the composed value is only the default of ``sweep=null``)."""
    stitch = {**config["stitch"], "fractions": allocations[0] if len(allocations) == 1 else allocations}
    return {**config, "stitch": stitch}


def cell(value):
    """A table cell: lists and dicts (no field of today's rows) as JSON text, non-finite numbers as None."""
    return json.dumps(value) if isinstance(value, (list, dict)) else finite(value)


def column_type(values):
    """A W&B column's type from its cells (None allowed in every column): text, flag or number."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, str) for v in present):
        return str
    return bool if present and all(isinstance(v, bool) for v in present) else float


def results_table(rows, members):
    """The ``wandb.Table`` of ``rows``: one column per field of ``report.flat`` rows, typed (``column_type``)."""
    import wandb

    names = member_names(members, rows)
    flats = [flat(r, names) for r in rows]
    columns = list(dict.fromkeys(k for f in flats for k in f))
    data = [[cell(f.get(c)) for c in columns] for f in flats]
    return wandb.Table(columns=columns, data=data, dtype=[column_type(col) for col in zip(*data)] if data else None)


def log_results(logger, config, rows, members, summary=None, images=(), files=None, copy_limit=COPY_LIMIT):
    """Log one run: ``config`` (resolved), ``rows`` (one dict per allocation), ``members`` (names, first runs
    first), ``summary`` (extra run-level values), ``images`` (paths of PNGs, logged under their stem) and ``files``
    (``{artifact type: [paths]}``, see ``log_files``)."""
    if logger is None:
        return
    logger.log_hyperparams(config)
    for step, r in enumerate(rows):
        logger.log_metrics({"fraction_first": r["fractions"][0],
                            **{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}},
                           step=step)
    logger.experiment.log({TABLE: results_table(rows, members)})
    for path in images:
        if Path(path).exists():
            logger.log_image(Path(path).stem, [str(path)])
    log_files(logger.experiment, files or {}, copy_limit)
    logger.experiment.summary.update({"members": members, **(summary or {})})
    logger.experiment.finish()


def artifact(kind, name, paths, copy_limit=COPY_LIMIT):
    """A ``wandb.Artifact`` of type ``kind`` holding the existing ``paths``: copied when at most ``copy_limit``
    bytes, by reference (``file://``) when larger (see the module docstring); None when none exists."""
    import wandb

    paths = [Path(p) for p in paths if Path(p).is_file()]
    if not paths:
        return None
    a = wandb.Artifact(name, type=kind)
    for p in paths:
        if p.stat().st_size <= copy_limit:
            a.add_file(str(p), name=p.name)
        else:
            a.add_reference(p.resolve().as_uri(), name=p.name)
    return a


def log_files(run, files, copy_limit=COPY_LIMIT):
    """Log ``files`` (``{artifact type: [paths]}``) to the W&B ``run``, one artifact ``<type>-<run id>`` each."""
    for kind, paths in files.items():
        a = artifact(kind, f"{kind}-{run.id}", paths, copy_limit)
        if a is not None:
            run.log_artifact(a)


def read_offline(run_dir):
    """(rows, members) from the last ``results`` table of a W&B run directory (``wandb/offline-run-*``): the rows
    of the run's results.jsonl (fields that are null there are absent here), the members' names from the table's
    ``fraction_<member>`` columns. Tables of older runs (lists as JSON text, a ``members`` column) are read too."""
    tables = sorted(Path(run_dir).glob(f"files/media/table/{TABLE}_*.table.json"), key=os.path.getmtime)
    if not tables:
        return [], None
    t = json.loads(tables[-1].read_text())
    rows, members = [], None
    for values in t["data"]:
        row = {}
        for k, v in zip(t["columns"], values):
            if isinstance(v, str) and v[:1] in "[{":
                v = json.loads(v)
            if v is not None:
                row[k] = v
        members = row.pop("members", members)
        row, names = unflat(row)
        rows.append(row)
        members = names or members
    return rows, members
