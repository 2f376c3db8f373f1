"""Sample-quality metrics (the ``metric`` config group), one module each in this package, each declaring what it
reports.

A metric is a class on ``MetricBase`` whose ``values`` are ``Value``s (output key, label, number format, whether
lower or higher is better). It scores images in memory, ``metric(images, labels)`` (the ``tstitch`` sweep), or a
sample file, ``metric.score_file(path)`` (``tstitch-generate``'s samples.npz), and ``describe()`` says what it
compared with. A ``paired`` metric compares each image with the same seed's image from the last member alone,
which the sweep hands it first (``pair``). The table, the plots, the allocation search and the generator's
summary read labels, formats and directions from ``values()``, so adding a metric is one module here and one yaml
in ``conf/metric/``.

* ``fashion.FashionMetric``: the toy zoo's FD (toy feature net vs the Fashion-MNIST test set) and class accuracy.
* ``fid.FidelityMetric``: FID / IS / KID / precision-recall against a reference set (``tstitch.fidelity``).
* ``clip.ClipMetric``: CLIP score of text-conditioned samples against their prompts.
* ``paired.PairedMetric``: the mean distance to the same seed's image from the last member alone.
"""
import functools
import importlib
import pkgutil
from dataclasses import dataclass

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tstitch.errors import ConfigError


@dataclass(frozen=True)
class Value:
    """One number a metric reports: its key in rows, its label in tables and plots, its number format, and which
    way is better (``lower`` or ``higher``). ``plot``: drawn in the trade-off plot (not a spread, say)."""

    key: str
    label: str
    format: str = "{:.2f}"
    better: str = "lower"
    plot: bool = True

    def fmt(self, value):
        return self.format.format(value)

    @property
    def axis(self):
        return f"{self.label} ({self.better} is better)"

    @property
    def maximize(self):
        return self.better == "higher"


class MetricBase:
    """What every metric has: the values it reports and whether it is paired (see the module docstring)."""

    values: tuple = ()
    paired = False

    def pair(self, images):
        """Paired metrics: the images of the last member alone on the same seeds, before any row is scored."""
        raise NotImplementedError(f"{type(self).__name__} is not a paired metric")

    def check_files(self):
        """Raise ConfigError now if ``score_file`` could not work (checked before a sample set is made)."""


@functools.cache
def values():
    """``{key: Value}`` of every metric module in this package, in module order."""
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, MetricBase) and obj is not MetricBase:
                out.update({v.key: v for v in obj.values})
    return out


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


def __getattr__(name):
    """``tstitch.metrics.FashionMetric`` and the other classes by their short names (the shipped yamls' targets)."""
    short = {"FashionMetric": "fashion", "FidelityMetric": "fid", "ClipMetric": "clip", "PairedMetric": "paired"}
    if name in short:
        return getattr(importlib.import_module(f"{__name__}.{short[name]}"), name)
    raise AttributeError(name)
