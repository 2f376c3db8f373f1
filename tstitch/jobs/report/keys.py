"""The results table's columns: their keys and labels (the run's own, each metric's values, the members'
records, the paper's), which of them carry an interval, and which of them results.md shows."""
from tstitch import metrics

BEFORE = [("setting", "setting"), ("fractions", "fractions"), ("nfe", "NFE per member"), ("s_per_image", "s/image"),
          ("s_per_image_p25", "s/image p25"), ("s_per_image_p75", "s/image p75"),
          ("predicted_s_per_image", "predicted s/image"), ("speedup", "speedup"), ("speedup_p25", "speedup p25"),
          ("speedup_p75", "speedup p75"), ("timing_flag", "timing")]  # then the metrics', then the paper
SPREADS = {"s_per_image": ("s_per_image_p25", "s_per_image_p75"), "speedup": ("speedup_p25", "speedup_p75")}
# what a row records of its members (tstitch.jobs.footprint): per-member lists, then the row's peak memory
RECORDS = ("params", "encoder_params", "param_bytes", "storage_bytes", "peak_memory_bytes")
# the paper's Table 8 columns, from a row's records (``footprint_of``): key, label
FOOTPRINT = (("params_m", "parameters (M)"), ("encoder_params_m", "encoder parameters (M)"),
             ("weights_mb", "weights (MiB)"), ("storage_mb", "storage (MiB)"), ("peak_memory_mb", "peak memory (MiB)"))
PAPER_ONLY = (("s_per_8_images", "s / 8 images"),)  # paper values with no column of ours: DiT's time of 8 images
TIMES = ("s_per_image", "predicted_s_per_image", "s_per_image_p25", "s_per_image_p75")


def paper_keys():
    """(key, label) of every value a paper curve may hold besides ``values``: a metric's value, the time per
    image, a footprint column, a paper-only one."""
    ends = {k for v in metrics.values().values() if v.spread for k in v.spread}
    return [*((v.key, v.label) for v in metrics.values().values() if v.key not in ends), ("s_per_image", "s/image"),
            *FOOTPRINT, *PAPER_ONLY]


def columns():
    """(key, label) of every table column: the run's own, each metric's values (``tstitch.metrics.values``), the
    members' records, the paper's (``paper_<key>``, then ``paper``: the experiment's headline, always last)."""
    return [*BEFORE, *((v.key, v.label) for v in metrics.values().values()), *((k, k) for k in RECORDS),
            *((f"paper_{k}", f"paper {h}") for k, h in paper_keys()), ("paper", "paper")]


def spreads():
    """``{key: (low key, high key)}`` of every value shown with its interval: times and speedups (quartiles of the
    timing rounds), metric values with a ``spread`` (the FD/FID bootstrap's p5-p95)."""
    return {**SPREADS, **{k: v.spread for k, v in metrics.values().items() if v.spread}}


def spread_label(key):
    """``p25-p75`` or ``p5-p95``: what a value's interval is, from its ends' keys."""
    lo, hi = spreads()[key]
    return f"{lo.rsplit('_', 1)[1]}-{hi.rsplit('_', 1)[1]}"


def axis(key):
    """A plot axis label: a metric value's label and direction, e.g. ``FD (lower is better)``."""
    value = metrics.values().get(key)
    return value.axis if value is not None else key


def spread_shown(key, rows):
    """Whether a column's header names its interval: some row has the interval's low end."""
    return key in spreads() and any(r.get(spreads()[key][0]) is not None for r in rows)


def shown(rows, paper_label=None):
    """(key, label) of the columns results.md shows: those some row has, intervals in their value's cell, a paper
    value ``paper_<key>`` only where some row has our ``key`` beside it; not the members' records and the footprint
    (``footprint_markdown``)."""
    hidden = {k for pair in spreads().values() for k in pair} | set(RECORDS)
    hidden |= {f"paper_{k}" for k, _ in (*FOOTPRINT, *PAPER_ONLY)}
    return [(k, paper_label if k == "paper" and paper_label else h) for k, h in columns()
            if k not in hidden and any(r.get(k) is not None for r in rows)
            and (not k.startswith("paper_") or any(r.get(k.removeprefix("paper_")) is not None for r in rows))]
