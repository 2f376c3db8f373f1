"""The sample grid: one row of images per allocation (the same seeds in every column), its rows labelled, a header
naming the columns (class names or prompts)."""
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
