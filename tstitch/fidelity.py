"""Metrics of a sample set through torch-fidelity: FID, Inception Score, KID, precision/recall.

Samples and references are ADM-style ``.npz`` files (``arr_0``: uint8 NHWC, read through a memory map, never
whole), image folders, or, for FID, precomputed statistics (an ``.npz`` with ``mu`` and ``sigma``, such as ADM's
``VIRTUAL_imagenet256_labeled.npz``, which also holds 10k images for KID and precision/recall).

One feature extractor, built with every layer the metrics need, reads each set once; each metric is then computed
from those features by torch-fidelity's own functions. The reference's features are cached on disk, keyed by the
reference's files (path, size, mtime), the extractor, its weights and the layers, so a rerun against the same
reference extracts only the samples. Every result records the feature extractor and the reference it used.
"""
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from PIL import Image
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from tstitch.checkpoints import cache_dir, resolve
from tstitch.errors import ConfigError

INCEPTION = "inception-v3-compat"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
KEYS = {"fid": "frechet_inception_distance", "isc": "inception_score_mean", "kid": "kernel_inception_distance_mean"}
METRICS = ("fid", "isc", "kid", "prc")
IMAGE_SUFFIXES = tuple(f".{ext}" for ext in DEFAULTS["samples_find_ext"].split(","))  # what torch-fidelity globs


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
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len  # past the zip local header
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


def image_files(folder):
    """The image files of ``folder`` that torch-fidelity reads (not recursive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_images(source):
    """(dataset, (H, W, C)) of an image folder or an images ``.npz``; (None, None) for an ``.npz`` without images.
    The size comes from the first image of a folder or the ``arr_0`` header, so nothing is read whole."""
    path = Path(source)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise ConfigError(f"{path} holds no {'/'.join(IMAGE_SUFFIXES)} images; give a folder of images or an .npz")
        with Image.open(files[0]) as img:
            size = (img.height, img.width, len(img.getbands()))
        return torch_fidelity.utils.prepare_input_from_descriptor({"input": str(path)}, verbose=False), size
    if path.suffix != ".npz" or not path.exists():
        raise ConfigError(f"{path} is neither an image folder nor an .npz file; give one of those")
    images = npz_member(path, "arr_0")
    return (None, None) if images is None else (Images(images, nhwc=True), tuple(images.shape[1:]))


def statistics(reference):
    """The reference's own FID statistics ``{"mu", "sigma"}`` (float64), or None when it holds none."""
    if Path(reference).suffix != ".npz" or not Path(reference).is_file():
        return None
    stats = {k: npz_member(reference, k) for k in ("mu", "sigma")}
    if any(v is None for v in stats.values()):
        return None
    return {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}


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


def feature_layers(extractor, metrics):
    """``{metric: layer}``: the extractor's feature layer for fid/kid/prc and its logits layer for isc."""
    if extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise ConfigError(f"unknown extractor {extractor}; choose a registered one: "
                          f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}")
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    layers = {m: cls.get_default_feature_layer_for_metric(m) for m in metrics if m != "isc"}
    if "isc" in metrics:
        try:
            logits = cls.get_default_feature_layer_for_metric("isc")
        except (KeyError, NotImplementedError):
            logits = None
        if logits is None or logits == cls.get_default_feature_layer_for_metric("fid"):
            raise ConfigError(f"extractor {extractor} has no logits layer, which the Inception Score needs; "
                              "drop isc from metrics or use inception-v3-compat")
        layers["isc"] = logits
    return layers


def features_of(dataset, fe, batch_size, cuda):
    """``{layer: (N, D) features}`` of every image in ``dataset``, one pass through ``fe`` for all its layers."""
    return get_featuresdict_from_dataset(dataset, fe, batch_size, cuda, True, False)


def file_id(path):
    """``[path, size, mtime_ns]``: what tells one version of a file from another without reading it."""
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def reference_key(reference, extractor, weights, layers):
    """A digest of all the reference's features depend on: its files (path, size, mtime), the extractor, its
    weights (path, size, mtime; "default" for the extractor's own) and the layers."""
    path = Path(reference).resolve()
    files = [[p.name, *file_id(p)[1:]] for p in image_files(path)] if path.is_dir() else [file_id(path)]
    weights = file_id(Path(resolve(weights)).resolve()) if weights else "default"
    source = {"reference": str(path), "files": files, "extractor": extractor, "weights": weights,
              "layers": sorted(layers), "torch_fidelity": torch_fidelity.__version__}
    return hashlib.sha256(json.dumps(source).encode()).hexdigest()[:24]


def reference_features(reference, dataset, fe, layers, weights, batch_size, cuda, cache_root):
    """``({layer: features}, "hit" | "miss")``: the reference's features from the cache under ``cache_root``, or
    extracted now and stored there (temporary file + rename, so a killed run leaves no half-written entry)."""
    path = Path(cache_root or cache_dir() / "fidelity")
    path = path / f"reference-{reference_key(reference, fe.get_name(), weights, layers)}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True), "hit"
    features = features_of(dataset, fe, batch_size, cuda)
    features = {layer: features[layer] for layer in layers}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(features, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return features, "miss"


def metric_values(features_1, features_2, stats, layers, kid_subset_size, prc_neighborhood):
    """The metrics in ``layers`` from the samples' features (``features_1``) and the reference's features
    (``features_2``) or, for FID, its own statistics ``stats``, each by torch-fidelity's function."""
    out = {}
    if "fid" in layers:
        mine = features_1[layers["fid"]]
        if stats is not None:  # the reference's own statistics, as ADM's evaluator
            mine, ref = fid_features_to_statistics(mine.double()), stats
        else:
            mine, ref = fid_features_to_statistics(mine), fid_features_to_statistics(features_2[layers["fid"]])
        out["fid"] = fid_statistics_to_metric(mine, ref, False)[KEYS["fid"]]
    if "isc" in layers:
        out["isc"] = isc_featuresdict_to_metric(features_1, layers["isc"], verbose=False)[KEYS["isc"]]
    if "kid" in layers:
        n = min(kid_subset_size, len(features_1[layers["kid"]]), len(features_2[layers["kid"]]))
        out["kid"] = kid_featuresdict_to_metric(features_1, features_2, layers["kid"], kid_subset_size=n,
                                                verbose=False)[KEYS["kid"]]
    if "prc" in layers:
        m = prc_featuresdict_to_metric(features_1, features_2, layers["prc"], prc_neighborhood=prc_neighborhood,
                                       save_cpu_ram=True, verbose=False)
        out["precision"], out["recall"] = m["precision"], m["recall"]
    return out


def size_text(size):
    return "x".join(str(d) for d in size)


def evaluate(samples, reference, metrics=("fid",), extractor=INCEPTION, weights=None, kid_subset_size=1000,
             prc_neighborhood=3, batch_size=64, cache_root=None):
    """``{"fid": ..., "isc": ..., ..., "reference_cache": "hit" | "miss"}`` of ``samples`` against ``reference``
    (see the module docstring); ``reference_cache`` is absent when no reference features were needed.
    ``cache_root``: where reference features are cached (default: ``cache_dir() / "fidelity"``)."""
    metrics = list(dict.fromkeys(metrics))
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    layers = feature_layers(extractor, metrics)
    sample_set, sample_size = open_images(samples)
    if sample_set is None:
        raise ConfigError(f"samples {samples} hold no images (arr_0); give an images .npz or an image folder")
    ref_set, ref_size = open_images(reference)
    if ref_size is not None and ref_size[:2] != sample_size[:2]:
        raise ConfigError(f"samples are {size_text(sample_size)} but reference {reference} holds "
                          f"{size_text(ref_size)} images; give a reference at the samples' resolution")
    stats = statistics(reference) if "fid" in metrics else None
    needs_reference = [m for m in metrics if m in ("kid", "prc") or (m == "fid" and stats is None)]
    if needs_reference and ref_set is None:
        held = "statistics only" if statistics(reference) is not None else "neither images (arr_0) nor statistics"
        raise ConfigError(f"reference {reference} holds {held}, but metrics {needs_reference} need its images; "
                          "give an images .npz or an image folder")
    if extractor == INCEPTION:
        weights = inception_weights(weights)
    cuda = torch.cuda.is_available()
    fe = create_feature_extractor(extractor, sorted(set(layers.values())), cuda=cuda,
                                  feature_extractor_weights_path=weights, verbose=False)
    features_1, features_2, out = features_of(sample_set, fe, batch_size, cuda), None, {}
    if stats is not None and stats["mu"].shape[0] != features_1[layers["fid"]].shape[1]:
        raise ConfigError(f"reference {reference} holds {stats['mu'].shape[0]}-d statistics but {extractor} gives "
                          f"{features_1[layers['fid']].shape[1]}-d features; give statistics of the same extractor")
    if needs_reference:
        features_2, out["reference_cache"] = reference_features(
            reference, ref_set, fe, {layers[m] for m in needs_reference}, weights, batch_size, cuda, cache_root)
    out.update(metric_values(features_1, features_2, stats, layers, kid_subset_size, prc_neighborhood))
    return {**out, "extractor": extractor, "reference": str(reference)}
