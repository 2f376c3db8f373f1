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
                                                                                      in_process):
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
