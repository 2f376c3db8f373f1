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
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from tstitch.data.imageset import NAMED, image_files, npz_member, open_set
from tstitch.errors import ConfigError
from tstitch.files import file_id, temporary, write_npz
from tstitch.models.checkpoints import cache_dir, resolve

INCEPTION = "inception-v3-compat"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
KEYS = {"fid": "frechet_inception_distance", "isc": "inception_score_mean", "kid": "kernel_inception_distance_mean"}
METRICS = ("fid", "isc", "kid", "prc")


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
        raise ConfigError(f"Inception weights not found at {target}; fix weights=... (metric.weights=...)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(target), progress=False)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        raise ConfigError(f"Inception weights are not cached and cannot be downloaded ({type(e).__name__}); "
                          f"download {INCEPTION_URL} elsewhere and put it at {target}, or set weights=... "
                          "(metric.weights=...)") from None
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


def feature_extractor(name, layers, weights, cuda):
    """``(torch-fidelity's extractor `name` for `layers`, the weights it loaded)``: Inception's weights are found
    (or named as missing) by ``inception_weights``, another extractor's as given."""
    if name == INCEPTION:
        weights = inception_weights(weights)
    return create_feature_extractor(name, sorted(set(layers)), cuda=cuda, feature_extractor_weights_path=weights,
                                    verbose=False), weights


def features_of(dataset, fe, batch_size, cuda):
    """``{layer: (N, D) features}`` of every image in ``dataset``, one pass through ``fe`` for all its layers."""
    return get_featuresdict_from_dataset(dataset, fe, batch_size, cuda, True, False)


def reference_key(reference, extractor, weights, layers, reading=None):
    """A digest of all the reference's features depend on: its files (path, size, mtime), how they were read
    (``reading``: the dataset's layout, scale and channels; a set read in [0, 1] is not the set read in [0, 255]),
    the extractor, its weights (path, size, mtime; "default" for the extractor's own) and the layers."""
    if str(reference) in NAMED:  # a named set: its data files
        from tstitch.data.toy import data

        path = data.ROOT
        files = [file_id(data.ROOT / name) for name in data.FILES[NAMED[str(reference)]]]
    else:
        path = Path(reference).resolve()
        files = [[p.name, *file_id(p)[1:]] for p in image_files(path)] if path.is_dir() else [file_id(path)]
    weights = file_id(Path(resolve(weights)).resolve()) if weights else "default"
    source = {"reference": str(path), "files": files, "reading": reading, "extractor": extractor, "weights": weights,
              "layers": sorted(layers), "torch_fidelity": torch_fidelity.__version__}
    return hashlib.sha256(json.dumps(source).encode()).hexdigest()[:24]


def reference_features(reference, dataset, fe, layers, weights, batch_size, cuda, cache_root):
    """``({layer: features}, "hit" | "miss")``: the reference's features from the cache under ``cache_root``, or
    extracted now and stored there (temporary file + rename, so a killed run leaves no half-written entry)."""
    path = Path(cache_root or cache_dir() / "fidelity")
    key = reference_key(reference, fe.get_name(), weights, layers, getattr(dataset, "reading", None))
    path = path / f"reference-{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True), "hit"
    features = features_of(dataset, fe, batch_size, cuda)
    features = {layer: features[layer] for layer in layers}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
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
        kid = kid_featuresdict_to_metric(features_1, features_2, layers["kid"], kid_subset_size=kid_subset_size,
                                         verbose=False)
        out["kid"], out["kid_std"] = kid[KEYS["kid"]], kid["kernel_inception_distance_std"]
    if "prc" in layers:
        m = prc_featuresdict_to_metric(features_1, features_2, layers["prc"], prc_neighborhood=prc_neighborhood,
                                       save_cpu_ram=True, verbose=False)
        out["precision"], out["recall"] = m["precision"], m["recall"]
    return out


def size_text(size):
    return "x".join(str(d) for d in size)


def channels_for(extractor):
    """3 for extractors that read RGB (Inception, CLIP, DINOv2: grayscale is repeated); None (as stored) for the
    toy zoo's, which reads both."""
    from tstitch.data.toy import features

    return None if extractor == features.NAME else 3


def stored(reference, extractor):
    """What a ``tstitch-reference`` file holds: ``{"layers": [layer, ...], "size", "count", ...}`` (the features
    themselves are read by ``stored_features``, only when a metric needs them), or None for any other reference. A
    file made with another extractor is refused."""
    path = Path(reference)
    if path.suffix != ".npz" or not path.is_file():
        return None

    def read(z):
        if "extractor" not in z.files:
            return None
        made_with = str(z["extractor"])
        if made_with != extractor:
            raise ConfigError(f"reference {path} holds features of extractor {made_with}, not {extractor}; "
                              f"evaluate with extractor={made_with} or make the reference with {extractor}")
        return {"layers": [k[len("features_"):] for k in z.files if k.startswith("features_")],
                "size": tuple(int(v) for v in z["size"]), "count": int(z["count"]), "weights": str(z["weights"])}
    return _read_reference(path, read)


def stored_features(reference, layers):
    """``{layer: tensor}`` of the features of ``layers`` in a ``tstitch-reference`` file."""
    return _read_reference(Path(reference), lambda z: {k: torch.from_numpy(z[f"features_{k}"]) for k in layers})


def _read_reference(path, read):
    try:
        with np.load(path) as z:
            return read(z)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ConfigError(f"reference {path} is not a readable .npz ({type(e).__name__}); make it again") from None


def check_counts(metrics, n_samples, n_reference, stats, kid_subset_size, prc_neighborhood):
    """Refuse sets too small for a metric (each would give NaN or fail inside torch-fidelity)."""
    need = {"fid": 2, "isc": 10, "kid": kid_subset_size, "prc": prc_neighborhood + 1}
    why = {"fid": "FID needs a covariance", "isc": "the Inception Score averages 10 splits",
           "kid": f"KID draws subsets of kid_subset_size={kid_subset_size} images",
           "prc": f"precision/recall look at prc_neighborhood={prc_neighborhood} neighbours"}
    fix = {"kid": f"; lower kid_subset_size (at most {min(n_samples, n_reference or n_samples)}) or give more"}
    for m in metrics:
        sets = [("samples", n_samples)] + ([("reference", n_reference)] if n_reference is not None and not (
            m == "fid" and stats is not None) and m != "isc" else [])
        for role, n in sets:
            if n < need[m]:
                raise ConfigError(f"{role} hold {n} image{'' if n == 1 else 's'}, but {why[m]}: give at least "
                                  f"{need[m]}{fix.get(m, ' images')}")


def evaluate(samples, reference, metrics=("fid",), extractor=INCEPTION, weights=None, kid_subset_size=1000,
             prc_neighborhood=3, batch_size=64, cache_root=None, float_range="auto"):
    """``{"fid": ..., "isc": ..., ..., "reference_cache": "hit" | "miss" | "file"}`` of ``samples`` against
    ``reference`` (see the module docstring); ``reference_cache`` is absent when no reference features were
    needed; ``notes`` say how the inputs were read (layout, conversion). ``cache_root``: where reference features
    are cached (default: ``cache_dir() / "fidelity"``). Every input is checked before any extraction."""
    metrics = list(dict.fromkeys(metrics))
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    layers = feature_layers(extractor, metrics)
    channels = channels_for(extractor)
    sample_set = open_set(samples, "samples", float_range, channels)
    if sample_set is None:
        raise ConfigError(f"samples {samples} hold no images (arr_0); give an images .npz or an image folder")
    ref_set = open_set(reference, "reference", float_range, channels)
    kept = stored(reference, extractor)
    ref_size = ref_set.size if ref_set is not None else (kept or {}).get("size")
    if ref_size is not None and tuple(ref_size[:2]) != tuple(sample_set.size[:2]):
        raise ConfigError(f"samples are {size_text(sample_set.size)} but reference {reference} holds "
                          f"{size_text(ref_size)} images; give a reference at the samples' resolution")
    stats = statistics(reference) if "fid" in metrics else None
    needs_reference = [m for m in metrics if m in ("kid", "prc") or (m == "fid" and stats is None)]
    from_file = kept is not None and all(layers[m] in kept["layers"] for m in needs_reference)
    if needs_reference and ref_set is None and not from_file:
        held = "statistics only" if statistics(reference) is not None else "neither images (arr_0) nor statistics"
        raise ConfigError(f"reference {reference} holds {held}, but metrics {needs_reference} need its images; "
                          "give an images .npz or an image folder")
    n_reference = kept["count"] if from_file else (ref_set.count if ref_set is not None else None)
    check_counts(metrics, sample_set.count, n_reference, stats, kid_subset_size, prc_neighborhood)
    cuda = torch.cuda.is_available()
    fe, weights = feature_extractor(extractor, layers.values(), weights, cuda)
    features_1, features_2 = features_of(sample_set.dataset, fe, batch_size, cuda), None
    out = {}
    if stats is not None and stats["mu"].shape[0] != features_1[layers["fid"]].shape[1]:
        raise ConfigError(f"reference {reference} holds {stats['mu'].shape[0]}-d statistics but {extractor} gives "
                          f"{features_1[layers['fid']].shape[1]}-d features; give statistics of the same extractor")
    if needs_reference and from_file:
        features_2 = stored_features(reference, {layers[m] for m in needs_reference})
        out["reference_cache"] = "file"
    elif needs_reference:
        features_2, out["reference_cache"] = reference_features(
            reference, ref_set.dataset, fe, {layers[m] for m in needs_reference}, weights, batch_size, cuda,
            cache_root)
    out.update(metric_values(features_1, features_2, stats, layers, kid_subset_size, prc_neighborhood))
    notes = sample_set.notes() + (ref_set.notes() if ref_set else [])  # after reading: conversions found
    return {"notes": notes, **out, "extractor": extractor, "reference": str(reference)}


def make_reference(source, out, extractor=INCEPTION, weights=None, metrics=("fid", "kid", "prc"), batch_size=64,
                   float_range="auto"):
    """Write the reference of ``source`` (an image folder, an images ``.npz`` or a named set) for ``extractor`` to
    ``out`` (``.npz``): FID statistics ``mu``/``sigma`` (float64) and, for KID and precision/recall, the features
    themselves (``features_<layer>``), with the extractor, its weights, the image size and count. Returns ``out``.
    ``out`` is checked (``check_out``) before any image is read; it is written whole or not at all."""
    check_out(out)
    metrics = [m for m in dict.fromkeys(metrics) if m != "isc"]
    layers = feature_layers(extractor, metrics)
    images = open_set(source, "source", float_range, channels_for(extractor))
    if images is None:
        raise ConfigError(f"source {source} holds no images (arr_0); give an image folder or an images .npz")
    check_counts(["fid"] if "fid" in metrics else [], images.count, None, None, 0, 0)
    cuda = torch.cuda.is_available()
    fe, weights = feature_extractor(extractor, layers.values(), weights, cuda)
    features = features_of(images.dataset, fe, batch_size, cuda)
    arrays = {f"features_{layer}": features[layer].numpy() for layer in {layers[m] for m in metrics if m != "fid"}}
    if "fid" in layers:
        f = features[layers["fid"]].double().numpy()
        arrays.update(mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return write_npz(out, **arrays, extractor=np.array(extractor), weights=np.array(str(weights or "default")),
                         size=np.array(images.size), count=np.array(images.count), source=np.array(str(source)))
    except ConfigError:
        raise
    except OSError as e:
        temporary(out).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out} ({e.strerror or type(e).__name__}); choose another out=...") from None


def check_out(out):
    """Refuse, in one line, a reference path that cannot be written: a directory, a name without ``.npz`` (the
    evaluation reads only ``.npz`` files), a read-only file, or a place under a file or a folder where no file can
    be made (tried with an empty temporary file: permissions, read-only mounts, /sys)."""
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise ConfigError(f"out={out} is a directory; give a file to write, e.g. out={out / 'reference.npz'}")
    if out.suffix != ".npz":
        raise ConfigError(f"out={out} does not end in .npz; give a .npz path, e.g. out={out.with_suffix('.npz')}")
    existing = next(p for p in out.parents if p.exists())
    problem = f"{existing} is a file" if not existing.is_dir() else None
    if problem is None:
        try:
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".tstitch-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            problem = f"no file can be made in {existing}: {e.strerror or type(e).__name__}"
    if problem is None and out.exists() and not os.access(out, os.W_OK):
        problem = f"{out} is read-only"
    if problem:
        raise ConfigError(f"out={out} cannot be written ({problem}); choose another out=...")
