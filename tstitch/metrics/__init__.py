"""Sample-quality metrics (the ``metric`` config group), one module each in this package, each declaring what it
reports.

A metric is a class on ``MetricBase`` whose ``values`` are ``Value``s (output key, label, number format, whether
lower or higher is better). It scores images in memory, ``metric(images, labels)`` (the ``tstitch`` sweep), or a
sample file, ``metric.score_file(path)`` (``tstitch-generate``'s samples.npz), and ``describe()`` says what it
compared with. A ``paired`` metric compares each image with the same seed's image from the last member alone,
which the sweep hands it first (``pair``). The table, the plots, the allocation search and the generator's
summary read labels, formats and directions from ``values()``, so adding a metric is one module here and one yaml
in ``conf/metric/`` (docs/metrics.md lists the metrics and their values).

A value can carry its spread (``Value.spread``: the keys of its low and high ends, values of their own): the FD and
FID metrics add a bootstrap interval over the sample set (``fd_bootstrap``; ``fd_p5``/``fd_p95``), which the
table shows in brackets and the trade-off plot as error bars.
"""
import dataclasses
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
    way is better (``lower`` or ``higher``). ``plot``: drawn in the trade-off plot (not a spread, say). ``spread``:
    the keys of the value's interval (low, high), e.g. ``("fd_p5", "fd_p95")``, or None."""

    key: str
    label: str
    format: str = "{:.2f}"
    better: str = "lower"
    plot: bool = True
    spread: tuple[str, str] | None = None

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


BOOTSTRAP = 100  # replicates of fd_bootstrap when called without a number; the metrics' option ``bootstrap`` is
# 0 (none) by default: at a few hundred samples the resamples' FDs sit above the set's own and spread wider than
# fresh seed sets (fd_bootstrap's docstring), and 2048-d Inception features cost ~30 s a replicate on a CPU
BOOTSTRAP_SEED = 0  # fixed: the same resamples for every allocation and every rerun
PERCENTILES = (5, 95)


def bootstrapped(value: Value) -> tuple[Value, Value, Value]:
    """``value`` with its bootstrap interval (``<key>_p5``, ``<key>_p95``, see ``fd_bootstrap``) and the interval's
    two ends as values of their own (not plotted as qualities)."""
    ends = tuple(Value(f"{value.key}_p{p}", f"{value.label} p{p}", value.format, value.better, plot=False)
                 for p in PERCENTILES)
    return dataclasses.replace(value, spread=(ends[0].key, ends[1].key)), *ends


def fd_bootstrap(features, reference: dict, replicates: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The Frechet distance (Heusel et al. 2017, eq. 6) of ``replicates`` bootstrap resamples of the generated
    ``features`` (N, D) against the fixed reference statistics ``reference`` (``{"mu", "sigma"}``): replicate b
    takes the rows ``rng.integers(0, N, N)``, its b-th draw from ``rng = np.random.default_rng(seed)``, and scores
    their mean and covariance. The reference is not resampled: the spread is the sample set's (its seeds') alone.

    Resamples repeat samples, and the FD grows as a set's distinct samples get fewer: where the set is small for its
    feature size the replicates sit above the set's own FD and spread wider than FDs of fresh seed sets do. Measured
    with the toy extractor (128-d), FD of Fashion-MNIST training images against the test set: 200 images, FD 46,
    replicates' p5-p95 62-115, fresh sets' 31-48; 4000 images (a darkened, class-0-free set), FD 32, replicates
    31-37, fresh sets 31-37. Read the interval as the spread of a large set; at a few hundred samples, compare
    allocations by their values on the same seeds.

    Float64, on the GPU when there is one; tr sqrt(S1 S2) as the sum of the square roots of the eigenvalues of the
    symmetric R S1 R, R = S2^(1/2) (torch-fidelity sums the roots of the eigenvalues of S1 S2: the same trace,
    found slower). 2048-d features on a busy 2-core CPU: about 30 s a replicate, where torch-fidelity's one FID
    takes 37 s for its eigenvalues; 128-d: 1-20 ms. Returns the (replicates,) distances."""
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def tensor(a):  # a float64 copy (arrays of a memory map are read-only)
        a = a.detach().cpu() if torch.is_tensor(a) else torch.from_numpy(np.array(a))
        return a.to(device, torch.float64, copy=True)

    f = tensor(features)  # (N, D)
    n = f.shape[0]
    mu2, sigma2 = tensor(reference["mu"]), tensor(reference["sigma"])  # (D,), (D, D)
    lam, vec = torch.linalg.eigh(sigma2)
    root = (vec * lam.clamp(min=0).sqrt()) @ vec.T  # R = S2^(1/2), (D, D); negative eigenvalues are rounding
    rng = np.random.default_rng(seed)
    out = np.empty(replicates)
    for b in range(replicates):
        x = f[torch.from_numpy(rng.integers(0, n, n)).to(device)]  # (N, D), rows drawn with replacement
        mu1 = x.mean(0)
        xc = x - mu1
        sigma1 = xc.T @ xc / (n - 1)  # (D, D), as np.cov
        covmean = torch.linalg.eigvalsh(root @ sigma1 @ root).clamp(min=0).sqrt().sum()
        out[b] = float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * covmean)
    return out


def fd_interval(key: str, features, reference: dict, replicates: int = BOOTSTRAP) -> dict:
    """``{"<key>_p5": ..., "<key>_p95": ...}``: the 5th and 95th percentiles of ``fd_bootstrap`` (linear
    interpolation, numpy's default); nothing when ``replicates`` is 0."""
    if not replicates:
        return {}
    low, high = np.percentile(fd_bootstrap(features, reference, replicates), PERCENTILES)
    return {f"{key}_p{PERCENTILES[0]}": float(low), f"{key}_p{PERCENTILES[1]}": float(high)}


def check_bootstrap(replicates) -> int:
    """The ``bootstrap`` option: a whole number of replicates, 0 (none) or at least 2."""
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 0 or replicates == 1:
        raise ConfigError(f"metric.bootstrap={replicates!r} is not allowed: give the number of bootstrap replicates "
                          f"(0: none, the default; e.g. {BOOTSTRAP} for a set of thousands)")
    return replicates


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
