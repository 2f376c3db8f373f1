"""The speed-quality plots: a run's trade-off (quality against the fraction and the measured time) and the
allocation search's frontier."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tstitch import metrics  # noqa: E402
from tstitch.jobs.report.cells import fmt, time_unit  # noqa: E402
from tstitch.jobs.report.keys import SPREADS, axis, spread_label, spreads  # noqa: E402
from tstitch.jobs.report.labels import place_labels  # noqa: E402


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
