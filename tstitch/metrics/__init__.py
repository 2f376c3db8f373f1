"""Sample-quality metrics (the ``metric`` config group), one module each in this package, each declaring what it
reports.

A metric is a class on ``MetricBase`` whose ``values`` are ``Value``s (output key, label, number format, whether
lower or higher is better). It scores images in memory, ``metric(images, labels)`` (the ``tstitch`` sweep), or a
sample file, ``metric.score_file(path)`` (``tstitch-generate``'s samples.npz), and ``describe()`` says what it
compared with. A ``paired`` metric compares each image with the same seed's image from the last member alone,
which the sweep hands it first (``pair``). The table, the plots, the allocation search and the generator's
summary read labels, formats and directions from ``values()``, so adding a metric is one module here and one yaml
in ``conf/metric/`` (docs/metrics.md lists the metrics and their values).
"""
import functools
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

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

    def fmt(self, value: float) -> str:
        return self.format.format(value)

    @property
    def axis(self) -> str:
        return f"{self.label} ({self.better} is better)"

    @property
    def maximize(self) -> bool:
        return self.better == "higher"


class MetricBase:
    """What every metric has: the values it reports and whether it is paired (see the module docstring)."""

    values: tuple = ()
    paired = False

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | list | None = None) -> dict:
        """Values of uint8 NCHW ``images`` (conditioned on ``labels``: classes or prompts)."""
        raise NotImplementedError

    def score_file(self, path: str | Path) -> dict:
        """Values of the sample set in an ADM-style ``.npz`` (``tstitch-generate``'s samples.npz)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What it compared with (extractor, reference, ...), for the records."""
        raise NotImplementedError

    def pair(self, images: torch.Tensor) -> None:
        """Paired metrics: the images of the last member alone on the same seeds, before any row is scored."""
        raise NotImplementedError(f"{type(self).__name__} is not a paired metric")

    def check_files(self) -> None:
        """Raise ConfigError now if ``score_file`` could not work (checked before a sample set is made)."""


@functools.cache
def values() -> dict[str, Value]:
    """``{key: Value}`` of every metric module in this package, in module order."""
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, MetricBase) and obj is not MetricBase:
                out.update({v.key: v for v in obj.values})
    return out


def build(cfg) -> MetricBase | None:
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


def read_samples(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 NCHW images, labels or None) of an ADM-style samples.npz."""
    with np.load(path) as z:
        labels = torch.from_numpy(z["arr_1"]) if "arr_1" in z else None
        return torch.from_numpy(z["arr_0"]).permute(0, 3, 1, 2), labels


def __getattr__(name):
    """``tstitch.metrics.FashionMetric`` and the other classes by their short names (the shipped yamls' targets)."""
    short = {"FashionMetric": "fashion", "FidelityMetric": "fid", "ClipMetric": "clip"}
    if name in short:
        return getattr(importlib.import_module(f"{__name__}.{short[name]}"), name)
    raise AttributeError(name)
