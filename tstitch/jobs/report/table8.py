"""footprint.md: the paper's Table 8 of a run's rows (parameters, weights, storage and peak memory of the members
a row calls), from the records the rows keep of their members (``tstitch.jobs.footprint``)."""
from tstitch.jobs.report.cells import fmt, time_unit
from tstitch.jobs.report.keys import FOOTPRINT, PAPER_ONLY


def footprint_of(row):
    """A row's Table 8 values from its records (``tstitch.jobs.footprint``): the parameters (M), their bytes as
    loaded and the checkpoints' storage (MiB) of the members the row calls (NFE > 0; None where one of them is
    unknown), and its peak memory (MiB; None off a GPU)."""
    used = [i for i, n in enumerate(row.get("nfe") or []) if n]

    def total(key, scale):
        values = row.get(key) or []
        picked = [values[i] if i < len(values) else None for i in used]
        return None if not picked or any(v is None for v in picked) else sum(picked) / scale

    peak = row.get("peak_memory_bytes")
    return {"params_m": total("params", 1e6), "encoder_params_m": total("encoder_params", 1e6),
            "weights_mb": total("param_bytes", 2 ** 20), "storage_mb": total("storage_bytes", 2 ** 20),
            "peak_memory_mb": None if peak is None else peak / 2 ** 20}


def footprint_markdown(rows, members):
    """The paper's Table 8 for ``rows``: per allocation the parameters, weights (bytes as loaded) and storage of the
    members it calls, its peak memory and time, then the paper's values of these where the config has them
    (``paper_<key>``). Weights and storage in MiB (the paper's MB: 2576 MB for DiT-XL/2's 675M float32
    parameters); a column no row has is left out."""
    table = [{**r, **footprint_of(r)} for r in rows]
    cols = [("setting", "setting"), ("fractions", "fractions (" + " : ".join(members) + ")"), *FOOTPRINT,
            ("s_per_image", "s/image"), *((f"paper_{k}", f"paper {h}") for k, h in (*FOOTPRINT, *PAPER_ONLY))]
    cols = [(k, h) for k, h in cols if any(r.get(k) is not None for r in table)]
    unit = time_unit([r.get("s_per_image") for r in table])
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(k, r.get(k), unit) for k, _ in cols) + " |" for r in table]
    return "\n".join(lines)
