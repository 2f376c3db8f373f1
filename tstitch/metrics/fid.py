"""FID / IS / KID / precision-recall of samples against a reference set, through torch-fidelity
(``tstitch.metrics.fidelity``)."""
import os
import tempfile
from pathlib import Path

import numpy as np

from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value, fidelity


class FidelityMetric(MetricBase):
    """``metrics`` (fid, isc, kid, prc) of samples against ``reference`` (an image folder, an images .npz or a
    statistics .npz such as ADM's VIRTUAL_imagenet256_labeled.npz), with ``extractor`` (Inception-v3 by default,
    weights from torch-fidelity's cache or ``weights``); reference features are cached under ``cache_root``."""

    values = (Value("fid", "FID"), Value("isc", "IS", better="higher"), Value("kid", "KID", "{:.4f}"),
              Value("kid_std", "KID std", "{:.4f}", plot=False), Value("precision", "precision", "{:.4f}", "higher"),
              Value("recall", "recall", "{:.4f}", "higher"))

    def __init__(self, reference, metrics=("fid",), extractor=fidelity.INCEPTION, weights=None, kid_subset_size=1000,
                 prc_neighborhood=3, batch_size=64, cache_root=None, float_range="auto"):
        from tstitch.data.imageset import NAMED
        from tstitch.data.toy import features  # noqa: F401 - registers the toy extractor with torch-fidelity

        if str(reference) not in NAMED and not Path(reference).exists():
            raise ConfigError(f"metric reference not found: {reference}; give metric.reference=PATH "
                              "(tstitch-evaluate: reference=PATH)")
        self.reference, self.extractor, self.weights = str(reference), extractor, weights
        self.options = {"metrics": list(metrics), "extractor": extractor, "weights": weights,
                        "kid_subset_size": kid_subset_size, "prc_neighborhood": prc_neighborhood,
                        "batch_size": batch_size, "cache_root": cache_root, "float_range": float_range}

    def evaluate(self, path):
        """Everything ``fidelity.evaluate`` says of the sample set at ``path`` (values, notes, cache)."""
        return fidelity.evaluate(path, self.reference, **self.options)

    def score_file(self, path) -> dict:
        keys = {v.key for v in self.values}
        return {k: float(v) for k, v in self.evaluate(path).items() if k in keys}

    def __call__(self, images, labels=None) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "samples.npz"
            np.savez(path, arr_0=images.permute(0, 2, 3, 1).cpu().numpy())
            return self.score_file(path)

    def describe(self) -> dict:
        return {"extractor": self.extractor, "weights": os.path.basename(self.weights) if self.weights else "default",
                "reference": self.reference}
