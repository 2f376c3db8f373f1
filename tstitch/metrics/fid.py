"""FID / IS / KID / precision-recall of samples against a reference set, through torch-fidelity
(``tstitch.metrics.fidelity``), and the FID's bootstrap interval (``fid_p5``, ``fid_p95``).

The interval (``tstitch.metrics.fd_bootstrap``: resamples of the samples' features against the reference's fixed
statistics, ``bootstrap`` replicates, 0 (none) by default, e.g. 100 for a set of thousands) reads the samples'
features again, one more pass of the extractor over the set (``fidelity.evaluate`` does not hand its features
out), and costs what ``fd_bootstrap`` says a replicate (2048-d Inception features on CPUs: tens of seconds
each). The reference's features come from the cache ``evaluate`` has just filled, or its statistics
from its file. The FID itself is ``evaluate``'s, unchanged."""
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from tstitch.data.imageset import open_set
from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value, bootstrapped, check_bootstrap, fd_interval, fidelity


class FidelityMetric(MetricBase):
    """``metrics`` (fid, isc, kid, prc) of samples against ``reference`` (an image folder, an images .npz or a
    statistics .npz such as ADM's VIRTUAL_imagenet256_labeled.npz), with ``extractor`` (Inception-v3 by default,
    weights from torch-fidelity's cache or ``weights``); reference features are cached under ``cache_root``."""

    values = (*bootstrapped(Value("fid", "FID")), Value("isc", "IS", better="higher"), Value("kid", "KID", "{:.4f}"),
              Value("kid_std", "KID std", "{:.4f}", plot=False), Value("precision", "precision", "{:.4f}", "higher"),
              Value("recall", "recall", "{:.4f}", "higher"))

    def __init__(self, reference, metrics=("fid",), extractor=fidelity.INCEPTION, weights=None, kid_subset_size=1000,
                 prc_neighborhood=3, batch_size=64, cache_root=None, float_range="auto", bootstrap=0):
        from tstitch.data.imageset import NAMED
        from tstitch.data.toy import features  # noqa: F401 - registers the toy extractor with torch-fidelity

        if str(reference) not in NAMED and not Path(reference).exists():
            raise ConfigError(f"metric reference not found: {reference}; give metric.reference=PATH "
                              "(tstitch-evaluate: reference=PATH)")
        self.reference, self.extractor, self.weights = str(reference), extractor, weights
        self.options = {"metrics": list(metrics), "extractor": extractor, "weights": weights,
                        "kid_subset_size": kid_subset_size, "prc_neighborhood": prc_neighborhood,
                        "batch_size": batch_size, "cache_root": cache_root, "float_range": float_range}
        self.bootstrap = check_bootstrap(bootstrap) if "fid" in metrics else 0

    def evaluate(self, path):
        """Everything ``fidelity.evaluate`` says of the sample set at ``path`` (values, notes, cache)."""
        return fidelity.evaluate(path, self.reference, **self.options)

    def score_file(self, path) -> dict:
        keys = {v.key for v in self.values}
        out = {k: float(v) for k, v in self.evaluate(path).items() if k in keys}
        return {**out, **self.interval(path)}

    def interval(self, path) -> dict:
        """``{"fid_p5", "fid_p95"}`` of the sample set at ``path`` (see the module docstring); {} without
        bootstrap replicates."""
        if not self.bootstrap:
            return {}
        o = self.options
        layer = fidelity.feature_layers(self.extractor, ["fid"])["fid"]
        cuda = torch.cuda.is_available()
        fe, weights = fidelity.feature_extractor(self.extractor, [layer], self.weights, cuda)
        channels = fidelity.channels_for(self.extractor)
        samples = open_set(path, "samples", o["float_range"], channels)
        features = fidelity.features_of(samples.dataset, fe, o["batch_size"], cuda)[layer]  # (N, D)
        stats = fidelity.statistics(self.reference)
        if stats is None:  # the reference's features: from a tstitch-reference file, else the cache
            kept = fidelity.stored(self.reference, self.extractor)
            if kept is not None and layer in kept["layers"]:
                ref = fidelity.stored_features(self.reference, [layer])[layer]
            else:
                ref_set = open_set(self.reference, "reference", o["float_range"], channels)
                ref = fidelity.reference_features(self.reference, ref_set.dataset, fe, {layer}, weights,
                                                  o["batch_size"], cuda, o["cache_root"])[0][layer]
            ref = ref.double().numpy()
            stats = {"mu": ref.mean(0), "sigma": np.cov(ref, rowvar=False)}
        return fd_interval("fid", features, stats, self.bootstrap)

    def __call__(self, images, labels=None) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "samples.npz"
            np.savez(path, arr_0=images.permute(0, 2, 3, 1).cpu().numpy())
            return self.score_file(path)

    def describe(self) -> dict:
        return {"extractor": self.extractor, "weights": os.path.basename(self.weights) if self.weights else "default",
                "reference": self.reference, "bootstrap": self.bootstrap}
