"""`tstitch-train-features` as a Hydra command (key=value), and its spelling of before (--epochs ... --out FILE)
still running with one line naming the new one: both train the same net on a small Fashion-MNIST cut."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tstitch.data.toy import data

BIN = Path(sys.executable).parent


def idx(path, array):
    """An IDX file (gzip) as Fashion-MNIST ships it: uint8 images (N, 28, 28) or labels (N,)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """The first 256 training and 100 test images of Fashion-MNIST, in a folder laid out as the real one."""
    root = tmp_path_factory.mktemp("fashion")
    for split, n in (("train", 256), ("test", 100)):
        x, y = data.load(split)
        images, labels = data.FILES[split]
        idx(root / images, x[:n, 0].numpy())
        idx(root / labels, y[:n].numpy())
    return root


def train(small_set, cwd, *args):
    """The installed command in a subprocess, reading the small set through TSTITCH_FASHION_MNIST."""
    env = {**os.environ, "TSTITCH_FASHION_MNIST": str(small_set), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "tstitch-train-features"), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


@pytest.fixture
def train_here(small_set, in_process, monkeypatch):
    """The command's function in this process (``in_process``) on the small set: the same run without the start-up
    (the subprocess and TSTITCH_FASHION_MNIST: test_more_images_per_batch_than_the_set_is_one_line)."""
    monkeypatch.setattr(data, "ROOT", small_set)  # read from the environment once, at import
    return lambda cwd, *args: in_process("tstitch-train-features", *args, cwd=cwd)


def test_both_spellings_train_the_same_net(train_here, tmp_path):
    new = train_here(tmp_path, "epochs=1", "batch_size=32", "seed=3", f"out={tmp_path / 'new.safetensors'}",
                     f"hydra.run.dir={tmp_path / 'run_new'}")
    old = train_here(tmp_path, "--epochs", "1", "--batch-size=32", "--seed", "3", "--out",
                     tmp_path / "old.safetensors", f"hydra.run.dir={tmp_path / 'run_old'}")
    assert new.returncode == 0 and old.returncode == 0, new.stderr[-2000:] + old.stderr[-2000:]
    said = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert said == ["tstitch-train-features: the --flag spelling is deprecated; this runs as: tstitch-train-features "
                    f"epochs=1 batch_size=32 seed=3 out={tmp_path / 'old.safetensors'} "
                    f"hydra.run.dir={tmp_path / 'run_old'}"]
    assert "deprecated" not in new.stderr
    assert (tmp_path / "new.safetensors").read_bytes() == (tmp_path / "old.safetensors").read_bytes()
    meta = json.loads((tmp_path / "new.json").read_text())
    assert {k: meta["config"][k] for k in ("epochs", "batch_size", "seed")} == {"epochs": 1, "batch_size": 32,
                                                                                "seed": 3}
    other = json.loads((tmp_path / "old.json").read_text())
    other["config"]["out"] = str(tmp_path / "new.safetensors")
    assert (meta["test_accuracy"], meta["config"]) == (other["test_accuracy"], other["config"])
    assert f"weights in {tmp_path / 'new.safetensors'}" in new.stdout
    assert (tmp_path / "run_new" / "features.log").exists()  # the run's log in its run directory


def test_the_weights_go_to_the_run_directory_by_default(train_here, tmp_path):
    r = train_here(tmp_path, "epochs=1", "batch_size=64")
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "features").iterdir()
    assert (run / "features.safetensors").exists() and (run / "features.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def refused(r, tmp_path, message):
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"tstitch-train-features: error: {message}", \
        r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not list(tmp_path.glob("**/*.safetensors"))


@pytest.mark.parametrize("arg,message", [
    ("epochs=0", "epochs=0 is not allowed: give an integer >= 1"),
    ("lr=-1", "lr=-1 is not allowed: give a number > 0"),
    ("out=w.pt", "out='w.pt' is not a .safetensors file: give out=PATH.safetensors, or leave it out for "
                 "<run dir>/features.safetensors"),
])
def test_bad_values_are_one_line_before_training(train_here, tmp_path, arg, message):
    refused(train_here(tmp_path, "epochs=1", arg, f"hydra.run.dir={tmp_path / 'run'}"), tmp_path, message)  # last wins


def test_more_images_per_batch_than_the_set_is_one_line(small_set, tmp_path):
    """Through the installed command: its exit code, one line, and the set named by TSTITCH_FASHION_MNIST (256
    training images, not Debian's 60000)."""
    r = train(small_set, tmp_path, "epochs=1", "batch_size=1000", f"hydra.run.dir={tmp_path / 'run'}")
    refused(r, tmp_path, "batch_size=1000 is more than the 256 training images; give batch_size=128")
