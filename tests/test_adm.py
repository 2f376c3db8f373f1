"""ADM's evaluation suite (tstitch/metrics/adm.py): each number against ADM's formula, written out here as
guided-diffusion's evaluations/evaluator.py computes it, on fixed features; the metric's one extraction and cached
reference with a tiny random network in Inception's place; torch-fidelity's Inception with random weights (nothing
can be downloaded here) for the real network path, sFID's 7 x 17 x 17 tap included."""
import numpy as np
import pytest
import torch
from scipy import linalg

from tstitch.errors import ConfigError
from tstitch.metrics import adm, fidelity

# ADM's formulas, as evaluations/evaluator.py writes them --------------------------------------------------------

def adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6, sqrtm=linalg.sqrtm):
    """FIDStatistics.frechet_distance (ADM passes disp=False, which only adds an error estimate; SciPy 1.16
    deprecated it)."""
    covmean = sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def adm_statistics(features):
    """Evaluator.compute_statistics on float32 activations."""
    features = np.asarray(features, dtype=np.float32)
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def adm_inception_score(logits, split_size=5000):
    """Evaluator.compute_inception_score on the softmax of the logits (float64 here)."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def brute_force_precision_recall(reference, samples, k=3):
    """Every distance in float64; a point's radius is the k-th smallest distance to the *other* points of its set
    (itself left out by index, a duplicate of it kept: ADM's index k of the sorted row, whose index 0 is itself)."""
    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        return np.sort(d, 1)[:, k - 1]
    d = np.sqrt(((samples[:, None] - reference[None]) ** 2).sum(-1))  # (N_samples, N_reference)
    return float(np.mean((d <= radii(reference)[None]).any(1))), float(np.mean((d <= radii(samples)[:, None]).any(0)))


def nhwc(spatial):
    """ADM's sFID features: NHWC, flattened (numpy, independent of adm.flatten_spatial)."""
    return np.transpose(np.asarray(spatial), (0, 2, 3, 1)).reshape(len(spatial), -1)


# The numbers on fixed features ---------------------------------------------------------------------------------

def covariance_pair(d=16, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(400, d))
    b = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) * 0.5 + 0.7
    return (*adm_statistics(a), *adm_statistics(b))


def test_frechet_distance_is_adms_on_fixed_statistics():
    mu1, sigma1, mu2, sigma2 = covariance_pair()
    got = adm.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert got > 1 and got == pytest.approx(adm_frechet(mu1, sigma1, mu2, sigma2), rel=1e-12)
    assert adm.frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0, abs=1e-9)


def test_a_singular_product_is_taken_again_with_eps_on_the_diagonals(monkeypatch):
    """ADM's fallback: when the root of sigma1 sigma2 is not finite, the root of (sigma1 + eps I)(sigma2 + eps I)."""
    mu1, sigma1, mu2, sigma2 = covariance_pair()
    real = linalg.sqrtm

    def failing_on_the_plain_product(a):
        return np.full_like(a, np.nan) if np.array_equal(a, sigma1.dot(sigma2)) else real(a)

    monkeypatch.setattr(adm.linalg, "sqrtm", failing_on_the_plain_product)
    with pytest.warns(UserWarning, match="singular"):
        got = adm.frechet_distance(mu1, sigma1, mu2, sigma2)
    expected = adm_frechet(mu1, sigma1, mu2, sigma2, sqrtm=failing_on_the_plain_product)
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-13)
    assert got != pytest.approx(adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-5, sqrtm=failing_on_the_plain_product),
                                rel=1e-9)  # the offset is ADM's 1e-6, not another


def test_an_imaginary_root_is_refused_and_a_negligible_one_dropped(monkeypatch):
    mu, flipped, eye = np.zeros(2), np.diag([1.0, -1.0]), np.eye(2)  # sqrt(diag(1, -1)) = diag(1, i)
    with pytest.raises(ValueError, match="Imaginary"):
        adm_frechet(mu, flipped, mu, eye)
    with pytest.raises(ConfigError, match="imaginary part of 1: a covariance is not positive semi-definite"):
        adm.frechet_distance(mu, flipped, mu, eye)
    mu1, sigma1, mu2, sigma2 = covariance_pair()
    real = linalg.sqrtm
    monkeypatch.setattr(adm.linalg, "sqrtm", lambda a: real(a) + 1e-5j)  # below ADM's 1e-3: the real part kept
    assert adm.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
        adm_frechet(mu1, sigma1, mu2, sigma2, sqrtm=lambda a: real(a) + 1e-5j), rel=1e-12)


def test_statistics_are_adms_float32_mean_and_float64_covariance():
    f = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32) + 3
    mu, sigma = adm.statistics(torch.from_numpy(f))
    assert mu.dtype == np.float32 and sigma.dtype == np.float64
    assert np.array_equal(mu, np.mean(f, axis=0)) and np.array_equal(sigma, np.cov(f, rowvar=False))


def test_inception_score_takes_splits_of_5000_in_order_the_remainder_its_own():
    """12000 logits are splits of 5000, 5000 and 2000 (ADM); the last 2000 are confident, so any other rule
    (torch-fidelity's 10 shuffled splits, the remainder dropped or merged, 3 equal splits, one split) differs."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(size=(10000, 20)), 6 * rng.normal(size=(2000, 20))])
    got = adm.inception_score(torch.from_numpy(logits))
    assert got == pytest.approx(adm_inception_score(logits), rel=1e-10)

    def score(part):
        return adm_inception_score(part, split_size=len(part))
    others = {"torch-fidelity": isc_features_to_metric(torch.from_numpy(logits), 10)["inception_score_mean"],
              "remainder dropped": np.mean([score(logits[:5000]), score(logits[5000:10000])]),
              "remainder merged": np.mean([score(logits[:5000]), score(logits[5000:])]),
              "3 equal splits": np.mean([score(p) for p in np.array_split(logits, 3)]),
              "one split": score(logits)}
    for rule, value in others.items():
        assert abs(value - got) > 0.02 * got, rule
    assert adm.inception_score(torch.from_numpy(logits[:5000])) == pytest.approx(score(logits[:5000]), rel=1e-10)


def test_manifold_radius_is_the_kth_nearest_other_point_a_duplicate_counting():
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert adm.manifold_radii(points).tolist() == [36.0, 25.0, 9.0, 25.0, 81.0]  # squared, itself left out
    twins = torch.tensor([[0.0], [0.0], [1.0], [5.0]])
    assert adm.manifold_radii(twins).tolist() == [25.0, 25.0, 16.0, 25.0]


@pytest.mark.parametrize("rows", [adm.ROWS, 7])
def test_precision_and_recall_match_a_brute_force_knn(rows):
    """Samples packed in one corner of the reference's cloud: nearly all inside (precision) but covering a few
    reference points (recall); duplicates in both sets."""
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(80, 6))
    samples = 0.3 * rng.normal(size=(50, 6)) + 0.4
    reference[5], samples[7] = reference[3], samples[2]
    expected = brute_force_precision_recall(reference, samples)
    got = adm.precision_recall(torch.tensor(reference, dtype=torch.float32),
                               torch.tensor(samples, dtype=torch.float32), rows=rows)
    assert got == expected and got[0] > got[1] + 0.3  # they differ: swapped, they would not match


def test_spatial_features_are_flattened_in_tfs_nhwc_order():
    x = torch.arange(2 * 7 * 3 * 4).reshape(2, 7, 3, 4)
    assert np.array_equal(adm.flatten_spatial(x).numpy(), nhwc(x.numpy()))


# The metric, with a tiny random network in Inception's place ------------------------------------------------------

class TinyInception:
    """Inception's three outputs from a seeded random convolution: pool (N, 14), logits (N, 10) and a (7, 4, 4)
    spatial map."""

    name, fd_key, manifold, reads_statistics, mean_dtype = "tiny-inception", "fid", True, True, np.float32

    def __init__(self, weights=None, device="cpu"):
        g = torch.Generator().manual_seed(0)
        self.weights = weights
        self.conv, self.fc = torch.randn(7, 3, 3, 3, generator=g), torch.randn(14, 10, generator=g)

    def __call__(self, x):
        x = torch.nn.functional.interpolate(x.float() / 255, size=(9, 9), mode="bilinear")
        spatial = torch.relu(torch.nn.functional.conv2d(x, self.conv, stride=2))        # (N, 7, 4, 4)
        pool = torch.cat([spatial.mean((2, 3)), spatial.amax((2, 3))], 1)               # (N, 14)
        return {"pool": pool, "logits": pool @ self.fc, "spatial": spatial}


def tiny_features(images):
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW in memory too, as the metric reads it
        return {k: v.numpy() for k, v in TinyInception()(x).items()}


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The tiny network as ``extractor=tiny``, the extractions counted, and an ADM-style reference batch: 60 images
    with the four statistics of their tiny features (sFID's NHWC order)."""
    monkeypatch.setitem(adm.NETWORKS, "tiny", TinyInception)
    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "cache"))
    calls = []
    extract = adm.extract

    def counted(dataset, *args):
        calls.append(len(dataset))
        return extract(dataset, *args)
    monkeypatch.setattr(adm, "extract", counted)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    f = tiny_features(images)
    mu, sigma = adm_statistics(f["pool"])
    mu_s, sigma_s = adm_statistics(nhwc(f["spatial"]))
    np.savez(tmp_path / "ref.npz", arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    samples = np.clip(images[:30].astype(int) // 2 + 60, 0, 255).astype(np.uint8)  # darker, flatter: not the reference
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    return {"calls": calls, "images": images, "samples": samples, "path": tmp_path}


def test_one_extraction_gives_fid_sfid_is_and_precision_recall_as_adm_computes_them(tiny):
    path = tiny["path"]
    metric = adm.AdmMetric(path / "ref.npz", extractor="tiny", device="cpu")
    got = metric.evaluate(path / "samples.npz")
    assert tiny["calls"] == [30, 60] and got["reference_cache"] == "miss"  # the samples once, the reference once
    f, r = tiny_features(tiny["samples"]), tiny_features(tiny["images"])
    with np.load(path / "ref.npz") as z:
        expected = {"fid": adm_frechet(*adm_statistics(f["pool"]), z["mu"], z["sigma"]),
                    "sfid": adm_frechet(*adm_statistics(nhwc(f["spatial"])), z["mu_s"], z["sigma_s"]),
                    "isc": adm_inception_score(f["logits"].astype(np.float64))}
    expected["precision"], expected["recall"] = brute_force_precision_recall(r["pool"].astype(np.float64),
                                                                             f["pool"].astype(np.float64))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert got["fid"] > 0.1 and got["sfid"] > 1 and got["precision"] != got["recall"]
    again = metric.evaluate(path / "samples.npz")
    assert tiny["calls"] == [30, 60, 30] and again.pop("reference_cache") == "hit"
    assert again == {k: v for k, v in got.items() if k != "reference_cache"}  # the same numbers
    assert len(list((path / "cache" / "fidelity").glob("adm-reference-*.pt"))) == 1
    assert not list((path / "cache" / "fidelity").glob(".*"))  # no temporary file left behind
    assert metric.score_file(path / "samples.npz") == {k: got[k] for k in expected}
    assert metric(torch.from_numpy(tiny["samples"]).permute(0, 3, 1, 2)) == pytest.approx(
        {k: got[k] for k in expected}, rel=1e-9)  # in memory (the sweep), the same numbers


def test_the_reference_scored_against_itself(tiny):
    got = adm.AdmMetric(tiny["path"] / "ref.npz", extractor="tiny", device="cpu").score_file(tiny["path"] / "ref.npz")
    assert abs(got["fid"]) < 1e-4 and abs(got["sfid"]) < 1e-3 and got["precision"] == got["recall"] == 1.0


def test_a_reference_without_statistics_gets_them_from_its_images(tiny):
    path = tiny["path"]
    np.savez(path / "images_only.npz", arr_0=tiny["images"])
    full = adm.AdmMetric(path / "ref.npz", extractor="tiny", device="cpu").score_file(path / "samples.npz")
    computed = adm.AdmMetric(path / "images_only.npz", extractor="tiny", device="cpu").score_file(path / "samples.npz")
    assert computed == pytest.approx(full, rel=1e-9)


@pytest.mark.parametrize("case, options, match", [
    ("missing", {}, "missing.npz not found; give ADM's reference batch, metric.reference="),
    ("folder", {}, "folder.npz is not an .npz file"),
    ("stats_only", {}, "holds no images \\(arr_0\\)"),
    ("some_stats", {}, "holds mu, sigma but not mu_s, sigma_s"),
    ("wide_stats", {}, "holds 2048-d mu but tiny-inception gives 14-d features"),
    ("ref", {"extractor": "vgg16"}, "metric.extractor='vgg16' is not allowed: one of inception, dinov2"),
    ("ref", {"device": "gpu"}, "metric.device='gpu' is not allowed"),
    ("ref", {"batch_size": 0}, "metric.batch_size=0"),
])
def test_bad_references_and_options_are_one_line_errors(tiny, case, options, match):
    path, images = tiny["path"], tiny["images"]
    with np.load(path / "ref.npz") as z:
        stats = dict(z)
    if case == "folder":
        (path / "folder.npz").mkdir()
    if case == "stats_only":
        np.savez(path / "stats_only.npz", **{k: v for k, v in stats.items() if k != "arr_0"})
    if case == "some_stats":
        np.savez(path / "some_stats.npz", arr_0=images, mu=stats["mu"], sigma=stats["sigma"])
    if case == "wide_stats":
        np.savez(path / "wide_stats.npz", **{**stats, "mu": np.zeros(2048), "sigma": np.eye(2048)})
    with pytest.raises(ConfigError, match=match):
        adm.AdmMetric(path / f"{case}.npz", **{"extractor": "tiny", "device": "cpu", **options}).score_file(
            path / "samples.npz")


def test_samples_too_few_or_of_another_size_are_refused_before_extraction(tiny):
    path = tiny["path"]
    metric = adm.AdmMetric(path / "ref.npz", extractor="tiny", device="cpu")
    np.savez(path / "three.npz", arr_0=tiny["samples"][:3])
    with pytest.raises(ConfigError, match="the samples hold 3 images, but precision/recall look at each image's 3 "
                                          "nearest neighbours: give at least 4"):
        metric.score_file(path / "three.npz")
    np.savez(path / "big.npz", arr_0=np.zeros((8, 32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match="samples are 32x32 but reference .* holds 16x16 images"):
        metric.score_file(path / "big.npz")
    assert tiny["calls"] == []


def test_missing_inception_weights_are_named_before_any_sample(tiny):
    metric = adm.AdmMetric(tiny["path"] / "ref.npz", weights=tiny["path"] / "nowhere.pth", device="cpu")
    with pytest.raises(ConfigError, match="Inception weights not found at .*nowhere.pth"):
        metric.check_files()


# torch-fidelity's Inception with random weights: the real network path -------------------------------------------

@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A weights file of torch-fidelity's Inception-v3 architecture, random (He-initialised, so activations keep
    their scale through the 90-odd layers), loaded strictly by the real path."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fx

    with mock.patch.object(fx, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fx.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = fx.FeatureExtractorInceptionV3(adm.INCEPTION, ["2048"])
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
def test_inception_network_taps_mixed_6d_branch1x1_for_sfid(random_inception):
    """sFID's features are the first 7 channels of Mixed_6d's 1x1 branch (TF's mixed_6/conv), 7 x 17 x 17 for any
    input size (resized to 299), flattened to 2023 numbers."""
    network = adm.InceptionNetwork(random_inception, "cpu")
    block_input = []
    network.net.Mixed_6d.register_forward_hook(lambda module, args, out: block_input.append(args[0]))
    x = torch.randint(0, 256, (2, 3, 40, 24), dtype=torch.uint8)
    with torch.no_grad():
        out = network(x)
        tap = network.net.Mixed_6d.branch1x1(block_input[0])[:, :7]
    assert {k: tuple(v.shape) for k, v in out.items()} == {"pool": (2, 2048), "logits": (2, 1008),
                                                           "spatial": (2, 7, 17, 17)}
    assert torch.equal(out["spatial"], tap) and out["spatial"].std() > 0
    features = adm.extract(list(x), network, 2, "cpu")
    assert features["spatial"].shape == (2, 2023) and torch.equal(features["spatial"], nhwc_t(tap))


def nhwc_t(x):
    return torch.from_numpy(nhwc(x.numpy()))


@pytest.mark.slow
def test_the_suite_on_the_real_inception_path(random_inception, tmp_path, monkeypatch):
    """AdmMetric with extractor=inception end to end (random weights): a reference without statistics gets 2048-d
    and 2023-d ones from its images, cached; FID gets the pool statistics, sFID the spatial ones (the distance
    itself is tested above: a 2048-d matrix root takes 30 s on one CPU thread); the reference against itself has
    precision and recall 1."""
    images = np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=images)
    sizes = []
    monkeypatch.setattr(adm, "frechet_distance", lambda mu1, sigma1, mu2, sigma2: sizes.append(
        (mu1.shape, sigma1.shape, mu2.shape, sigma2.shape)) or float(np.square(mu1 - mu2).sum()))
    metric = adm.AdmMetric(tmp_path / "ref.npz", weights=random_inception, device="cpu", cache_root=tmp_path)
    got = metric.evaluate(tmp_path / "ref.npz")
    assert got["extractor"] == "inception-v3-compat" and got["reference_cache"] == "miss"
    assert got["precision"] == got["recall"] == 1.0 and got["isc"] > 1 and got["fid"] < 1e-9 and got["sfid"] < 1e-9
    assert sizes == [((2048,), (2048, 2048)) * 2, ((2023,), (2023, 2023)) * 2]
    (cached,) = tmp_path.glob("adm-reference-*.pt")
    kept = torch.load(cached, weights_only=True)
    assert kept["pool"].shape == (6, 2048) and kept["mu_s"].shape == (2023,) and kept["sigma_s"].shape == (2023, 2023)


# The commands ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tstitch_generate_scores_its_samples_with_metric_adm(tiny, tmp_path, in_process):
    """``metric=adm metric.reference=...`` composes, passes the schema, and scores the finished samples.npz (the toy
    zoo's 28 x 28 grayscale images, read as RGB) as the metric does on that file."""
    import json

    reference = np.random.default_rng(1).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "ref28.npz", arr_0=reference)
    r = in_process("tstitch-generate", "num_samples=8", "batch_size=8", "solver.steps=2", "timing.rounds=0",
                   "metric=adm", f"metric.reference={tmp_path / 'ref28.npz'}", "metric.extractor=tiny",
                   "metric.device=cpu", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads((tmp_path / "run" / "results.jsonl").read_text())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    direct = adm.AdmMetric(tmp_path / "ref28.npz", extractor="tiny", device="cpu").score_file(
        tmp_path / "run" / "samples.npz")
    assert set(direct) == {"fid", "sfid", "isc", "precision", "recall"}
    assert {k: row[k] for k in direct} == direct == manifest["scores"]
    assert manifest["metric"] == {"suite": "ADM evaluator", "extractor": "tiny-inception", "weights": "default",
                                  "reference": str(tmp_path / "ref28.npz")}


def test_tstitch_generate_names_missing_inception_weights_before_sampling(tmp_path, in_process, monkeypatch):
    """No cached weights and no network: one line naming the file and where to put it, exit code 2, no samples."""
    def offline(url, dst, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    np.savez(tmp_path / "ref28.npz", arr_0=np.zeros((8, 28, 28, 1), np.uint8))
    r = in_process("tstitch-generate", "num_samples=8", "metric=adm", f"metric.reference={tmp_path / 'ref28.npz'}",
                   f"hydra.run.dir={tmp_path / 'run'}", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1:] == [  # (torch may log a line of its own on its first CUDA probe)
        "tstitch-generate: error: Inception weights are not cached and cannot be downloaded (OSError); download "
        f"{fidelity.INCEPTION_URL} elsewhere and put it at "
        f"{tmp_path / 'torch' / 'hub' / 'checkpoints' / fidelity.INCEPTION_URL.rsplit('/', 1)[1]}, or set "
        "weights=... (metric.weights=...)"]
    assert not (tmp_path / "run" / "samples.npz").exists()


# FD-DINOv2 (extractor=dinov2), a tiny random network in DINOv2 ViT-L/14's place ---------------------------------

def edm2_fd_dinov2(images, model):
    """EDM2's calculate_metrics.py written out: DINOv2Detector (resize_mode='torch'), the float64 running sums of
    calculate_stats_for_iterable, and calculate_metrics_from_stats' distance (its reference statistics given)."""
    x = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=(224, 224),
                                        mode="bicubic", antialias=True) / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
    with torch.no_grad():
        f = model(x).double().numpy()
    n = len(f)
    mu = f.sum(0) / n
    return mu, (f.T @ f - np.outer(mu, mu) * n) / (n - 1)


def edm2_distance(mu, sigma, ref_mu, ref_sigma):
    m = np.square(mu - ref_mu).sum()
    s = linalg.sqrtm(np.dot(sigma, ref_sigma))
    return float(np.real(m + np.trace(sigma + ref_sigma - s * 2)))


class TinyVit(torch.nn.Module):
    """(N, 3, 224, 224) -> (N, 8): a seeded strided convolution and a mean, in DINOv2's place."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 14, stride=14)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_fd_dinov2_is_edm2s_on_the_reference_images(tiny, monkeypatch):
    """extractor=dinov2: the FD alone, the reference's statistics from its images (its Inception mu/sigma ignored),
    cached like the others."""
    monkeypatch.setattr(adm, "load_dinov2", lambda source=None: TinyVit())
    path = tiny["path"]
    metric = adm.AdmMetric(path / "ref.npz", extractor="dinov2", device="cpu")
    got = metric.evaluate(path / "samples.npz")
    model = TinyVit().eval()
    expected = edm2_distance(*edm2_fd_dinov2(tiny["samples"], model), *edm2_fd_dinov2(tiny["images"], model))
    assert got["fd_dinov2"] == pytest.approx(expected, rel=1e-5) and got["fd_dinov2"] > 1e-3
    assert not {"fid", "sfid", "isc", "precision", "recall"} & set(got) and got["extractor"] == "dinov2-vit-l-14"
    assert metric.evaluate(path / "samples.npz")["reference_cache"] == "hit" and tiny["calls"] == [30, 60, 30]


def test_dinov2_out_of_reach_is_one_line(tiny, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("no route to github.com")

    monkeypatch.setattr(torch.hub, "load", offline)
    metric = adm.AdmMetric(tiny["path"] / "ref.npz", extractor="dinov2", device="cpu")
    with pytest.raises(ConfigError, match="DINOv2 ViT-L/14 is not in torch hub's cache .* \\(RuntimeError\\); load it "
                                          "once with network access, or give metric.weights="):
        metric.check_files()


def test_tstitch_evaluate_scores_a_sample_set_with_metric_adm(tiny, in_process):
    """docs/adm_metrics.md's tstitch-evaluate command (metric=fid's keys sit at the top level there): metrics.json
    holds the metric's own numbers."""
    import json

    path = tiny["path"]
    r = in_process("tstitch-evaluate", "metric@_global_=adm", "~metrics", "~device", f"reference={path / 'ref.npz'}",
                   f"samples={path / 'samples.npz'}", "extractor=tiny", f"hydra.run.dir={path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((path / "run" / "metrics.json").read_text())
    direct = adm.AdmMetric(path / "ref.npz", extractor="tiny", device="cpu").score_file(path / "samples.npz")
    assert {k: result[k] for k in direct} == direct and result["extractor"] == "tiny-inception"
