"""Sample-quality metrics through torch-fidelity (the ``metric`` config group).

A metric scores images in memory, ``metric(images, labels)`` (the ``tstitch`` sweep), or a sample file,
``metric.score_file(path)`` (``tstitch-generate``'s samples.npz), and ``describe()`` says what it compared with.
``FidelityMetric`` is FID / IS / KID / precision-recall against a reference set (``tstitch.fidelity``).
``FashionMetric`` is the toy zoo's: the Frechet distance (FD) of the registered ``tstitch-fashion`` feature
extractor against the Fashion-MNIST test set (reference statistics cached by torch-fidelity), and the class
accuracy of the same network on the generated images (do they show the class they were asked for?).
"""
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tstitch import fidelity
from tstitch.checkpoints import cache_dir, resolve
from tstitch.errors import ConfigError
from tstitch.imageset import Images


def build(cfg):
    """The configured metric, or None for ``metric=none`` (also when an experiment left options for the metric
    it would have used); a missing mandatory key is a one-line error."""
    if not cfg or "_target_" not in cfg:
        return None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"metric needs {', '.join(missing)}: give {' '.join(k + '=...' for k in missing)} "
                          "or metric=none")
    try:
        return instantiate(cfg)
    except InstantiationException as e:  # Hydra wraps our own one-line errors: unwrap them
        if isinstance(e.__cause__, ConfigError):
            raise e.__cause__ from None
        raise


def read_samples(path):
    """(uint8 NCHW images, labels or None) of an ADM-style samples.npz."""
    with np.load(path) as z:
        labels = torch.from_numpy(z["arr_1"]) if "arr_1" in z else None
        return torch.from_numpy(z["arr_0"]).permute(0, 3, 1, 2), labels


class FashionMetric:
    def __init__(self, weights=None, reference="test", cache_root=None):
        from tstitch.toy import data, features

        self.extractor = features.NAME
        self.weights = str(resolve(weights or features.WEIGHTS))
        self.net = features.FashionFeatures(features.NAME, ["logits"], self.weights).net
        self.reference_name = f"fashion-mnist-{reference}"
        self.reference = Images(data.load(reference)[0])
        digest = hashlib.sha1(Path(self.weights).read_bytes()).hexdigest()[:10]
        self.cache_name = f"{self.reference_name}-{digest}"  # new weights -> new cached statistics
        self.cache_root = str(cache_root or cache_dir() / "fidelity")

    def __call__(self, images, labels):
        """images: uint8 (N, 1, 28, 28); labels: the classes they were conditioned on."""
        from tstitch.toy.features import accuracy

        m = torch_fidelity.calculate_metrics(
            input1=Images(images), input2=self.reference, fid=True, feature_extractor=self.extractor,
            feature_layer_fid="features", feature_extractor_weights_path=self.weights, cuda=False,
            save_cpu_ram=True, verbose=False, cache=True, cache_root=self.cache_root,
            input2_cache_name=self.cache_name, batch_size=500)
        return {"fd": m["frechet_inception_distance"], "accuracy": accuracy(self.net, images, labels.cpu())}

    def score_file(self, path):
        images, labels = read_samples(path)
        if labels is None:
            raise ConfigError(f"{path} has no labels (arr_1); class accuracy needs them")
        return self(images, labels)

    def describe(self):
        return {"extractor": self.extractor, "weights": os.path.basename(self.weights),
                "reference": self.reference_name}


class FidelityMetric:
    """``metrics`` (fid, isc, kid, prc) of samples against ``reference`` (an image folder, an images .npz or a
    statistics .npz such as ADM's VIRTUAL_imagenet256_labeled.npz), with ``extractor`` (Inception-v3 by default,
    weights from torch-fidelity's cache or ``weights``); reference features are cached under ``cache_root``."""

    def __init__(self, reference, metrics=("fid",), extractor=fidelity.INCEPTION, weights=None, kid_subset_size=1000,
                 prc_neighborhood=3, batch_size=64, cache_root=None):
        from tstitch.toy import features  # noqa: F401 - registers the toy extractor with torch-fidelity

        if not Path(reference).exists():
            raise ConfigError(f"metric reference not found: {reference}; give metric.reference=PATH")
        self.reference, self.extractor, self.weights = str(reference), extractor, weights
        self.options = dict(metrics=list(metrics), extractor=extractor, weights=weights,
                            kid_subset_size=kid_subset_size, prc_neighborhood=prc_neighborhood, batch_size=batch_size)
        if cache_root is not None:
            self.options["cache_root"] = cache_root

    def score_file(self, path):
        result = fidelity.evaluate(path, self.reference, **self.options)
        return {k: float(v) for k, v in result.items() if k in ("fid", "isc", "kid", "precision", "recall")}

    def __call__(self, images, labels=None):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "samples.npz"
            np.savez(path, arr_0=images.permute(0, 2, 3, 1).cpu().numpy())
            return self.score_file(path)

    def describe(self):
        return {"extractor": self.extractor, "weights": os.path.basename(self.weights) if self.weights else "default",
                "reference": self.reference}


class ClipMetric:
    """CLIP score of text-conditioned samples against their prompts (``tstitch.clip_score``): ``prompts`` is the
    run's prompt set config (the samples.npz labels are indices into it), ``model`` a hub id or local directory."""

    def __init__(self, prompts, model="openai/clip-vit-large-patch14", batch_size=64, device="cpu"):
        from tstitch import prompts as prompt_sets
        from tstitch.clip_score import load_clip

        if not prompts:
            raise ConfigError("metric=clip needs the run's prompt set: prompts=demo, or prompts=file prompts.path=...")
        self.prompts = prompt_sets.load(**prompts)
        self.model, self.batch_size, self.clip = str(model), batch_size, load_clip(model, device)

    def __call__(self, images, prompts):
        from tstitch.clip_score import clip_score

        return {"clip_score": clip_score(images, prompts, batch_size=self.batch_size, clip=self.clip)}

    def score_file(self, path, chunk=1024):
        """Streamed over the memory-mapped samples: the mean of per-chunk means weighted by their sizes."""
        from tstitch.clip_score import clip_score

        images, labels = fidelity.npz_member(path, "arr_0"), fidelity.npz_member(path, "arr_1")
        total = 0.0
        for start in range(0, len(images), chunk):
            batch = torch.from_numpy(np.array(images[start:start + chunk])).permute(0, 3, 1, 2)
            texts = [self.prompts[int(i)] for i in labels[start:start + chunk]]
            total += clip_score(batch, texts, batch_size=self.batch_size, clip=self.clip) * len(batch)
        return {"clip_score": total / len(images)}

    def describe(self):
        return {"model": self.model, "prompts": len(self.prompts)}
