"""A table cell: a value as text (times in one unit per column), and its interval."""
from tstitch import metrics
from tstitch.jobs.report.keys import FOOTPRINT, PAPER_ONLY, TIMES, spreads


def time_unit(values):
    """One unit for a whole column or axis of times: ``ms`` when every value is under a second, else ``s``."""
    values = [v for v in values if v is not None]
    return "ms" if values and max(values) < 1 else "s"


def fmt(key, value, unit=None):
    """A table cell; times (seconds) in ``unit`` (``ms`` or ``s``; default: ``time_unit`` of the value alone)."""
    if value is None:
        return "-"
    if key == "setting":
        return str(value)
    if key in ("fractions", "nfe"):
        return " : ".join(f"{v:g}" for v in value)
    if key in TIMES:
        return f"{value * 1000:.2f} ms" if (unit or time_unit([value])) == "ms" else f"{value:.4g} s"
    if key in ("speedup", "speedup_p25", "speedup_p75"):
        return f"{value:.2f}x"
    if key == "timing_flag":
        return str(value)
    if key in dict(FOOTPRINT) or key in dict(PAPER_ONLY):
        return f"{value:.4g}"
    if key.startswith("paper_"):
        return fmt(key.removeprefix("paper_"), value)
    value_spec = metrics.values().get(key)
    return value_spec.fmt(value) if value_spec is not None else f"{value:.2f}"


def interval(key, row, unit=None):
    """The ends of ``row``'s interval of ``key`` as text (``spreads``: quartiles of times and speedups, the FD/FID
    bootstrap's p5-p95), or None where the row has none."""
    lo, hi = (row.get(k) for k in spreads().get(key, ("", "")))
    if lo is None or hi is None or lo == hi == row.get(key):  # e.g. the baseline's own speedup, 1 in every round
        return None
    if key in TIMES:
        scale = 1000 if unit == "ms" else 1
        return [f"{v * scale:.{2 if scale == 1000 else 3}f}" for v in (lo, hi)]
    if key == "speedup":
        return [f"{v:.2f}" for v in (lo, hi)]
    return [metrics.values()[key].fmt(v) for v in (lo, hi)]


def cell(key, row, unit=None):
    """A markdown cell: the value, and its interval in brackets where the row has one (``interval``)."""
    text, ends = fmt(key, row.get(key), unit), interval(key, row, unit)
    return text if ends is None else f"{text} ({ends[0]}-{ends[1]})"
