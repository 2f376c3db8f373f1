"""The FD/FID bootstrap interval: resamples of the generated features (never the reference), each its own draw of
the fixed seed's generator; the metrics' own values unchanged to the bit."""
import numpy as np
import pytest
import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_statistics_to_metric

from tstitch.data.imageset import Images
from tstitch.data.toy import data, features
from tstitch.errors import ConfigError
from tstitch.metrics import fd_bootstrap, fd_interval


def frechet(x, reference):
    """torch-fidelity's FD of the rows ``x`` against ``reference`` statistics, float64."""
    return fid_statistics_to_metric({"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}, reference, False)[
        "frechet_inception_distance"]


@pytest.fixture
def fixed():
    """40 generated 5-d features and reference statistics of another 300 (mean shifted)."""
    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(5, 5))
    ref = rng.normal(size=(300, 5)) @ mixing + 0.5
    return rng.normal(size=(40, 5)) @ mixing, {"mu": ref.mean(0), "sigma": np.cov(ref, rowvar=False)}


def test_each_replicate_is_the_fd_of_its_own_resample_of_the_samples(fixed):
    feats, reference = fixed
    got = fd_bootstrap(feats, reference, replicates=12, seed=3)
    rng = np.random.default_rng(3)
    direct = [frechet(feats[rng.integers(0, 40, 40)], reference) for _ in range(12)]
    assert got == pytest.approx(direct, rel=1e-9)
    assert len(set(np.round(got, 6))) == 12  # twelve resamples, not one twelve times
    assert frechet(feats, reference) not in got  # a resample, not the set itself
    assert fd_bootstrap(feats, reference, replicates=12, seed=3) == pytest.approx(got, rel=0, abs=0)  # fixed seed
    assert not np.allclose(fd_bootstrap(feats, reference, replicates=12, seed=4), got)
    interval = fd_interval("x", feats, reference, 12)
    assert list(interval) == ["x_p5", "x_p95"] and fd_interval("x", feats, reference, 0) == {}
    seed0 = fd_bootstrap(feats, reference, replicates=12)  # the interval's replicates: the fixed seed 0
    assert list(interval.values()) == pytest.approx(np.percentile(seed0, (5, 95)), rel=1e-12)


def test_fashion_fd_is_torch_fidelitys_to_the_bit_and_its_interval_the_bootstrap_of_its_features(fashion_test_cut):
    """On the test set's first 300 images (``fashion_test_cut``): the reference statistics made here by hand, apart
    from FashionMetric's cached ones."""
    from tstitch.metrics.fashion import FashionMetric

    x, y = data.load("test")[:2]
    images, labels = x[:64], y[:64]
    m = FashionMetric(bootstrap=100)
    out = m(images, labels)
    before = torch_fidelity.calculate_metrics(  # what FashionMetric called before it kept the features
        input1=Images(images), input2=m.reference, fid=True, feature_extractor=m.extractor,
        feature_layer_fid="features", feature_extractor_weights_path=m.weights, cuda=False, save_cpu_ram=True,
        verbose=False, cache=True, cache_root=m.cache_root, input2_cache_name=m.cache_name, batch_size=500)
    assert out["fd"] == before["frechet_inception_distance"]
    fe = features.FashionFeatures(features.NAME, ["features"])
    with torch.no_grad():
        mine = fe(images)[0].double().numpy()
        ref = torch.cat([fe(x[i:i + 2000])[0] for i in range(0, len(x), 2000)]).double().numpy()
    expected = fd_interval("fd", mine, {"mu": ref.mean(0), "sigma": np.cov(ref, rowvar=False)}, 100)
    assert [out["fd_p5"], out["fd_p95"]] == pytest.approx([expected["fd_p5"], expected["fd_p95"]], rel=1e-4)
    assert out["fd_p5"] < out["fd_p95"] and m.describe()["bootstrap"] == 100
    alone = FashionMetric(bootstrap=0)(images, labels)
    assert alone == {"fd": out["fd"], "accuracy": out["accuracy"]}


def test_fid_interval_against_statistics_and_against_images(tmp_path, monkeypatch):
    from tstitch.metrics.fid import FidelityMetric

    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "cache"))
    x = data.load("test")[0]
    samples, ref = x[:48], x[1000:1400]
    np.savez(tmp_path / "samples.npz", arr_0=samples.permute(0, 2, 3, 1).numpy())
    np.savez(tmp_path / "ref.npz", arr_0=ref.permute(0, 2, 3, 1).numpy())
    fe = features.FashionFeatures(features.NAME, ["features"])
    with torch.no_grad():
        mine, theirs = fe(samples)[0].double().numpy(), fe(ref)[0].double().numpy()
    stats = {"mu": theirs.mean(0), "sigma": np.cov(theirs, rowvar=False)}
    np.savez(tmp_path / "stats.npz", **stats)
    expected = fd_interval("fid", mine, stats, 20)
    for reference in ("stats.npz", "ref.npz"):  # the same interval: the reference's images are not resampled
        metric = FidelityMetric(str(tmp_path / reference), ["fid"], extractor=features.NAME, bootstrap=20)
        out = metric.score_file(tmp_path / "samples.npz")
        assert [out["fid_p5"], out["fid_p95"]] == pytest.approx([expected["fid_p5"], expected["fid_p95"]], rel=1e-4)
        plain = FidelityMetric(str(tmp_path / reference), ["fid"], extractor=features.NAME, bootstrap=0)
        assert plain.score_file(tmp_path / "samples.npz") == {"fid": out["fid"]}  # the FID itself, to the bit


@pytest.mark.parametrize("bad", [-1, 1, 2.5, True])
def test_bad_bootstrap_is_one_line_error(bad):
    from tstitch.metrics.fid import FidelityMetric

    with pytest.raises(ConfigError, match=rf"^metric.bootstrap={bad!r} is not allowed: give the number of bootstrap "
                                          r"replicates \(0: none, the default; e.g. 100 for a set of thousands\)$"):
        FidelityMetric("fashion-mnist-test", ["fid"], extractor=features.NAME, bootstrap=bad)
