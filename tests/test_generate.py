"""`tstitch-generate`: every image a function of its seed (batch size, device count, restarts), atomic shards,
resume, and an ADM-style samples.npz."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXE = str(Path(sys.executable).parent / "tstitch-generate")
COMMON = ["solver.steps=4", "stitch.fractions=[0.5,0.5]"]


def generate(run_dir, *args):
    r = subprocess.run([EXE, *COMMON, f"hydra.run.dir={run_dir}", *args], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(run_dir / "samples.npz") as z:
        return z["arr_0"], z["arr_1"], json.loads((run_dir / "manifest.json").read_text()), run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """12 seeds in batches of 5 on one process."""
    return generate(tmp_path_factory.mktemp("ref"), "num_samples=12", "batch_size=5", "png=true")


def test_npz_is_adm_layout_and_manifest_is_complete(reference):
    images, labels, manifest, run_dir = reference
    assert sorted(p.name for p in (run_dir / "png").iterdir()) == [f"{s:06d}.png" for s in range(12)]
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8 and labels.shape == (12,)
    assert manifest["nfe_per_image"] == [2, 2] and manifest["generated"] == 12 and manifest["world_size"] == 1
    assert manifest["s_per_image"] > 0 and manifest["images_per_second"] == pytest.approx(1 / manifest["s_per_image"])
    assert manifest["config"]["stitch"]["fractions"] == [0.5, 0.5] and "git" in manifest


def test_resume_generates_only_missing_seeds_and_gives_the_same_set(reference, tmp_path):
    images, labels, *_ = reference
    generate(tmp_path, "num_samples=7", "batch_size=3")
    (tmp_path / "shards" / ".000099-000100-r0.npz.123.tmp").write_bytes(b"half a shard from a killed run")
    images2, labels2, manifest, _ = generate(tmp_path, "num_samples=12", "batch_size=4")
    assert manifest["generated"] == 5 and manifest["resumed_from"] == 7
    assert np.array_equal(images2, images) and np.array_equal(labels2, labels)


def test_two_processes_give_the_same_set(reference, tmp_path):
    images, labels, *_ = reference
    images2, labels2, manifest, _ = generate(tmp_path, "num_samples=12", "batch_size=4", "trainer.devices=2",
                                          "trainer.strategy=ddp")
    assert manifest["world_size"] == 2 and manifest["s_per_image"] > 0  # reduced over both ranks
    assert np.array_equal(images2, images) and np.array_equal(labels2, labels)


def test_resume_with_other_settings_is_refused(tmp_path):
    generate(tmp_path, "num_samples=2", "batch_size=2")
    r = subprocess.run([EXE, *COMMON, f"hydra.run.dir={tmp_path}", "num_samples=4", "guidance.scale=1.5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "holds samples of another configuration (differs in: options)" in r.stderr
