"""Every fast path against the plain float32 path on CPU, with the tolerance it is held to (relative L2 error of
the final samples of a stitched toy-zoo run: 10 DDIM steps, guidance 3, 0.4 : 0.6)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tstitch import fast, seeds, zoo
from tstitch.errors import ConfigError
from tstitch.sample import sample

OPTIONS = dict(fractions=[0.4, 0.6], solver="ddim", steps=10, guidance=3.0)


def members():
    return [zoo.load("toy/small"), zoo.load("toy/large")]


@pytest.fixture(scope="module")
def plain():
    x, y, _ = seeds.draw(range(32), (1, 28, 28), 10, "balanced")
    return x, y, sample(members(), x, y, **OPTIONS).x


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("switches,tolerance", [
    (dict(precision="bf16"), 0.05),      # 8-bit mantissa; guidance 3 amplifies it along the trajectory
    (dict(precision="fp16"), 0.01),
    (dict(channels_last=True), 1e-6),
    pytest.param(dict(compile=True), 1e-5, marks=pytest.mark.slow),  # inductor's fused kernels: float32 rounding
])
def test_fast_path_matches_plain_float32(plain, switches, tolerance):
    x, y, ref = plain
    out = sample(fast.speed_up(members(), "cpu", **switches), x, y, **OPTIONS).x
    assert out.dtype == torch.float32 and rel(out, ref) <= tolerance, rel(out, ref)


def test_autocast_member_keeps_the_protocol_and_float32_outputs():
    (m,) = fast.speed_up([zoo.load("toy/large")], "cpu", precision="bf16")
    out = m(torch.randn(2, 1, 28, 28), 500, torch.tensor([1, 2]))
    assert out.eps.dtype == torch.float32 and out.v.dtype == torch.float32
    assert m.name == "toy-dit-large" and m.space.shape == (1, 28, 28)


def test_unknown_precision_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="fast.precision must be one of"):
        fast.speed_up(members(), "cpu", precision="int4")
    exe = str(Path(sys.executable).parent / "tstitch")
    r = subprocess.run([exe, "+debug=tiny", "fast.precision=fp8", f"hydra.run.dir={tmp_path}"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("tstitch: error: fast.precision")


def test_main_job_runs_in_bf16(tmp_path):
    exe = str(Path(sys.executable).parent / "tstitch")
    r = subprocess.run([exe, "+debug=tiny", "fast=bf16", "metric=none", f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"precision": "bf16"' in (tmp_path / "run.json").read_text()
