"""Outputs of a sweep: the table (markdown, CSV, JSON lines), an image grid and the speed-quality plot."""
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

COLUMNS = [("fractions", "fractions"), ("nfe", "NFE per member"), ("s_per_image", "s/image"),
           ("speedup", "speedup"), ("fd", "FD"), ("accuracy", "class acc.")]


def _fmt(key, value):
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
    return f"{value:.2f}"


def markdown(rows, members):
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows)]
    head = [h.replace("fractions", "fractions (" + " : ".join(members) + ")") for _, h in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(k, r.get(k)) for k, _ in cols) + " |" for r in rows]
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


def image_grid(grids, path):
    """One row per allocation (same seeds in every column), uint8 NCHW tensors -> a PNG."""
    rows = [np.concatenate(list(g.permute(0, 2, 3, 1).numpy()), axis=1) for g in grids]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = np.concatenate(rows, axis=0)
    img = img[..., 0] if img.shape[-1] == 1 else img
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def tradeoff_plot(rows, members, path, quality="fd"):
    """Seconds per image vs quality, each point labelled with the first member's fraction."""
    if not any(quality in r for r in rows):
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    t = [r["s_per_image"] * 1000 for r in rows]
    q = [r[quality] for r in rows]
    ax.plot(t, q, "o-", color="tab:blue")
    for r, ti, qi in zip(rows, t, q):
        ax.annotate(f"{r['fractions'][0]:g}", (ti, qi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("ms per image")
    ax.set_ylabel(quality.upper() + " (lower is better)")
    ax.set_title(f"T-Stitch: {' -> '.join(members)} (label: fraction of {members[0]})", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
