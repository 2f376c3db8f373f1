"""Outputs of a sweep: the table (markdown, CSV, JSON lines), an image grid and the speed-quality plot."""
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tstitch.files import write_jsonl  # noqa: E402

COLUMNS = [("setting", "setting"), ("fractions", "fractions"), ("nfe", "NFE per member"), ("s_per_image", "s/image"),
           ("predicted_s_per_image", "predicted s/image"), ("speedup", "speedup"), ("fd", "FD"),
           ("accuracy", "class acc."), ("fid", "FID"), ("isc", "IS"),
           ("kid", "KID"), ("precision", "precision"), ("recall", "recall"), ("clip_score", "CLIP score"),
           ("paper", "paper")]
AXIS = {"fd": "FD (lower is better)", "accuracy": "class accuracy (higher is better)",
        "fid": "FID (lower is better)", "isc": "Inception Score (higher is better)",
        "clip_score": "CLIP score (higher is better)"}


def fmt(key, value):
    if value is None:
        return "-"
    if key == "setting":
        return str(value)
    if key in ("fractions", "nfe"):
        return " : ".join(f"{v:g}" for v in value)
    if key in ("s_per_image", "predicted_s_per_image"):
        return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.3f}"
    if key == "speedup":
        return f"{value:.2f}x"
    if key == "accuracy":
        return f"{100 * value:.1f}%"
    if key in ("kid", "precision", "recall"):
        return f"{value:.4f}"
    return f"{value:.2f}"


def lookup(config, dotted):
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def add_paper(rows, config):
    """Put the paper's value beside each row (``row["paper"]``) from the run config's ``paper`` block: the first
    curve whose ``match`` (dotted config keys) fits the run, at the row's fraction of the first member. Returns
    the column's label, or None when the config has no paper block."""
    paper = (config or {}).get("paper")
    if not paper:
        return None
    curve = next((c for c in paper["curves"] if all(lookup(config, k) == v for k, v in c.get("match", {}).items())),
                 None)
    for r in rows:
        if curve is not None:
            value = next((v for f, v in zip(curve["first"], curve["values"]) if abs(f - r["fractions"][0]) < 1e-6),
                         None)
            if value is not None:
                r["paper"], r["paper_metric"] = value, paper["metric"]
    return paper.get("label", "paper")


def markdown(rows, members, paper_label=None):
    cols = [(k, paper_label if k == "paper" and paper_label else h) for k, h in COLUMNS if any(k in r for r in rows)]
    head = [h.replace("fractions", "fractions (" + " : ".join(members) + ")") for _, h in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_table(rows, members, out_dir, paper_label=None):
    out_dir = Path(out_dir)
    (out_dir / "results.md").write_text(markdown(rows, members, paper_label) + "\n")
    write_jsonl(out_dir / "results.jsonl", rows)
    keys = [k for k, _ in COLUMNS if any(k in r for r in rows)]
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([" ".join(map(str, r[k])) if isinstance(r.get(k), list) else r.get(k) for k in keys])


def image_grid(grids, path, labels=None):
    """One row per allocation (the same seeds in every column) from uint8 NCHW tensors, as a labelled PNG."""
    rows = [np.concatenate(list(g.permute(0, 2, 3, 1).numpy()), axis=1) for g in grids]
    width = max(r.shape[1] for r in rows)
    img = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    h = rows[0].shape[0]
    fig = plt.figure(figsize=(img.shape[1] / 40 + 1.2, img.shape[0] / 40 + 0.3), dpi=100)
    ax = fig.add_axes([1.1 / (img.shape[1] / 40 + 1.2), 0.0, 1 - 1.1 / (img.shape[1] / 40 + 1.2), 1.0])
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([h * (i + 0.5) for i in range(len(rows))], labels or [""] * len(rows), fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.savefig(path)
    plt.close(fig)


def tradeoff_plot(rows, members, path, qualities=("fid", "isc", "fd", "accuracy", "clip_score"), paper_label=None):
    """Seconds per image vs each quality metric, one line per setting (e.g. solver and steps of a multirun), each
    point labelled with the first member's fraction; with paper values, one more panel: ours and the paper's
    against the fraction of the first member (two y axes: the toy zoo's FD is not the paper's FID)."""
    def points(q, setting):  # rows of a setting that have both a time and the metric
        return [r for r in rows if r.get(q) is not None and r.get("s_per_image") is not None
                and r.get("setting") == setting]

    settings = list(dict.fromkeys(r.get("setting") for r in rows))
    qualities = [q for q in qualities if any(points(q, st) for st in settings)]
    paper = [r for r in rows if r.get("paper") is not None and r.get(r.get("paper_metric")) is not None]
    panels = len(qualities) + bool(paper)
    if not panels:
        return False
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.5), dpi=120, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, q in zip(axes[0], qualities):
        for k, st in enumerate(settings):
            have = points(q, st)
            t = [r["s_per_image"] * 1000 for r in have]
            ax.plot(t, [r[q] for r in have], "o-", color=colors[k % len(colors)], label=st, ms=4)
            for r, ti in zip(have, t):
                ax.annotate(f"{r['fractions'][0]:g}", (ti, r[q]), textcoords="offset points", xytext=(4, 4),
                            fontsize=6)
        ax.set_xlabel("ms per image")
        ax.set_ylabel(AXIS.get(q, q))
        ax.grid(alpha=0.3)
        if len(settings) > 1:
            ax.legend(fontsize=6)
    if paper:  # ours solid on the left axis, the paper's dashed on the right, one colour per setting
        ax, metric = axes[0][-1], paper[0]["paper_metric"]
        twin = ax.twinx()
        for k, st in enumerate(settings):
            have = [r for r in paper if r.get("setting") == st]
            first = [r["fractions"][0] for r in have]
            ax.plot(first, [r[metric] for r in have], "o-", color=colors[k % len(colors)], ms=4)
            twin.plot(first, [r["paper"] for r in have], "s--", color=colors[k % len(colors)], ms=3, alpha=0.7)
        ax.set_xlabel(f"fraction of {members[0]}")
        ax.set_ylabel(f"ours (solid): {AXIS.get(metric, metric)}")
        twin.set_ylabel(f"{paper_label or 'paper'} (dashed)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"T-Stitch {' -> '.join(members)}; labels: fraction of {members[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def frontier_plot(candidates, confirmed, quality, members, path):
    """Allocation search: every candidate at its predicted time and small-set quality, their Pareto front, and
    the front confirmed on the larger seed set at measured time."""
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    ax.scatter([r["predicted_s_per_image"] * 1000 for r in candidates], [r[quality] for r in candidates], s=10,
               color="0.6", label="candidates (predicted time)")
    front = sorted((r for r in candidates if r["front"]), key=lambda r: r["predicted_s_per_image"])
    ax.plot([r["predicted_s_per_image"] * 1000 for r in front], [r[quality] for r in front], "o-", ms=4,
            color="tab:blue", label="front (small seed set)")
    final = sorted(confirmed, key=lambda r: r["s_per_image"])
    ax.plot([r["s_per_image"] * 1000 for r in final], [r[quality] for r in final], "s--", ms=4, color="tab:red",
            label="confirmed (measured time)")
    for r in final:
        ax.annotate(fmt("fractions", r["fractions"]), (r["s_per_image"] * 1000, r[quality]),
                    textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax.set_xlabel("ms per image")
    ax.set_ylabel(AXIS.get(quality, quality))
    ax.set_title(f"allocations of {' : '.join(members)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
