"""Shards on disk: each predicted batch becomes ``shards/<first seed>-<last seed>-r<rank>.npz`` (seeds, labels,
uint8 NCHW images and the digests of the identity they were made under, ``tstitch.jobs.identity.digest``), written to
a temporary name and renamed, so a killed run leaves only whole shards. A restarted run generates only the seeds
no shard holds; the export reads the shards in seed order, and writes the PNGs (``png=true``) that earlier
sessions did not.

A shard that cannot be read whole (a disk error, a file edited or truncated by hand) is moved to
``shards/corrupt/`` with one line naming it, and its seeds are generated again by the next run."""
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from tstitch.errors import ConfigError
from tstitch.files import whole, write_json, write_npz
from tstitch.jobs.engine import stop

KEYS = ("seeds", "labels", "images")


class ShardWriter(BasePredictionWriter):
    """Each batch as a shard stamped with ``digests`` (and its PNGs); ``keep=False`` writes nothing (a batch timed
    again) and only records the NFE."""

    def __init__(self, out_dir, png=False, digests=(), keep=True):
        super().__init__(write_interval="batch")
        self.shards = Path(out_dir) / "shards"
        self.png = Path(out_dir) / "png" if png else None
        self.digests, self.keep = list(digests), keep
        self.nfe = None

    def setup(self, trainer, pl_module, stage=None):
        self.shards.mkdir(parents=True, exist_ok=True)
        if self.png:
            self.png.mkdir(parents=True, exist_ok=True)

    def on_predict_start(self, trainer, pl_module):
        stop.reclaim()  # SIGTERM stops the run as SIGINT does, not as Lightning would

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.nfe = prediction["nfe"]
        if not self.keep:
            return
        s = np.asarray(prediction["seeds"], dtype=np.int64)
        images = prediction["images"].numpy()
        with stop.deferred():  # a shard and its PNGs
            write_npz(self.shards / f"{s.min():06d}-{s.max():06d}-r{trainer.global_rank}.npz",
                      seeds=s, labels=prediction["labels"].numpy(), images=images, identity=np.array(self.digests))
            if self.png:
                for seed, image in zip(s, images):
                    save_png(self.png / f"{seed:06d}.png", image)


def save_png(path, image):
    """One uint8 CHW image as a PNG, whole."""
    hwc = image.transpose(1, 2, 0)
    with whole(path) as tmp:
        Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc).save(tmp, format="PNG")


class CorruptShard(ConfigError):
    """A shard that cannot be read whole; ``path`` names it."""

    def __init__(self, path, reason):
        self.path, self.reason = Path(path), reason
        super().__init__(f"shard {path} is unreadable ({reason})")


def read_shard(path, images=True):
    """``{seeds, labels[, images]}`` of a shard, checked: every key present, one row per seed, uint8 NCHW images;
    reading ``images`` verifies the zip's checksum of them. Raises ``CorruptShard``."""
    try:
        with np.load(path) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise CorruptShard(path, f"no {', '.join(missing)}")
            out = {k: z[k] for k in (KEYS if images else KEYS[:2])}
    except CorruptShard:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptShard(path, f"{type(e).__name__}: {str(e)[:100]}") from None
    n = len(out["seeds"])
    if out["seeds"].ndim != 1 or len(out["labels"]) != n or (images and (
            out["images"].dtype != np.uint8 or out["images"].ndim != 4 or len(out["images"]) != n)):
        raise CorruptShard(path, "seeds, labels and images do not match")
    return out


def set_aside(path, reason, log=None):
    """Move a corrupt shard to ``shards/corrupt/`` (another rank may have moved it already) and say so."""
    path = Path(path)
    target = path.parent / "corrupt" / path.name
    try:
        target.parent.mkdir(exist_ok=True)
        shutil.move(str(path), str(target))
    except FileNotFoundError:
        return target
    print(f"tstitch-generate: shard {path} is corrupt ({reason}); moved to {target}, its seeds will be generated "
          "again", file=log or sys.stderr)
    return target


def done(out_dir, move=True):
    """Seeds already held by whole shards in ``out_dir``. Temporary files a killed run left are removed and corrupt
    shards moved aside (``move``: rank zero; other ranks skip the same shards without touching them)."""
    shards = Path(out_dir) / "shards"
    if move:
        for tmp in shards.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    seen = set()
    for path in sorted(shards.glob("*.npz")):
        try:
            seen.update(int(s) for s in read_shard(path, images=False)["seeds"])
        except CorruptShard as e:
            if move:
                set_aside(path, e.reason)
    return seen


def export_npz(out_dir, seeds, path=None, png=False):
    """ADM-compatible ``samples.npz`` (``arr_0``: uint8 NHWC, ``arr_1``: labels) in the order of ``seeds``,
    streamed shard by shard into the zip so that 50k images never sit in memory together; with ``png``, each seed's
    ``png/{seed:06d}.png`` that is missing (made by a session with ``png=false``) is written on the way. A shard
    found corrupt here is moved aside and named (``CorruptShard``): the next run generates its seeds again."""
    out_dir = Path(out_dir)
    path = Path(path or out_dir / "samples.npz")
    index = {}  # seed -> (shard, row)
    for shard in sorted((out_dir / "shards").glob("*.npz")):
        for row, s in enumerate(_checked(shard, images=False)["seeds"]):
            index.setdefault(int(s), (shard, row))
    missing = [s for s in seeds if s not in index]
    if missing:
        raise RuntimeError(f"{len(missing)} seeds have no shard yet (first: {missing[:5]}); run generation again")
    first = index[seeds[0]][0]
    cache = {first: _checked(first)}  # shards are mostly read in order: keep only the current one
    shape = cache[first]["images"].shape[1:]
    c, h, w = shape
    pngs = out_dir / "png"
    if png:
        pngs.mkdir(exist_ok=True)
    have = set(os.listdir(pngs)) if png else set()
    missing = {s for s in seeds if f"{s:06d}.png" not in have} if png else set()
    labels = np.empty(len(seeds), dtype=np.int64)
    with whole(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                    "shape": (len(seeds), h, w, c)})
            for i, s in enumerate(seeds):
                shard, row = index[s]
                if shard not in cache:
                    cache = {shard: _checked(shard)}
                    if cache[shard]["images"].shape[1:] != shape:
                        raise _aside(shard, f"images of shape {cache[shard]['images'].shape[1:]}, not {shape}")
                image = cache[shard]["images"][row]
                f.write(np.ascontiguousarray(image.transpose(1, 2, 0)).tobytes())
                labels[i] = cache[shard]["labels"][row]
                if s in missing:
                    save_png(pngs / f"{s:06d}.png", image)
        with zf.open("arr_1.npy", "w") as f:
            np.lib.format.write_array(f, labels)
    return path


def _checked(shard, images=True):
    try:
        return read_shard(shard, images)
    except CorruptShard as e:
        raise _aside(shard, e.reason) from None


def _aside(shard, reason):
    target = set_aside(shard, reason)
    return CorruptShard(shard, f"{reason}; moved to {target}: run the same command again to generate its seeds")


def write_manifest(out_dir, manifest):
    return write_json(Path(out_dir) / "manifest.json", manifest)
