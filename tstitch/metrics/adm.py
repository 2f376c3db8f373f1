"""ADM's evaluation suite (openai/guided-diffusion ``evaluations/evaluator.py``), the numbers DiT, LDM and T-Stitch
report: FID, sFID, Inception Score and precision/recall of a sample set against an ADM reference batch such as
``VIRTUAL_imagenet256_labeled.npz`` (``mu``/``sigma``, ``mu_s``/``sigma_s`` and 10k images in ``arr_0``), all from
one feature extraction of the samples. docs/adm_metrics.md says where it differs from torch-fidelity's numbers.

Features: torch-fidelity's ``FeatureExtractorInceptionV3``, the TF graph ``classify_image_graph_def.pb``
(inception-2015-12-05) ported to PyTorch, with TF1's bilinear resize to 299 and ``(x - 128) / 128``, as ADM's graph
does after its ``ExpandDims`` input. Its ``2048`` output is ADM's ``pool_3`` (FID, precision/recall) and its
``logits_unbiased`` (pool times the softmax weights, no bias) is ADM's ``softmax/logits/MatMul`` (IS).

sFID's ``mixed_6/conv`` is ``Mixed_6d.branch1x1``, neither Mixed_6e nor Mixed_6a: the graph numbers its mixed
blocks ``mixed`` .. ``mixed_10`` (Mixed_5b .. Mixed_7c), so ``mixed_6`` is the seventh, Mixed_6d, and each block's
plain ``conv`` is its 1x1 branch (torch-fidelity's ``utils/util_convert_inception_weights.py`` maps
``mixed_6/conv/conv2d_params`` to ``Mixed_6d.branch1x1.conv``). The tensor ``mixed_6/conv:0`` is the op after that
layer's ``batchnorm`` (the graph lists ``conv/batchnorm``, ``conv/CheckNumerics``, ``conv/control_dependency``,
``conv``), i.e. the ReLU, which is what ``BasicConv2d`` returns: 192 x 17 x 17. ADM keeps its first 7 channels
(``spatial[..., :7]``) and flattens NHWC: 17 x 17 x 7 = 2023 numbers, in (row, column, channel) order, which the
reference's ``mu_s``/``sigma_s`` follow; ``flatten_spatial`` keeps that order and ``InceptionNetwork`` checks
the 7 x 17 x 17 shape.

The numbers, each ADM's function written out here: ``frechet_distance`` (``FIDStatistics.frechet_distance``),
``inception_score`` (``Evaluator.compute_inception_score``: splits of 5000 in order, the remainder its own split),
``precision_recall`` (``ManifoldEstimator``: squared distances, each point's radius its 3rd nearest neighbour
not counting itself, precision = samples inside some reference ball, recall = reference images inside some sample
ball). ``extractor=dinov2`` computes FD-DINOv2 as EDM2's ``calculate_metrics.py`` does instead.
"""
import contextlib
import hashlib
import json
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from tstitch.data.imageset import Images, npz_member, open_set
from tstitch.errors import ConfigError
from tstitch.files import file_id, whole
from tstitch.metrics import MetricBase, Value
from tstitch.metrics.fidelity import INCEPTION, inception_weights
from tstitch.models.checkpoints import cache_dir

SPLIT_SIZE = 5000            # Evaluator.compute_inception_score(split_size=5000)
NEIGHBOURS = 3               # ManifoldEstimator(nhood_sizes=(3,))
SPATIAL_SHAPE = (7, 17, 17)  # mixed_6/conv[..., :7]: channels, rows, columns
ROWS = 1024                  # rows of a distance matrix computed at a time: memory and speed only
STATISTICS = ("mu", "sigma", "mu_s", "sigma_s")


def statistics(features, dtype=np.float32):
    """``(mu, sigma)`` of (N, D) features as ADM's ``compute_statistics``: the mean in the features' float32
    (``dtype``), the covariance in float64 (``np.cov``)."""
    f = np.asarray(features, dtype=dtype)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the square root by ``scipy.linalg.sqrtm``;
    a non-finite root is taken again with ``eps`` added to both diagonals, and a root whose diagonal has an
    imaginary part above 1e-3 is refused (ADM's ``FIDStatistics.frechet_distance``)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ConfigError(f"statistics of different sizes ({mu1.shape[0]}-d and {mu2.shape[0]}-d); give a "
                          "reference made with the same extractor")
    root = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        warnings.warn(f"the covariances' product is singular; adding {eps} to their diagonals", stacklevel=2)
        offset = np.eye(len(sigma1)) * eps
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ConfigError(f"the Frechet distance's matrix root has an imaginary part of "
                              f"{np.abs(root.imag).max():.3g}: a covariance is not positive semi-definite; "
                              "give more samples or statistics of the same extractor")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def inception_score(logits, split_size=SPLIT_SIZE) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of each run of ``split_size`` images in order (the last run may be shorter: 12000
    images are splits of 5000, 5000 and 2000), averaged unweighted (ADM's ``compute_inception_score``)."""
    log_p = torch.log_softmax(torch.as_tensor(logits).double(), dim=1)  # (N, classes)
    scores = []
    for part in log_p.split(split_size):
        p = part.exp()
        log_marginal = p.mean(0).log()                                  # log p(y) over this split
        scores.append((p * (part - log_marginal)).sum(1).mean().exp())
    return float(torch.stack(scores).mean())


def squared_distances(u, v):
    """(len(u), len(v)) squared Euclidean distances, |u|^2 - 2 u.v + |v|^2 floored at 0 (ADM's
    ``_batch_pairwise_distances``)."""
    return ((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None]).clamp_min(0)


def manifold_radii(features, k=NEIGHBOURS, rows=ROWS):
    """Each point's squared distance to its k-th nearest neighbour in ``features``, itself not counted (ADM takes
    index k of the sorted distances, where index 0 is the point itself; a duplicate counts as a neighbour)."""
    return torch.cat([squared_distances(block, features).kthvalue(k + 1, dim=1).values
                      for block in features.split(rows)])


def precision_recall(reference, samples, k=NEIGHBOURS, rows=ROWS):
    """``(precision, recall)``: the fraction of samples inside the k-NN ball of some reference point, and of
    reference points inside the ball of some sample (ADM's ``ManifoldEstimator.evaluate_pr``; a point on a ball's
    surface is inside)."""
    radii_ref, radii_samples = manifold_radii(reference, k, rows), manifold_radii(samples, k, rows)
    samples_in = torch.zeros(len(samples), dtype=torch.bool, device=samples.device)
    reference_in = torch.zeros(len(reference), dtype=torch.bool, device=reference.device)
    for start in range(0, len(samples), rows):
        d = squared_distances(samples[start:start + rows], reference)            # (rows, N_ref)
        samples_in[start:start + rows] = (d <= radii_ref[None]).any(1)
        reference_in |= (d <= radii_samples[start:start + rows, None]).any(0)
    return float(samples_in.double().mean()), float(reference_in.double().mean())


def flatten_spatial(x):
    """(N, C, H, W) -> (N, H * W * C) in TF's NHWC order, as ADM flattens ``mixed_6/conv[..., :7]``."""
    return x.permute(0, 2, 3, 1).reshape(len(x), -1)


class InceptionNetwork:
    """torch-fidelity's Inception-v3 (the TF FID weights): ``pool`` (N, 2048), ``logits`` (N, 1008, unbiased) and
    ``spatial`` (N, 7, 17, 17), the first 7 channels of ``Mixed_6d.branch1x1`` (TF's ``mixed_6/conv``)."""

    name, fd_key, manifold, reads_statistics, mean_dtype = INCEPTION, "fid", True, True, np.float32

    def __init__(self, weights, device):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights = inception_weights(weights)  # the cached download, or one line naming what is missing
        self.net = FeatureExtractorInceptionV3(INCEPTION, ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=self.weights).to(device)
        self._spatial = []
        self.net.Mixed_6d.branch1x1.register_forward_hook(lambda module, args, out: self._spatial.append(out))

    def __call__(self, x):
        self._spatial.clear()
        pool, logits = self.net(x)
        spatial = self._spatial[0][:, :SPATIAL_SHAPE[0]]
        if tuple(spatial.shape[1:]) != SPATIAL_SHAPE:
            raise RuntimeError(f"mixed_6/conv gave {tuple(spatial.shape[1:])}, not {SPATIAL_SHAPE}")
        return {"pool": pool, "logits": logits, "spatial": spatial}


class Dinov2Network:
    """DINOv2 ViT-L/14 as EDM2's ``DINOv2Detector`` uses it: bicubic antialiased resize to 224 (its ``torch`` mode),
    [0, 1], ImageNet mean/std, the CLS features (N, 1024). ``weights``: a local clone of facebookresearch/dinov2
    (null: torch hub's cache)."""

    name, fd_key, manifold, reads_statistics, mean_dtype = "dinov2-vit-l-14", "fd_dinov2", False, False, np.float64
    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, weights, device):
        self.weights = weights
        self.model = load_dinov2(weights).eval().requires_grad_(False).to(device)

    def __call__(self, x):
        x = torch.nn.functional.interpolate(x.float(), size=(224, 224), mode="bicubic", antialias=True) / 255
        mean, std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (self.MEAN, self.STD))
        return {"pool": self.model((x - mean) / std)}


def load_dinov2(source=None):
    """``dinov2_vitl14`` from torch hub (cached there) or from ``source``, a local clone of the repository."""
    try:
        if source:
            return torch.hub.load(str(source), "dinov2_vitl14", source="local")
        return torch.hub.load("facebookresearch/dinov2:main", "dinov2_vitl14", trust_repo=True, skip_validation=True,
                              verbose=False)
    except Exception as e:  # noqa: BLE001 - network, git and file errors alike get the same advice
        raise ConfigError(f"DINOv2 ViT-L/14 is not in torch hub's cache ({torch.hub.get_dir()}) and cannot be "
                          f"fetched ({type(e).__name__}); load it once with network access, or give "
                          "metric.weights=<a local clone of facebookresearch/dinov2>") from None


# A network: built as (weights, device); called on uint8 NCHW images, gives "pool" (N, D) and, if it has them,
# "logits" (IS) and "spatial" (N, C, H, W; sFID). name: recorded and in the cache key; fd_key: the FD's value key;
# manifold: precision/recall on the pool features; reads_statistics: the reference's mu/sigma/mu_s/sigma_s are its
# features' (else computed from the reference's images); mean_dtype: the dtype the features' mean is taken in.
NETWORKS = {"inception": InceptionNetwork, "dinov2": Dinov2Network}


@contextlib.contextmanager
def full_precision():
    """TF32 off while features are extracted (a sampler may have turned it on for the process)."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def extract(dataset, network, batch_size, device):
    """``{"pool", "logits", "spatial"}`` (those the network gives) of every image of ``dataset``, float32 on the
    CPU, ``spatial`` flattened NHWC (``flatten_spatial``)."""
    parts = defaultdict(list)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    with torch.no_grad(), full_precision():
        for batch in loader:
            for key, value in network(batch.to(device)).items():
                parts[key].append((flatten_spatial(value) if key == "spatial" else value).float().cpu())
    return {key: torch.cat(value) for key, value in parts.items()}


def resolve_device(device):
    """``auto`` (cuda when torch sees a GPU), ``cpu``, ``cuda`` or ``cuda:N`` present on this machine."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise ConfigError(f"metric.device={device!r} is not allowed: give auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device != "cpu" and (int(device.partition(":")[2] or 0) >= count):
        raise ConfigError(f"metric.device={device}, but torch sees {count} CUDA GPUs here; use metric.device=cpu")
    return device


def reference_statistics(path):
    """``{"mu", "sigma", "mu_s", "sigma_s"}`` of an ADM reference batch as stored, or None when it holds none of
    them (they are then computed from its images, as ADM's ``read_statistics`` does); some but not all is refused."""
    try:
        found = {key: npz_member(path, key) for key in STATISTICS}
    except Exception as e:  # noqa: BLE001 - zipfile and numpy raise many types for a damaged file
        raise ConfigError(f"reference {path} is not a readable .npz ({type(e).__name__}); give ADM's reference "
                          "batch, e.g. VIRTUAL_imagenet256_labeled.npz") from None
    missing = [key for key, value in found.items() if value is None]
    if len(missing) == len(STATISTICS):
        return None
    if missing:
        raise ConfigError(f"reference {path} holds {', '.join(k for k in STATISTICS if k not in missing)} but not "
                          f"{', '.join(missing)}; an ADM reference batch holds all four (or none: then they are "
                          "computed from its images)")
    return {key: np.asarray(value) for key, value in found.items()}


class AdmMetric(MetricBase):
    """FID, sFID, IS, precision and recall of samples against ``reference``, ADM's reference batch (see the module
    docstring); ``extractor=dinov2``: FD-DINOv2 instead. The reference's features are extracted once and cached
    under ``cache_root`` (default ``$TSTITCH_CACHE/fidelity``), keyed by its file, the extractor and its weights."""

    values = (Value("fid", "FID"), Value("sfid", "sFID"), Value("isc", "IS", better="higher"),
              Value("precision", "precision", "{:.4f}", "higher"), Value("recall", "recall", "{:.4f}", "higher"),
              Value("fd_dinov2", "FD-DINOv2"))

    def __init__(self, reference, extractor="inception", weights=None, batch_size=64, device="auto",
                 float_range="auto", cache_root=None):
        if extractor not in NETWORKS:
            raise ConfigError(f"metric.extractor={extractor!r} is not allowed: one of {', '.join(NETWORKS)}")
        path = Path(str(reference))
        if path.suffix != ".npz" or not path.is_file():
            problem = "is not an .npz file" if path.exists() else "not found"
            raise ConfigError(f"metric reference {reference} {problem}; give ADM's reference batch, "
                              "metric.reference=VIRTUAL_imagenet256_labeled.npz")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"metric.batch_size={batch_size!r}: give a whole number of images, at least 1")
        self.kind, self.reference, self.weights = NETWORKS[extractor], str(reference), weights
        self.batch_size, self.float_range, self.cache_root = batch_size, float_range, cache_root
        self.device = resolve_device(device)
        self.stats = reference_statistics(path) if self.kind.reads_statistics else None
        self.images = open_set(path, "reference", float_range, channels=3)
        if self.images is None:
            raise ConfigError(f"reference {path} holds no images (arr_0), which precision/recall and the cached "
                              "features need; give ADM's reference batch (VIRTUAL_imagenet256_labeled.npz holds 10k)")
        self._check_count("reference", self.images.count, computed=self.stats is None)
        self._network = None

    def network(self):
        """The feature network, built once (Inception's weights found or named as missing here)."""
        if self._network is None:
            self._network = self.kind(self.weights, self.device)
        return self._network

    def check_files(self):
        self.network()

    def evaluate(self, path) -> dict:
        """The values of the sample set at ``path`` (an images .npz or folder), with how it was read (``notes``),
        whether the reference's features came from the cache, the extractor and the reference."""
        samples = open_set(path, "samples", self.float_range, channels=3)
        if samples is None:
            raise ConfigError(f"samples {path} hold no images (arr_0); give an images .npz or an image folder")
        values, cache = self._score(samples.dataset, samples.count, samples.size)
        return {"notes": samples.notes() + self.images.notes(), **values, "reference_cache": cache,
                "extractor": self.kind.name, "reference": self.reference}

    def score_file(self, path) -> dict:
        keys = {v.key for v in self.values}
        return {k: v for k, v in self.evaluate(path).items() if k in keys}

    def __call__(self, images, labels=None) -> dict:
        """Values of uint8 NCHW ``images`` (labels are not used)."""
        size = (images.shape[2], images.shape[3], images.shape[1])
        return self._score(Images(images.cpu(), channels=3), len(images), size)[0]

    def describe(self) -> dict:
        return {"suite": "ADM evaluator", "extractor": self.kind.name,
                "weights": Path(str(self.weights)).name if self.weights else "default", "reference": self.reference}

    def _check_count(self, role, n, computed=True):
        """Refuse a set too small for a covariance (2) or for its points' k nearest neighbours (k + 1)."""
        need, why = (2, "a covariance needs 2") if computed else (1, "there is nothing to score")
        if self.kind.manifold and n < NEIGHBOURS + 1:
            need, why = NEIGHBOURS + 1, f"precision/recall look at each image's {NEIGHBOURS} nearest neighbours"
        if n < need:
            raise ConfigError(f"the {role} {'hold' if role == 'samples' else 'holds'} {n} image{'' if n == 1 else 's'}"
                              f", but {why}: give at least {need}")

    def _score(self, dataset, count, size):
        if tuple(size[:2]) != tuple(self.images.size[:2]):
            raise ConfigError(f"samples are {size[0]}x{size[1]} but reference {self.reference} holds "
                              f"{self.images.size[0]}x{self.images.size[1]} images; give a reference at the "
                              "samples' resolution")
        self._check_count("samples", count)
        network = self.network()
        features = extract(dataset, network, self.batch_size, self.device)
        reference, cache = self._reference_features(network)
        return self._values(features, reference), cache

    def _reference_features(self, network):
        """``({"pool", and "mu", "sigma", ... when the file holds no statistics}, "hit" | "miss")``: from the cache,
        or extracted now and stored there whole."""
        weights = getattr(network, "weights", None)
        source = {"suite": "adm", "reference": file_id(Path(self.reference).resolve()),
                  "reading": self.images.dataset.reading, "extractor": network.name,
                  "weights": file_id(Path(weights).resolve()) if weights else "default",
                  "statistics": self.stats is None}
        key = hashlib.sha256(json.dumps(source).encode()).hexdigest()[:24]
        path = Path(self.cache_root or cache_dir() / "fidelity") / f"adm-reference-{key}.pt"
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True), "hit"
        features = extract(self.images.dataset, network, self.batch_size, self.device)
        kept = {"pool": features["pool"]}
        if self.stats is None:
            for name, feature in (("", "pool"), ("_s", "spatial")):
                if feature in features:
                    mu, sigma = statistics(features[feature], network.mean_dtype)
                    kept.update({f"mu{name}": torch.from_numpy(mu), f"sigma{name}": torch.from_numpy(sigma)})
        path.parent.mkdir(parents=True, exist_ok=True)
        with whole(path) as tmp:
            torch.save(kept, tmp)
        return kept, "miss"

    def _values(self, features, reference):
        network = self.network()
        stats = self.stats or {k: v.numpy() for k, v in reference.items() if k != "pool"}
        for feature, mu in (("pool", "mu"), ("spatial", "mu_s")):
            if feature in features and stats[mu].shape[0] != features[feature].shape[1]:
                raise ConfigError(f"reference {self.reference} holds {stats[mu].shape[0]}-d {mu} but {network.name} "
                                  f"gives {features[feature].shape[1]}-d features; give statistics of that extractor")
        out = {network.fd_key: frechet_distance(*statistics(features["pool"], network.mean_dtype),
                                                stats["mu"], stats["sigma"])}
        if "spatial" in features:
            out["sfid"] = frechet_distance(*statistics(features["spatial"]), stats["mu_s"], stats["sigma_s"])
        if "logits" in features:
            out["isc"] = inception_score(features["logits"])
        if network.manifold:
            out["precision"], out["recall"] = precision_recall(reference["pool"].to(self.device),
                                                               features["pool"].to(self.device))
        return out
