"""Metrics of sample sets through torch-fidelity, with the toy feature extractor (Inception needs a download)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tstitch import fidelity
from tstitch.errors import ConfigError
from tstitch.fidelity import Images
from tstitch.toy import data, features

EXTRACTOR = features.NAME


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A 96-sample set from tstitch-generate, and the first 300 test images as npz, folder and statistics."""
    root = tmp_path_factory.mktemp("fidelity")
    exe = str(Path(sys.executable).parent / "tstitch-generate")
    r = subprocess.run([exe, "num_samples=96", "batch_size=48", "solver.steps=4", f"hydra.run.dir={root / 'gen'}"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    x = data.load("test")[0][:300]
    nhwc = x.permute(0, 2, 3, 1).numpy()
    np.savez(root / "ref.npz", arr_0=nhwc)
    (root / "ref").mkdir()
    for i, img in enumerate(nhwc):
        Image.fromarray(img[..., 0]).save(root / "ref" / f"{i:04d}.png")
    fe = features.FashionFeatures(EXTRACTOR, ["features"])
    with torch.no_grad():
        f = fe(x)[0].numpy()
    np.savez(root / "stats.npz", mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    return root


def test_npz_is_read_through_a_memory_map(sets):
    images = fidelity.npz_member(sets / "gen" / "samples.npz", "arr_0")
    assert isinstance(images, np.memmap) and images.shape == (96, 28, 28, 1)
    with np.load(sets / "gen" / "samples.npz") as z:
        assert np.array_equal(np.asarray(images), z["arr_0"])


def test_fid_is_the_same_from_images_folder_and_statistics(sets):
    samples = sets / "gen" / "samples.npz"
    got = [fidelity.evaluate(samples, sets / ref, extractor=EXTRACTOR)["fid"]
           for ref in ("ref.npz", "ref", "stats.npz")]
    assert got[0] > 0 and got[1] == pytest.approx(got[0], rel=1e-9) and got[2] == pytest.approx(got[0], rel=1e-6)


def test_all_metrics_and_their_provenance(sets):
    m = fidelity.evaluate(sets / "gen" / "samples.npz", sets / "ref.npz", metrics=["fid", "isc", "kid", "prc"],
                          extractor=EXTRACTOR, kid_subset_size=50)
    assert {"fid", "isc", "kid", "precision", "recall"} <= set(m) and 0 <= m["precision"] <= 1
    assert m["extractor"] == EXTRACTOR and m["reference"].endswith("ref.npz")
    same = fidelity.evaluate(sets / "ref.npz", sets / "ref.npz", metrics=["fid"], extractor=EXTRACTOR)
    assert abs(same["fid"]) < 1e-3
    folder_vs_own_stats = fidelity.evaluate(sets / "ref", sets / "stats.npz", metrics=["fid"], extractor=EXTRACTOR)
    assert abs(folder_vs_own_stats["fid"]) < 1e-3


def test_statistics_only_reference_cannot_give_kid(sets):
    with pytest.raises(ConfigError, match="statistics only"):
        fidelity.evaluate(sets / "gen" / "samples.npz", sets / "stats.npz", metrics=["kid"], extractor=EXTRACTOR)


def test_missing_inception_weights_offline_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*_, **__):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError, match=f"put it at {tmp_path}/checkpoints/weights-inception"):
        fidelity.inception_weights()
    with pytest.raises(ConfigError, match="not found at /nope.pth"):
        fidelity.inception_weights("/nope.pth")


def test_unknown_metric_and_bad_paths(sets):
    with pytest.raises(ConfigError, match="unknown metrics"):
        fidelity.evaluate(sets / "ref.npz", sets / "ref.npz", metrics=["fd"], extractor=EXTRACTOR)
    with pytest.raises(ConfigError, match="neither an image folder nor an .npz"):
        fidelity.evaluate(sets / "nope.png", sets / "ref.npz", extractor=EXTRACTOR)


def test_evaluate_command(sets, tmp_path):
    exe = str(Path(sys.executable).parent / "tstitch-evaluate")
    r = subprocess.run([exe, f"samples={sets / 'gen' / 'samples.npz'}", f"reference={sets / 'stats.npz'}",
                        f"extractor={EXTRACTOR}", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["fid"] > 0
    r = subprocess.run([exe, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "give samples=PATH" in r.stderr
