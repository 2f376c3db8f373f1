"""`tstitch-evaluate`: the extractor comes from the reference unless given (extractor=auto), and metrics.json lands
beside the samples it scored (never over an earlier one there) as well as in the run directory; the last line
says where."""
import json

import numpy as np
import pytest

from tstitch.cli.evaluate import extractor_of
from tstitch.data.toy import data


def test_auto_extractor_is_the_references_own(tmp_path):
    np.savez(tmp_path / "made.npz", mu=np.zeros(2), sigma=np.eye(2), extractor=np.array("tstitch-fashion"))
    np.savez(tmp_path / "images.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert [extractor_of(r) for r in ("fashion-mnist-test", "fashion-mnist-train", tmp_path / "made.npz",
                                      tmp_path / "images.npz", tmp_path / "broken.npz", tmp_path / "folder")] == [
        "tstitch-fashion", "tstitch-fashion", "tstitch-fashion", "inception-v3-compat", "inception-v3-compat",
        "inception-v3-compat"]


@pytest.fixture
def samples(tmp_path):
    """40 Fashion-MNIST test images as a sample set (samples.npz, NHWC uint8) in a folder of its own."""
    folder = tmp_path / "set"
    folder.mkdir()
    np.savez(folder / "samples.npz", arr_0=data.load("test")[0][:40].permute(0, 2, 3, 1).numpy())
    return folder / "samples.npz"


def test_fashion_reference_picks_the_toy_extractor_and_metrics_land_beside_the_samples(samples, tmp_path,
                                                                                      in_process, fashion_test_cut):
    first = in_process("tstitch-evaluate", f"samples={samples}", "reference=fashion-mnist-test",
                       f"hydra.run.dir={tmp_path / 'run1'}")
    assert first.returncode == 0, first.stderr[-2000:]
    beside, run1 = samples.parent / "metrics.json", tmp_path / "run1" / "metrics.json"
    result = json.loads(beside.read_text())
    assert result["extractor"] == "tstitch-fashion" and result["fid"] > 0 and run1.read_text() == beside.read_text()
    assert first.stdout.strip().splitlines()[-1] == f"tstitch-evaluate: metrics in {beside} and {run1}"

    kept = beside.read_bytes()
    second = in_process("tstitch-evaluate", f"samples={samples}", "reference=fashion-mnist-test", "metrics=[fid,kid]",
                        "kid_subset_size=20", f"hydra.run.dir={tmp_path / 'run2'}")
    assert second.returncode == 0, second.stderr[-2000:]
    run2 = tmp_path / "run2" / "metrics.json"
    assert beside.read_bytes() == kept and "kid" in json.loads(run2.read_text())  # the earlier one is not overwritten
    assert second.stdout.strip().splitlines()[-1] == (
        f"tstitch-evaluate: metrics in {run2} ({beside} is there already, from an earlier evaluation: not overwritten)")


def test_a_named_extractor_is_used_as_given(samples, tmp_path, in_process):
    """A plain images .npz as the reference means Inception under auto; extractor=tstitch-fashion is used as given."""
    reference = tmp_path / "ref.npz"
    np.savez(reference, arr_0=data.load("test")[0][100:300].permute(0, 2, 3, 1).numpy())
    assert extractor_of(reference) == "inception-v3-compat"
    r = in_process("tstitch-evaluate", f"samples={samples}", f"reference={reference}", "extractor=tstitch-fashion",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["extractor"] == "tstitch-fashion"


# metric=adm, the plain spelling (tstitch.cli.evaluate.plain_metric) -------------------------------------------

class TinyInception:
    """ADM's three outputs from a seeded random convolution, in Inception's place: pool (N, 14), logits (N, 10)
    and a (7, 4, 4) spatial map (tests/test_adm.py has the metric's own checks)."""

    name, fd_key, manifold, reads_statistics, mean_dtype = "tiny-inception", "fid", True, True, np.float32

    def __init__(self, weights=None, device="cpu"):
        import torch

        g = torch.Generator().manual_seed(0)
        self.weights = weights
        self.conv, self.fc = torch.randn(7, 3, 3, 3, generator=g), torch.randn(14, 10, generator=g)

    def __call__(self, x):
        import torch

        x = torch.nn.functional.interpolate(x.float() / 255, size=(9, 9), mode="bilinear")
        spatial = torch.relu(torch.nn.functional.conv2d(x, self.conv, stride=2))  # (N, 7, 4, 4)
        pool = torch.cat([spatial.mean((2, 3)), spatial.amax((2, 3))], 1)         # (N, 14)
        return {"pool": pool, "logits": pool @ self.fc, "spatial": spatial}


@pytest.fixture
def adm_sets(tmp_path, monkeypatch):
    """``extractor=tiny`` for metric=adm, an ADM-style reference batch of 40 images (its statistics computed from
    them) and 24 samples, 16 x 16."""
    from tstitch.metrics import adm

    monkeypatch.setitem(adm.NETWORKS, "tiny", TinyInception)
    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    np.savez(tmp_path / "samples.npz", arr_0=rng.integers(40, 200, (24, 16, 16, 3), dtype=np.uint8))
    return tmp_path


def test_plain_metric_spelling_is_hydras_name_of_the_group():
    from tstitch.cli.evaluate import plain_metric

    assert plain_metric(["samples=a.npz", "metric=adm", "reference=r.npz", "--help"]) == [
        "samples=a.npz", "metric@_global_=adm", "~metrics", "reference=r.npz", "--help"]  # adm has no metrics key
    assert plain_metric(["metric=adm", "metrics=[fid]"]) == ["metric@_global_=adm", "metrics=[fid]"]
    assert plain_metric(["metric=fid", "metrics=[fid,kid]"]) == ["metric@_global_=fid", "metrics=[fid,kid]"]
    assert plain_metric(["metric=fid"]) == ["metric@_global_=fid"]  # fid has its metrics key: evaluate's [fid] stays
    old = ["metric@_global_=adm", "~metrics", "~device", "samples=a.npz"]
    assert plain_metric(old) == old and plain_metric(["samples=a.npz"]) == ["samples=a.npz"]
    assert plain_metric(["metric=nope"]) == ["metric@_global_=nope"]  # Hydra lists the options there are


@pytest.mark.parametrize("name", ["none", "clip"])
def test_a_metric_that_cannot_score_a_file_is_one_line(name, tmp_path, in_process):
    r = in_process("tstitch-evaluate", f"metric={name}", "samples=a.npz", "reference=b.npz", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"tstitch-evaluate: error: metric={name} cannot score a sample set; give metric=fid (torch-fidelity) or "
        "metric=adm (ADM's evaluation suite)")
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_metric_adm_in_the_plain_spelling_scores_a_sample_set(adm_sets, in_process):
    """`tstitch-evaluate metric=adm ...`: metric=adm's keys at the top (its device too), its own numbers in
    metrics.json, the same as the metric computes on that file, and the same as the old spelling."""
    from tstitch.metrics import adm

    path = adm_sets
    common = [f"reference={path / 'ref.npz'}", f"samples={path / 'samples.npz'}", "extractor=tiny"]
    r = in_process("tstitch-evaluate", "metric=adm", *common, "device=cpu", f"hydra.run.dir={path / 'plain'}")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((path / "plain" / "metrics.json").read_text())
    direct = adm.AdmMetric(path / "ref.npz", extractor="tiny", device="cpu").score_file(path / "samples.npz")
    assert set(direct) == {"fid", "sfid", "isc", "precision", "recall"} and direct["fid"] > 0.1
    assert {k: result[k] for k in direct} == direct and result["extractor"] == "tiny-inception"
    r = in_process("tstitch-evaluate", "metric@_global_=adm", "~metrics", "~device", *common,
                   f"hydra.run.dir={path / 'old'}")
    assert r.returncode == 0, r.stderr[-2000:]
    old = json.loads((path / "old" / "metrics.json").read_text())
    assert {k: old[k] for k in direct} == direct


def test_metric_adm_refuses_a_key_of_metric_fid_in_one_line(adm_sets, in_process):
    path = adm_sets
    r = in_process("tstitch-evaluate", "metric=adm", f"reference={path / 'ref.npz'}", f"samples={path / 'samples.npz'}",
                   "metrics=[fid,kid]", f"hydra.run.dir={path / 'run'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "tstitch-evaluate: error: metrics= is not an option of AdmMetric (the metric chosen); its options: "
        "batch_size, cache_root, device, extractor, float_range, reference, weights")
    assert not (path / "run").exists()  # refused before Hydra made the run directory


def test_extractor_auto_is_the_metrics_own_default_for_metric_adm(tmp_path):
    """metric=adm composes with its keys at the top, without fid's; extractor=auto means its inception."""
    from hydra import compose, initialize_config_dir

    from tstitch.cli import CONF, schema
    from tstitch.cli.evaluate import metric_options, plain_metric

    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    args = plain_metric(["metric=adm", f"reference={tmp_path / 'ref.npz'}", "samples=s.npz"])
    with initialize_config_dir(CONF, version_base=None):
        cfg = schema.check(compose("evaluate", args), "evaluate")
    options = metric_options(cfg)
    assert options["_target_"] == "tstitch.metrics.adm.AdmMetric" and options["extractor"] == "inception"
    assert "metrics" not in options and options["device"] == "auto"
