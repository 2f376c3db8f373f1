"""Shards on disk: each predicted batch becomes ``shards/<first seed>-<last seed>-r<rank>.npz`` (seeds, labels,
uint8 NCHW images), written to a temporary name and renamed, so a killed run leaves only whole shards. A
restarted run generates only the seeds no shard holds; the export reads the shards in seed order."""
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image


def _atomic_savez(path, **arrays):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


class ShardWriter(BasePredictionWriter):
    def __init__(self, out_dir, png=False):
        super().__init__(write_interval="batch")
        self.shards = Path(out_dir) / "shards"
        self.png = Path(out_dir) / "png" if png else None
        self.nfe = None

    def setup(self, trainer, pl_module, stage=None):
        self.shards.mkdir(parents=True, exist_ok=True)
        if self.png:
            self.png.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        s = np.asarray(prediction["seeds"], dtype=np.int64)
        images = prediction["images"].numpy()
        _atomic_savez(self.shards / f"{s.min():06d}-{s.max():06d}-r{trainer.global_rank}.npz",
                      seeds=s, labels=prediction["labels"].numpy(), images=images)
        if self.png:
            for seed, img in zip(s, images.transpose(0, 2, 3, 1)):
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(self.png / f"{seed:06d}.png")
        self.nfe = prediction["nfe"]


def done(out_dir):
    """Seeds already held by whole shards in ``out_dir``; temporary files a killed run left are removed (call it
    before any rank starts writing)."""
    for tmp in (Path(out_dir) / "shards").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    seen = set()
    for path in sorted((Path(out_dir) / "shards").glob("*.npz")):
        with np.load(path) as z:
            seen.update(int(s) for s in z["seeds"])
    return seen


def export_npz(out_dir, seeds, path=None):
    """ADM-compatible ``samples.npz`` (``arr_0``: uint8 NHWC, ``arr_1``: labels) in the order of ``seeds``,
    streamed shard by shard into the zip so that 50k images never sit in memory together."""
    out_dir = Path(out_dir)
    path = Path(path or out_dir / "samples.npz")
    index = {}  # seed -> (shard, row)
    shape = dtype = None
    for shard in sorted((out_dir / "shards").glob("*.npz")):
        with np.load(shard) as z:
            for row, s in enumerate(z["seeds"]):
                index.setdefault(int(s), (shard, row))
            shape, dtype = z["images"].shape[1:], z["images"].dtype
    missing = [s for s in seeds if s not in index]
    if missing:
        raise RuntimeError(f"{len(missing)} seeds have no shard yet (first: {missing[:5]}); run generation again")
    c, h, w = shape
    tmp = path.with_name(f".{path.name}.tmp")
    labels = np.empty(len(seeds), dtype=np.int64)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                    "shape": (len(seeds), h, w, c)})
            cache = {}
            for i, s in enumerate(seeds):
                shard, row = index[s]
                if shard not in cache:  # shards are mostly read in order: keep only the current one
                    cache = {shard: dict(np.load(shard))}
                f.write(np.ascontiguousarray(cache[shard]["images"][row].transpose(1, 2, 0)).tobytes())
                labels[i] = cache[shard]["labels"][row]
        with zf.open("arr_1.npy", "w") as f:
            np.lib.format.write_array(f, labels)
    tmp.replace(path)
    return path


def write_manifest(out_dir, manifest):
    path = Path(out_dir) / "manifest.json"
    tmp = path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
