"""Outputs of a sweep: the table (markdown, CSV, JSON lines, LaTeX), the members' footprint (footprint.md, the paper's
Table 8), an image grid and the speed-quality plot.

The paper's values (an experiment's ``paper`` block, ``add_paper``) sit beside ours: ``values`` (of the block's
``metric``) as the ``paper`` column, and any other list of a curve, named by the key of one of our columns
(``precision``, ``recall``, ``isc``, ``s_per_image``, a footprint key such as ``params_m``, or ``s_per_8_images``,
the paper's DiT timing), as ``paper_<key>``, labelled "paper <our label>"; in results.md a ``paper_<key>`` column shows
where we have that key too, the footprint's ones in footprint.md."""
import csv
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from tstitch import metrics  # noqa: E402
from tstitch.files import write_json, write_jsonl  # noqa: E402
from tstitch.jobs.columns import LISTS, flat, member_names, unflat  # noqa: F401 (report.flat etc.)

BEFORE = [("setting", "setting"), ("fractions", "fractions"), ("nfe", "NFE per member"), ("s_per_image", "s/image"),
          ("s_per_image_p25", "s/image p25"), ("s_per_image_p75", "s/image p75"),
          ("predicted_s_per_image", "predicted s/image"), ("speedup", "speedup"), ("speedup_p25", "speedup p25"),
          ("speedup_p75", "speedup p75"), ("timing_flag", "timing")]  # then the metrics', then the paper
SPREADS = {"s_per_image": ("s_per_image_p25", "s_per_image_p75"), "speedup": ("speedup_p25", "speedup_p75")}
RESULT_FILES = ("results.md", "results.csv", "results.jsonl", "results.tex", "footprint.md", "run.json",
                "manifest.json")
# what a row records of its members (tstitch.jobs.footprint): per-member lists, then the row's peak memory
RECORDS = ("params", "encoder_params", "param_bytes", "storage_bytes", "peak_memory_bytes")
# the paper's Table 8 columns, from a row's records (``footprint_of``): key, label
FOOTPRINT = (("params_m", "parameters (M)"), ("encoder_params_m", "encoder parameters (M)"),
             ("weights_mb", "weights (MiB)"), ("storage_mb", "storage (MiB)"), ("peak_memory_mb", "peak memory (MiB)"))
PAPER_ONLY = (("s_per_8_images", "s / 8 images"),)  # paper values with no column of ours: DiT's time of 8 images


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


TIMES = ("s_per_image", "predicted_s_per_image", "s_per_image_p25", "s_per_image_p75")


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


def add_speedups(rows, within=lambda row: row.get("setting")):
    """Each row's speedup against the row of the last member alone with the same ``within`` (e.g. the setting of a
    multirun over solvers), where the row has none measured in its own run; None without such a row."""
    for r in rows:
        if r.get("speedup") is not None or not r.get("s_per_image"):
            continue
        base = next((b for b in rows if within(b) == within(r) and b["fractions"][-1] == 1.0
                     and b.get("s_per_image")), None)
        r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None
    return rows


def write_run(out, rows, names, config, facts, logger_cfg, grids=(), grid_labels=(), title=None, columns=None,
              plot=True):
    """What every run writes into its directory ``out`` (the main job's and ``tstitch-generate``'s): the table
    (``results.{md,csv,jsonl,tex}``, with the paper's column where the config has one), ``run.json`` (members,
    ``facts``, config), ``grid.png`` of ``grids`` (one row each, ``grid_labels``; ``title`` and ``columns`` as
    ``image_grid``), the trade-off plot (``plot``) and the W&B run (``logger_cfg``; with the files as artifacts,
    samples.npz where there is one, see ``tracking``). Returns the paper column's label or None."""
    from tstitch.jobs import tracking

    label = add_paper(rows, config)
    write_table(rows, names, out, label)
    write_json(Path(out) / "run.json", {"members": names, **facts, "config": config})
    images = []
    if len(grids):
        image_grid(grids, Path(out) / "grid.png", list(grid_labels), title=title, columns=columns)
        images.append(Path(out) / "grid.png")
    if plot and tradeoff_plot(rows, names, Path(out) / "tradeoff.png", paper_label=label) is not None:
        images.append(Path(out) / "tradeoff.png")
    allocations = [r["fractions"] for r in rows]
    tracking.log_results(tracking.wandb_logger(logger_cfg, out, allocations), config, rows, names, facts, images,
                         {"results": [Path(out) / f for f in RESULT_FILES], "samples": [Path(out) / "samples.npz"]})
    return label


def lookup(config, dotted):
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def add_paper(rows, config):
    """Put the paper's values beside each row from the run config's ``paper`` block: of the first curve whose
    ``match`` (dotted config keys) fits the run, at the row's fraction of the first member, ``values`` (the block's
    ``metric``) as ``row["paper"]`` and each other list of the curve (``paper_keys``; null where the paper has no
    value) as ``row["paper_<key>"]``. Returns the ``paper`` column's label, or None when the config has no paper
    block."""
    paper = (config or {}).get("paper")
    if not paper:
        return None
    curve = next((c for c in paper["curves"] if all(lookup(config, k) == v for k, v in c.get("match", {}).items())),
                 None)
    lists = {k: v for k, v in (curve or {}).items() if k not in ("match", "first")}
    for r in rows:
        for key, values in lists.items():
            value = next((v for f, v in zip(curve["first"], values) if abs(f - r["fractions"][0]) < 1e-6), None)
            if value is None:
                continue
            if key == "values":
                r["paper"], r["paper_metric"] = value, paper["metric"]
            else:
                r[f"paper_{key}"] = value
    return paper.get("label", "paper")


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


def markdown(rows, members, paper_label=None):
    """The table for people: times, speedups and FD/FID with their intervals in brackets (the CSV and JSON lines
    have them as their own columns), the timing column only where a row is flagged."""
    cols = shown(rows, paper_label)
    head = [h.replace("fractions", "fractions (" + " : ".join(members) + ")") for _, h in cols]
    head = [f"{h} ({spread_label(k)})" if spread_shown(k, rows) else h for (k, _), h in zip(cols, head)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    units = {k: time_unit([r.get(k) for r in rows]) for k in TIMES}  # one unit per column
    lines += ["| " + " | ".join(cell(k, r, units.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


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


def write_table(rows, members, out_dir, paper_label=None):
    """The table of ``rows`` (``members``: the names of the fractions' members) in ``out_dir``: results.md (for
    people), results.jsonl (the rows as they are: ``fractions``, ``nfe`` and the records' lists), results.csv
    (numbers only: one column per member for each list, ``fraction_<member>``, ``nfe_<member>``,
    ``params_<member>``, ...; every interval end its own column), results.tex (``latex``) and, where the rows
    recorded their members, footprint.md (``footprint_markdown``)."""
    out_dir = Path(out_dir)
    (out_dir / "results.md").write_text(markdown(rows, members, paper_label) + "\n")
    if any(r.get("params") for r in rows):  # runs that recorded their members (not those made before)
        (out_dir / "footprint.md").write_text(footprint_markdown(rows, members) + "\n")
    (out_dir / "results.tex").write_text(latex(rows, members, paper_label))
    write_jsonl(out_dir / "results.jsonl", rows)
    names = member_names(members, rows)
    keys = [k for k, _ in columns() if any(k in r for r in rows)]
    keys = [c for k in keys for c in ([f"{LISTS[k]}_{m}" for m in names] if k in LISTS else [k])]
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            r = flat(r, names)
            w.writerow([r.get(k) for k in keys])


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text):
    """``text`` with LaTeX's special characters escaped (``_``, ``%``, ``&``, ...), for a member's name, say."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def latex(rows, members, paper_label=None):
    """The table as a booktabs ``tabular`` for a paper (``\\input{results.tex}`` in a ``table``; needs
    ``\\usepackage{booktabs}``): a column per member for the fractions and for the NFE (grouped under one header
    each), then the columns of ``markdown`` (times in one unit per column, named in the header), each value with
    its interval in brackets (quartiles of the timing rounds, the FD/FID bootstrap's p5-p95)."""
    names = member_names(members, rows)
    paper = [(k, h) for k, h in shown(rows, paper_label) if k == "paper" or k.startswith("paper_")]
    cols = [(k, h) for k, h in shown(rows, paper_label) if k != "timing_flag" and (k, h) not in paper]
    cols += paper  # the paper's columns last
    units = {k: time_unit([r.get(k) for r in rows]) for k in TIMES}
    head, groups, spec = [], [], []
    for k, h in cols:
        if k in LISTS:
            groups.append((len(head) + 1, len(head) + len(names), "fraction of steps" if k == "fractions" else h))
            head += [tex(m) for m in names]
            spec += ["r"] * len(names)
            continue
        label = h.replace("s/image", f"{units[k]}/image") if k in TIMES else h
        head.append(tex(label) + (f" ({spread_label(k)})" if spread_shown(k, rows) else ""))
        spec.append("l" if k == "setting" else "r")

    def cells(r):
        out = []
        for k, _ in cols:
            if k in LISTS:
                values = (r.get(k) or [])[:len(names)]
                out += [f"{v:g}" for v in values] + ["--"] * (len(names) - len(values))
                continue
            value, ends = r.get(k), interval(k, r, units.get(k))
            if value is None:
                out.append("--")
                continue
            text = tex(fmt(k, value, units.get(k)))
            if k in TIMES:  # the unit is in the header
                text = text.removesuffix(f" {units[k]}")
            elif k == "speedup":
                text = text.removesuffix("x") + r"$\times$"
            out.append(text + (f" ({tex(ends[0])}--{tex(ends[1])})" if ends else ""))
        return out

    lines = [f"% T-Stitch {' : '.join(names)}, written by tstitch (tstitch.jobs.report.latex)",
             "\\begin{tabular}{" + "".join(spec) + "}", "\\toprule"]
    if groups:
        top = []
        for k in range(1, len(head) + 1):
            g = next((g for g in groups if g[0] == k), None)
            if g is not None:
                top.append(f"\\multicolumn{{{g[1] - g[0] + 1}}}{{c}}{{{tex(g[2])}}}")
            elif not any(g[0] <= k <= g[1] for g in groups):
                top.append("")
        lines.append(" & ".join(top) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for a, b, _ in groups))
    lines += [" & ".join(head) + " \\\\", "\\midrule"]
    lines += [" & ".join(cells(r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def class_names(classes):
    """The names of a zoo entry's labels from its ``classes`` key (``fashion-mnist``, ``imagenet-1k``), or None."""
    if classes == "fashion-mnist":
        from torchvision.datasets import FashionMNIST

        return list(FashionMNIST.classes)
    if classes == "imagenet-1k":  # the first of each class's synonyms
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    return None


def column_labels(labels, classes=None, prompts=None):
    """A grid's column labels: the prompts (``labels`` index ``prompts`` or are the texts), else the class names
    of ``classes`` (see ``class_names``), else the class numbers."""
    labels = [v.item() if hasattr(v, "item") else v for v in labels]
    if prompts is not None or any(isinstance(v, str) for v in labels):
        return [v if isinstance(v, str) else prompts[int(v)] for v in labels]
    names = class_names(classes)
    return [names[int(v)] if names and int(v) < len(names) else f"class {int(v)}" for v in labels]


def image_grid(grids, path, labels=None, title=None, columns=None):
    """One row per allocation (the same seeds in every column) from uint8 NCHW tensors, as a PNG: ``labels`` on
    the left of the rows, a header row above them: ``title`` (e.g. which member is which) and ``columns`` (one label
    per column: class names or prompts, see ``column_labels``). Returns the (closed) figure."""
    rows = [np.concatenate(list(g.permute(0, 2, 3, 1).numpy()), axis=1) for g in grids]
    width = max(r.shape[1] for r in rows)
    img = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    h, cell = rows[0].shape[0], grids[0].shape[-1]
    dpi, scale, size = 100, 2.5 if h < 64 else 1.0, 7  # small images drawn larger; font size in points
    inch = scale / dpi  # inches per image pixel
    names = []
    if columns:  # wrapped to the column's width (about 0.6 em per character), at most three lines
        chars = max(6, int(cell * inch * 72 / (0.6 * size)))
        names = ["\n".join(textwrap.wrap(str(c), chars)[:3]) for c in columns]
    header = (0.3 if title else 0.0) + (max(n.count("\n") + 1 for n in names) * size * 1.4 / 72 if names else 0.0)
    left, fig_w, fig_h = 1.2, 1.2 + img.shape[1] * inch + 0.1, header + img.shape[0] * inch + 0.1
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes([left / fig_w, 0.05 / fig_h, img.shape[1] * inch / fig_w, img.shape[0] * inch / fig_h])
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.xaxis.set_ticks_position("top")
    ax.set_xticks([cell * (j + 0.5) for j in range(len(names))], names, fontsize=size)
    ax.set_yticks([h * (i + 0.5) for i in range(len(rows))], labels or [""] * len(rows), fontsize=size + 1)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        fig.text(0.5, 1 - 0.05 / fig_h, title, ha="center", va="top", fontsize=size + 1)
    fig.savefig(path)
    plt.close(fig)
    return fig


# label positions tried around a point, in points: (dx, dy, horizontal, vertical alignment)
OFFSETS = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top"),
           (0, 7, "center", "bottom"), (0, -7, "center", "top"), (7, 0, "left", "center"), (-7, 0, "right", "center")]


def place_labels(ax, points, texts, fontsize=6):
    """Label data ``points`` with ``texts`` where a label overlaps no other label and no point and stays inside
    the axes (the first free position of ``OFFSETS``); a label with no free position is left out. Call it after
    the figure's layout is final. Returns the placed annotations."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 2.5 * ax.figure.dpi / 72  # a marker's radius in pixels
    taken = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in ax.transData.transform(points)]
    placed = []
    for point, text in zip(points, texts):
        for dx, dy, ha, va in OFFSETS:
            a = ax.annotate(text, point, textcoords="offset points", xytext=(dx, dy), ha=ha, va=va,
                            fontsize=fontsize)
            box = a.get_window_extent(renderer).padded(1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                placed.append(a)
                break
            a.remove()
    return placed


def _x(row):
    """Where a row sits on the fraction axis: the share of the steps before the last member (two members: the
    fraction of the first)."""
    return round(1 - row["fractions"][-1], 6)


def _y(row, q, scale):
    return row["s_per_image"] * scale if q == "s_per_image" else row[q]


def time_bars(rows, scale):
    """Error bars of the rows' times (their quartiles over the timing rounds) for matplotlib, or None when a row
    has no spread recorded (older runs)."""
    lo, hi = SPREADS["s_per_image"]
    if not rows or any(r.get(lo) is None or r.get(hi) is None for r in rows):
        return None
    return [[(r["s_per_image"] - r[lo]) * scale for r in rows], [(r[hi] - r["s_per_image"]) * scale for r in rows]]


def interval_lines(ax, xs, rows, key, color, label=None):
    """Each row's interval of the metric value ``key`` (the FD/FID bootstrap's p5-p95) as a vertical line at its
    x in ``xs``, its ends as they are: a bootstrap interval can lie above its value (``tstitch.metrics.fd_bootstrap``),
    which an error bar around the value could not show. Returns the lines, or None when no row has an interval."""
    lo, hi = getattr(metrics.values().get(key), "spread", None) or (None, None)  # times have their error bars
    have = [(x, r[lo], r[hi]) for x, r in zip(xs, rows) if lo and r.get(lo) is not None and r.get(hi) is not None]
    if not have:
        return None
    x, low, high = zip(*have)
    return ax.vlines(x, low, high, color=color, lw=1.5, alpha=0.45, label=label)


def tradeoff_plot(rows, members, path, qualities=None, paper_label=None):
    """One row of two panels per quality metric: the metric against the fraction of the steps before the last
    member (no timing noise in it; the paper's curve dashed beside ours) and against the measured time per image
    (points labelled with their fraction where the labels fit). One colour per setting (e.g. solver and steps of a
    multirun); the last member alone is a star. Times carry their quartiles as error bars, FD/FID its bootstrap
    interval as a vertical line (``interval_lines``). Without a quality metric, or when the paper's values are
    times, a panel of time against the fraction. Returns the (closed) figure, or None when no row has anything to
    plot."""
    settings = list(dict.fromkeys(r.get("setting") for r in rows))
    metric = next((r["paper_metric"] for r in rows if r.get("paper") is not None), None)
    if qualities is None:  # every metric value that is a quality (not a spread), in the metrics' order
        qualities = [k for k, v in metrics.values().items() if v.plot]
    qualities = [q for q in qualities if any(r.get(q) is not None for r in rows)]
    timed = [r for r in rows if r.get("s_per_image") is not None]
    panels = qualities + (["s_per_image"] if timed and (not qualities or metric == "s_per_image") else [])
    if not panels:
        return None
    unit = time_unit([r["s_per_image"] for r in timed])
    scale = 1000 if unit == "ms" else 1
    paper_panel = metric if metric in panels else panels[0] if metric is not None else None
    fig, axes = plt.subplots(len(panels), 2, figsize=(9.5, 3.4 * len(panels)), dpi=120, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = {}  # time panel -> (points, texts) of every setting, placed together once the layout is final
    for (left, right), q in zip(axes, panels):
        name = f"{unit} per image" if q == "s_per_image" else axis(q)
        paper_ax = None if q != paper_panel else left if metric == q else left.twinx()  # FD vs FID: own axis
        for k, st in enumerate(settings):
            color = colors[k % len(colors)]
            have = sorted((r for r in rows if r.get("setting") == st and r.get(q) is not None), key=_x)
            left.errorbar([_x(r) for r in have], [_y(r, q, scale) for r in have],
                          yerr=time_bars(have, scale) if q == "s_per_image" else None,
                          fmt="o-" if len(members) == 2 else "o", color=color, ms=4, capsize=2, label=st)
            interval_lines(left, [_x(r) for r in have], have, q, color,
                           f"{spread_label(q)} (bootstrap over the samples)" if k == 0 and q in spreads() and
                           q not in SPREADS else None)
            alone = [r for r in have if r["fractions"][-1] == 1]
            left.plot([_x(r) for r in alone], [_y(r, q, scale) for r in alone], "*", color=color, ms=11, mec="k",
                      mew=0.5, label=f"{members[-1]} alone" if k == 0 and alone else None)
            if paper_ax is not None:
                ours = [r for r in have if r.get("paper") is not None]
                paper = [r["paper"] * (scale if metric == "s_per_image" else 1) for r in ours]
                paper_ax.plot([_x(r) for r in ours], paper, "s--", color=color, ms=3, alpha=0.6,
                              label=f"{paper_label or 'paper'} (dashed)" if k == 0 else None)
            also = [r for r in have if r.get(f"paper_{q}") is not None]  # e.g. the paper's precision (Table 9)
            if also:
                left.plot([_x(r) for r in also], [r[f"paper_{q}"] * (scale if q == "s_per_image" else 1)
                                                   for r in also], "s--", color=color, ms=3, alpha=0.6,
                          label="paper (dashed)" if k == 0 else None)
            if q == "s_per_image":
                continue
            have = [r for r in have if r.get("s_per_image") is not None]
            right.errorbar([r["s_per_image"] * scale for r in have], [r[q] for r in have],
                           xerr=time_bars(have, scale), fmt="o", color=color, ms=4, capsize=2, label=st)
            interval_lines(right, [r["s_per_image"] * scale for r in have], have, q, color)
            alone = [r for r in have if r["fractions"][-1] == 1]
            right.plot([r["s_per_image"] * scale for r in alone], [r[q] for r in alone], "*", color=color, ms=11,
                       mec="k", mew=0.5)
            points, texts = labels.setdefault(right, ([], []))
            points += [(r["s_per_image"] * scale, r[q]) for r in have]
            texts += [fmt("fractions", r["fractions"][:1] if len(members) == 2 else r["fractions"]) for r in have]
        left.set_xlabel(f"fraction of steps on {members[0]}" if len(members) == 2
                        else f"fraction of steps before {members[-1]}")
        left.set_ylabel(name if paper_ax in (None, left) else f"ours (solid): {name}")
        handles, texts = left.get_legend_handles_labels()
        if paper_ax not in (None, left):
            paper_ax.set_ylabel(f"{paper_label or 'paper'} (dashed)", fontsize=8)
            handles, texts = [a + b for a, b in zip((handles, texts), paper_ax.get_legend_handles_labels())]
        left.legend(handles, texts, fontsize=6)
        left.grid(alpha=0.3)
        if q == "s_per_image":
            right.remove()
            continue
        right.set_xlabel(f"{unit} per image (measured)")  # bars: the quartiles of the timing rounds
        right.set_ylabel(name)
        right.grid(alpha=0.3)
    shown = f"fraction of {members[0]}" if len(members) == 2 else "fractions"
    fig.suptitle(f"T-Stitch {' -> '.join(members)}: against the fraction (left) and the measured time (right, "
                 f"labels: {shown})", fontsize=9)
    fig.tight_layout()
    for ax, (points, texts) in labels.items():
        place_labels(ax, points, texts)
    fig.savefig(path)
    plt.close(fig)
    return fig


def frontier_plot(candidates, confirmed, quality, members, path):
    """Allocation search: every candidate at its predicted time and small-set quality, their Pareto front, and
    the front confirmed on the larger seed set at measured time. Returns the (closed) figure."""
    unit = time_unit([r["predicted_s_per_image"] for r in candidates] + [r["s_per_image"] for r in confirmed])
    scale = 1000 if unit == "ms" else 1
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    ax.scatter([r["predicted_s_per_image"] * scale for r in candidates], [r[quality] for r in candidates], s=10,
               color="0.6", label="candidates (predicted time)")
    front = sorted((r for r in candidates if r["front"]), key=lambda r: r["predicted_s_per_image"])
    ax.plot([r["predicted_s_per_image"] * scale for r in front], [r[quality] for r in front], "o-", ms=4,
            color="tab:blue", label="front (small seed set)")
    final = sorted(confirmed, key=lambda r: r["s_per_image"])
    ax.errorbar([r["s_per_image"] * scale for r in final], [r[quality] for r in final],
                xerr=time_bars(final, scale), fmt="s--", ms=4, color="tab:red", capsize=2,
                label="confirmed (measured time, p25-p75)")
    ax.set_xlabel(f"{unit} per image")
    ax.set_ylabel(axis(quality))
    ax.set_title(f"allocations of {' : '.join(members)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    place_labels(ax, [(r["s_per_image"] * scale, r[quality]) for r in final],
                 [fmt("fractions", r["fractions"]) for r in final])
    fig.savefig(path)
    plt.close(fig)
    return fig
