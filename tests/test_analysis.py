"""The paper's analysis (tstitch/jobs/analysis.py, experiments/analysis/analyze.py): the probe does not change the
reference's trajectory, the cosine and the per-band spectral error are the quantities they claim to be (checked
against direct computations and on signals whose answer is known), and the script writes its figure and numbers."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tstitch
from tstitch.jobs import analysis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair():
    return [tstitch.load("toy/small"), tstitch.load("toy/large")]


def test_the_probe_leaves_the_reference_trajectory_as_sampling_alone(pair):
    x, y, rng = tstitch.seeds.draw(range(3), pair[-1].space.shape, 10, "balanced")
    tr = analysis.trace(pair, x, y, solver="ddim", steps=5, guidance=2.0)
    alone = tstitch.sample(pair, x, y, fractions=[0, 1], solver="ddim", steps=5, guidance=2.0)
    assert torch.equal(tr.x, alone.x)
    assert [int(t) for t in tr.t] == [int(t) for t in alone.timesteps] and len(tr.eps[0]) == 5
    # with the small member as reference, the trajectory is the small member's
    small = tstitch.sample(pair, x, y, fractions=[1, 0], solver="ddim", steps=5, guidance=2.0)
    assert torch.equal(analysis.trace(pair, x, y, reference=0, solver="ddim", steps=5, guidance=2.0).x, small.x)


def test_cosine_and_bands_against_direct_computation(pair):
    x, y, _ = tstitch.seeds.draw(range(2), pair[-1].space.shape, 10, "balanced")
    tr = analysis.trace(pair, x, y, solver="ddim", steps=4, guidance=1.0)
    cos, err = analysis.cosine(tr), analysis.bands(tr, 4)
    assert cos.shape == (2, 4) and err.shape == (2, 4, 4)
    np.testing.assert_allclose(cos[1], 1.0, atol=1e-6)          # the reference with itself
    assert np.all(err[1] == 0)
    # call 2, by hand: per-sample cosine of the flattened noise predictions, then the mean
    a, b = tr.eps[0][2].flatten(1), tr.eps[1][2].flatten(1)
    by_hand = float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())
    assert cos[0, 2] == pytest.approx(by_hand, rel=1e-5) and cos[0, 2] < 0.9999
    # x0 as the noise prediction implies it at the call's noise level
    abar = tr.abar[1]
    assert abar == pytest.approx(pair[-1].schedule.abar_at(float(tr.t[1])))
    assert torch.allclose(tr.x0[0][1] * abar ** 0.5 + (1 - abar) ** 0.5 * tr.eps[0][1], tr.x0[1][1] * abar ** 0.5
                          + (1 - abar) ** 0.5 * tr.eps[1][1], atol=1e-4)  # both from the same x_t
    assert np.all(err[0] > 0)


def test_band_error_sits_in_the_band_of_the_difference():
    """A difference that is a pure checkerboard (the highest frequency) shows only in the last band; a constant
    offset only in band 0."""
    base = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(16)] for i in range(16)])
    for shift, band in ((0.3 * checker, 3), (torch.full((16, 16), 0.3), 0)):
        tr = analysis.Trace(["a", "b"], 1, t=[0], step=[0], abar=[1.0], eps=[[base], [base]], x0=[[base + shift],
                                                                                                 [base]])
        err = analysis.bands(tr, 4)[0, 0]
        assert err[band] > 0 and all(err[k] == pytest.approx(0, abs=1e-6) for k in range(4) if k != band), err
    index = analysis.radial_bands((16, 16), 4)
    assert index[0, 0] == 0 and index[8, 8] == 3 and index.max() == 3


SCRIPT = ROOT / "experiments" / "analysis" / "analyze.py"


def test_the_script_writes_the_figure_and_numbers(tmp_path, monkeypatch, capsys):
    out = tmp_path / "an"
    proc = subprocess.run([sys.executable, str(SCRIPT), f"out={out}", "num_samples=2", "solver.steps=3", "threads=1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    numbers = json.loads((out / "analysis.json").read_text())
    assert numbers["members"] == ["toy-dit-small", "toy-dit-large"] and numbers["reference"] == "toy-dit-large"
    assert len(numbers["cosine"][0]) == 3 and len(numbers["band_error"][0][0]) == numbers["bands"] == 8
    assert (out / "analysis.png").stat().st_size > 10_000
    assert "toy-dit-small vs toy-dit-large: cosine" in proc.stdout
    # bad input: the script as ``python analyze.py ARG`` runs it (its __main__), in this process: it exits with the
    # one line the interpreter prints (exit code 1), having printed nothing else; any other exception fails here
    monkeypatch.chdir(tmp_path)
    for arg, says in (("num_samples=0", "num_samples"), ("stich=toy", "stich")):
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), f"out={out}", arg])
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        message = stop.value.code
        assert isinstance(message, str) and message.startswith("analyze.py: error:") and says in message, message
        assert "\n" not in message and capsys.readouterr() == ("", ""), message
