"""Outputs of a sweep: the table (markdown, CSV, JSON lines), an image grid and the speed-quality plot."""
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = [("fractions", "fractions"), ("nfe", "NFE per member"), ("s_per_image", "s/image"),
           ("speedup", "speedup"), ("fd", "FD"), ("accuracy", "class acc."), ("fid", "FID"), ("isc", "IS"),
           ("kid", "KID"), ("precision", "precision"), ("recall", "recall")]
AXIS = {"fd": "FD (lower is better)", "accuracy": "class accuracy (higher is better)",
        "fid": "FID (lower is better)", "isc": "Inception Score (higher is better)"}


def fmt(key, value):
    if value is None:
        return "-"
    if key in ("fractions", "nfe"):
        return " : ".join(f"{v:g}" for v in value)
    if key == "s_per_image":
        return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.3f}"
    if key == "speedup":
        return f"{value:.2f}x"
    if key == "accuracy":
        return f"{100 * value:.1f}%"
    if key in ("kid", "precision", "recall"):
        return f"{value:.4f}"
    return f"{value:.2f}"


def markdown(rows, members):
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows)]
    head = [h.replace("fractions", "fractions (" + " : ".join(members) + ")") for _, h in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_table(rows, members, out_dir):
    out_dir = Path(out_dir)
    (out_dir / "results.md").write_text(markdown(rows, members) + "\n")
    with open(out_dir / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
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


def tradeoff_plot(rows, members, path, qualities=("fid", "isc", "fd", "accuracy")):
    """Seconds per image vs each quality metric, each point labelled with the first member's fraction."""
    def points(q):  # rows that have both a time and the metric
        return [r for r in rows if r.get(q) is not None and r.get("s_per_image") is not None]

    qualities = [q for q in qualities if points(q)]
    if not qualities:
        return False
    fig, axes = plt.subplots(1, len(qualities), figsize=(4.5 * len(qualities), 3.5), dpi=120, squeeze=False)
    for ax, q in zip(axes[0], qualities):
        have = points(q)
        t = [r["s_per_image"] * 1000 for r in have]
        ax.plot(t, [r[q] for r in have], "o-", color="tab:blue")
        for r, ti in zip(have, t):
            ax.annotate(f"{r['fractions'][0]:g}", (ti, r[q]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("ms per image")
        ax.set_ylabel(AXIS.get(q, q))
        ax.grid(alpha=0.3)
    fig.suptitle(f"T-Stitch {' -> '.join(members)}; labels: fraction of {members[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
