"""A paired metric: how far each stitched image lands from the same seed's image made by the last member alone.

Every image of a sweep is a function of its seed, so an allocation's images and the last member's images of the
same seeds are pairs; the mean distance between the pairs ranks allocations by how much of the large model's
result they keep. Its spread is the spread of per-seed differences, not of two independent sets' statistics, so it
separates allocations with far fewer samples than FID needs (it says nothing of quality the large model lacks).

``space=pixels``: the root-mean-square difference of the uint8 images, in [0, 1] units; ``space=features``: the
Euclidean distance between the images' features from a torch-fidelity extractor (its FID layer).
"""
import numpy as np
import torch

from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value, read_samples


class PairedMetric(MetricBase):
    """``reference``: for ``score_file`` (``tstitch-generate``), the samples.npz of the last member alone on the
    same seeds; the ``tstitch`` sweep samples those images itself and hands them over with ``pair``."""

    values = (Value("paired", "paired distance", "{:.4f}"),)
    paired = True

    def __init__(self, space="pixels", extractor="inception-v3-compat", weights=None, reference=None, batch_size=64):
        if space not in ("pixels", "features"):
            raise ConfigError(f"metric.space={space!r} is not allowed: one of pixels, features")
        self.space, self.extractor, self.weights = space, extractor, weights
        self.reference, self.batch_size = reference, batch_size
        self.alone = None  # the last member's images, embedded once (pixels or features)
        self._extractor = None  # (feature extractor, its layer), built once

    def pair(self, images):
        self.alone = self._embed(images)

    def __call__(self, images, labels=None) -> dict:
        if self.alone is None or len(self.alone) != len(images):
            raise ConfigError("the paired metric needs the last member's images of the same seeds first (pair)")
        a, b = self._embed(images), self.alone
        return {"paired": float((a - b).norm(dim=1).mean() / (a.shape[1] ** 0.5 if self.space == "pixels" else 1))}

    def check_files(self):
        if self.reference is None:
            raise ConfigError("metric=paired scores a sample set against the last member alone on the same seeds: "
                              "give metric.reference=<that run's samples.npz>")

    def score_file(self, path) -> dict:
        self.check_files()
        images, labels = read_samples(path)
        alone, alone_labels = read_samples(self.reference)
        if len(alone) < len(images) or (labels is not None and alone_labels is not None
                                        and not torch.equal(labels, alone_labels[:len(labels)])):
            raise ConfigError(f"metric.reference={self.reference} is not the same seeds as {path} (fewer images or "
                              "other labels); give the last member's samples.npz of the same seed range")
        self.pair(alone[:len(images)])
        return self(images)

    def _embed(self, images):
        """(N, D) float64: the pixels in [0, 1], or the extractor's features."""
        if self.space == "pixels":
            return images.flatten(1).double() / 255
        from tstitch.data.imageset import Images
        from tstitch.data.toy import features  # noqa: F401 - registers the toy extractor with torch-fidelity
        from tstitch.metrics import fidelity

        if self._extractor is None:
            layer = fidelity.feature_layers(self.extractor, ["fid"])["fid"]
            self._extractor = fidelity.feature_extractor(self.extractor, [layer], self.weights, False)[0], layer
        fe, layer = self._extractor
        channels = fidelity.channels_for(self.extractor)
        found = fidelity.features_of(Images(images.cpu(), channels=channels), fe, self.batch_size, False)
        return torch.as_tensor(np.asarray(found[layer]), dtype=torch.float64)

    def describe(self) -> dict:
        return {"space": self.space, "extractor": self.extractor if self.space == "features" else None,
                "reference": self.reference or "the last member alone, sampled in the sweep"}
