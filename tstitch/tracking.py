"""W&B through Lightning's ``WandbLogger``: offline by default (files under ``<run dir>/wandb``, upload later
with ``wandb sync``), online when ``logger.mode=online``, nothing at all with ``logger=none``.

A run logs its resolved config, one metrics step per allocation, a ``results`` table (every row field, so that
``tstitch-report`` can rebuild the table from an offline run alone), the sample grid and the trade-off plot.
"""
import json
import os
from pathlib import Path

TABLE = "results"


def wandb_logger(logger_cfg, out_dir):
    """A ``WandbLogger`` writing under ``out_dir``, or None when ``logger_cfg.mode`` is ``disabled``."""
    if logger_cfg is None or logger_cfg.get("mode", "disabled") == "disabled":
        return None
    if logger_cfg.mode not in ("offline", "online"):
        from tstitch.errors import ConfigError

        raise ConfigError(f"logger.mode must be offline, online or disabled, not {logger_cfg.mode!r}")
    os.environ.setdefault("WANDB_SILENT", "true")
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project=logger_cfg.project, entity=logger_cfg.get("entity"), save_dir=str(out_dir),
                         offline=logger_cfg.mode == "offline")
    logger._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which wandb >= 0.19 warns about
    return logger


def cell(value):
    """A table cell: lists and dicts as JSON text (W&B tables hold scalars)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def log_results(logger, config, rows, members, summary=None, images=()):
    """Log one run: ``config`` (resolved), ``rows`` (one dict per allocation), ``members`` (names, first runs
    first), ``summary`` (extra run-level values) and ``images`` (paths of PNGs, logged under their stem)."""
    if logger is None:
        return
    logger.log_hyperparams(config)
    for step, r in enumerate(rows):
        logger.log_metrics({"fraction_first": r["fractions"][0],
                            **{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}},
                           step=step)
    columns = sorted({k for r in rows for k in r})
    logger.log_table(TABLE, columns=["members"] + columns,
                     data=[[json.dumps(members)] + [cell(r.get(k)) for k in columns] for r in rows])
    for path in images:
        if Path(path).exists():
            logger.log_image(Path(path).stem, [str(path)])
    logger.experiment.summary.update({"members": members, **(summary or {})})
    logger.experiment.finish()


def read_offline(run_dir):
    """(rows, members) from the last ``results`` table of a W&B run directory (``wandb/offline-run-*``)."""
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
        rows.append(row)
    return rows, members
