"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX files, gzip), read without a download."""
import gzip
import os
from pathlib import Path

import numpy as np
import torch

ROOT = Path(os.environ.get("TSTITCH_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(split="train", root=None):
    """Images as uint8 (N, 1, 28, 28) and labels as int64 (N,)."""
    root = Path(root) if root else ROOT
    images, labels = (root / name for name in FILES[split])
    if not images.exists():
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {root}; install it with `apt-get install dataset-fashion-mnist` "
            "or point TSTITCH_FASHION_MNIST at a folder with the IDX .gz files")
    x = torch.from_numpy(_read_idx(images).copy()).unsqueeze(1)
    y = torch.from_numpy(_read_idx(labels).astype(np.int64))
    return x, y

