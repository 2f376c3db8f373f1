"""Metrics of a sample set through torch-fidelity: FID, Inception Score, KID, precision/recall.

Samples and references are ADM-style ``.npz`` files (``arr_0``: uint8 NHWC, read through a memory map, never
whole), image folders, or, for FID, precomputed statistics (an ``.npz`` with ``mu`` and ``sigma``, such as ADM's
``VIRTUAL_imagenet256_labeled.npz``, which also holds 10k images for KID and precision/recall). Every result
records the feature extractor and the reference it used.
"""
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from tstitch.errors import ConfigError

INCEPTION = "inception-v3-compat"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
KEYS = {"fid": "frechet_inception_distance", "isc": "inception_score_mean", "kid": "kernel_inception_distance_mean",
        "precision": "precision", "recall": "recall"}


def npz_member(path, key):
    """A read-only memory map of ``key`` in an uncompressed ``.npz`` (np.savez / tstitch-generate / ADM)."""
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            return None
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as f:
                return np.load(f)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class Images(torch.utils.data.Dataset):
    """uint8 images (a tensor or array, NCHW, or NHWC with ``nhwc=True``) as the CHW tensors torch-fidelity
    reads, one at a time (so a memory-mapped array is never read whole)."""

    def __init__(self, images, nhwc=False):
        self.images, self.nhwc = images, nhwc

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        img = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img))  # np.array: off the map
        return img.permute(2, 0, 1).contiguous() if self.nhwc else img


def as_input(source):
    """A torch-fidelity input for a folder or an images ``.npz``; None for a statistics-only ``.npz``."""
    path = Path(source)
    if path.is_dir():
        return str(path)
    if path.suffix != ".npz" or not path.exists():
        raise ConfigError(f"{path} is neither an image folder nor an .npz file; give one of those")
    images = npz_member(path, "arr_0")
    return Images(images, nhwc=True) if images is not None else None


def inception_weights(path=None):
    """The Inception-v3 weights file: ``path``, or torch-fidelity's download cached in the torch hub dir."""
    target = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
    if target.exists():
        return str(target)
    if path:
        raise ConfigError(f"Inception weights not found at {target}; fix metric.weights")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(target), progress=False)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        raise ConfigError(f"Inception weights are not cached and cannot be downloaded ({type(e).__name__}); "
                          f"download {INCEPTION_URL} elsewhere and put it at {target}, or set metric.weights") from None
    return str(target)


def evaluate(samples, reference, metrics=("fid",), extractor=INCEPTION, weights=None, kid_subset_size=1000,
             prc_neighborhood=3, batch_size=64):
    """``{"fid": ..., "isc": ..., ...}`` of ``samples`` against ``reference`` (see the module docstring)."""
    metrics = list(metrics)
    unknown = sorted(set(metrics) - {"fid", "isc", "kid", "prc"})
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; choose from fid, isc, kid, prc")
    if extractor == INCEPTION:
        weights = inception_weights(weights)
    cuda = torch.cuda.is_available()
    common = dict(feature_extractor=extractor, feature_extractor_weights_path=weights, cuda=cuda, verbose=False,
                  save_cpu_ram=True, batch_size=batch_size)
    input1, input2 = as_input(samples), as_input(reference)
    stats = {k: npz_member(reference, k) for k in ("mu", "sigma")} if str(reference).endswith(".npz") else {}
    out = {}
    if "fid" in metrics and stats.get("mu") is not None:  # the reference's own statistics, as ADM's evaluator
        fe = create_feature_extractor(extractor, ["2048" if extractor == INCEPTION else "features"], **common)
        dataset = input1
        if isinstance(input1, str):  # an image folder, read as torch-fidelity reads it
            dataset = torch_fidelity.utils.prepare_input_from_descriptor({"input": input1}, **common)
        feats = get_featuresdict_from_dataset(dataset, fe, batch_size, cuda, True, False)
        ref = {"mu": np.asarray(stats["mu"], dtype=np.float64), "sigma": np.asarray(stats["sigma"], dtype=np.float64)}
        mine = fid_features_to_statistics(next(iter(feats.values())).double())
        out["fid"] = fid_statistics_to_metric(mine, ref, False)[KEYS["fid"]]
        metrics.remove("fid")
    if metrics:
        if input2 is None and set(metrics) & {"fid", "kid", "prc"}:
            raise ConfigError(f"reference {reference} holds statistics only; KID and precision/recall need images")
        n = min(len(input1) if not isinstance(input1, str) else kid_subset_size, kid_subset_size)
        m = torch_fidelity.calculate_metrics(input1=input1, input2=input2, fid="fid" in metrics, isc="isc" in metrics,
                                             kid="kid" in metrics, prc="prc" in metrics, kid_subset_size=n,
                                             prc_neighborhood=prc_neighborhood, **common)
        for name in ("fid", "isc", "kid"):
            if name in metrics:
                out[name] = m[KEYS[name]]
        if "prc" in metrics:
            out["precision"], out["recall"] = m["precision"], m["recall"]
    return {**out, "extractor": extractor, "reference": str(reference)}
