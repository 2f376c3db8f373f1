"""Training: ADM's hybrid loss and the `tstitch-train` command (a few steps, real data, real export path)."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from tstitch.jobs.train import diffusion_loss
from tstitch.models import zoo
from tstitch.models.schedules import Schedule
from tstitch.sampling import gaussian


class Probe(torch.nn.Module):
    """A "net" returning a fixed eps and v, to see which part of the loss reaches which output."""

    def __init__(self, shape):
        super().__init__()
        self.eps = torch.nn.Parameter(torch.zeros(shape))
        self.v = torch.nn.Parameter(torch.zeros(shape))

    def forward(self, x, t, y):
        return torch.cat([self.eps.expand_as(x), self.v.expand_as(x)], dim=1)


def test_vb_term_trains_only_the_variance():
    chain = gaussian.chain(Schedule("linear").alphas_cumprod)
    net = Probe((1, 1, 4, 4))
    x0 = torch.rand(8, 1, 4, 4) * 2 - 1
    _, mse, vb = diffusion_loss(net, x0, torch.zeros(8, dtype=torch.long), chain, torch.Generator().manual_seed(0))
    vb.mean().backward()
    assert net.eps.grad.abs().max() == 0 and net.v.grad.abs().max() > 0
    net.zero_grad()
    mse.mean().backward()
    assert net.v.grad.abs().max() == 0 and net.eps.grad.abs().max() > 0



class Oracle(torch.nn.Module):
    """A "net" that knows the clean images: its eps is the noise that made x_t from them (or ``x0`` itself)."""

    def __init__(self, x0, chain, predict="noise"):
        super().__init__()
        self.x0, self.chain, self.predict = x0, chain, predict

    def forward(self, x, t, y):
        abar = self.chain["abar"][t].float().view(-1, 1, 1, 1)
        noise = (x - abar.sqrt() * self.x0) / (1 - abar).sqrt()
        eps = noise if self.predict == "noise" else self.x0
        return torch.cat([eps, torch.zeros_like(x)], dim=1)


def test_mse_is_against_the_noise_that_made_x_t():
    """L_simple = |eps - noise|^2: zero for a net that predicts the noise exactly, not for one that predicts x0."""
    chain = gaussian.chain(Schedule("linear").alphas_cumprod)
    x0 = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = torch.zeros(16, dtype=torch.long)
    _, mse, _ = diffusion_loss(Oracle(x0, chain), x0, y, chain, torch.Generator().manual_seed(0))
    assert mse.max() < 1e-8, mse.max()
    _, mse, _ = diffusion_loss(Oracle(x0, chain, predict="x0"), x0, y, chain, torch.Generator().manual_seed(0))
    assert mse.min() > 0.05, mse.min()

def test_train_command_exports_a_loadable_checkpoint(tmp_path, in_process):
    """The command's function in this process (its exit code and one-line error through the installed command:
    test_train_refuses_a_model_it_cannot_train_in_one_line)."""
    export = tmp_path / "tiny.safetensors"
    r = in_process("tstitch-train", "model=toy/small", "steps=3", "batch_size=8", "snapshot_every=2", "progress=false",
                   f"hydra.run.dir={tmp_path / 'run'}", f"export={export}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "ema_000002.safetensors").exists()
    member = zoo.load("toy/small", checkpoint=str(export))
    shipped = zoo.load("toy/small")
    assert not torch.equal(member.net.blocks[0].attn.qkv.weight, shipped.net.blocks[0].attn.qkv.weight)


class Recorder(torch.nn.Module):
    """A net that remembers the timesteps it was asked about."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(t.clone())
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])


def test_training_at_the_stitched_interval_draws_only_its_timesteps():
    """T-Stitch's fine-tuning at the stitched interval (paper Table 6): ``timesteps=(lo, hi)`` draws t in lo ... hi-1,
    all of them; None draws from the whole schedule; a range outside it is one ConfigError line."""
    import pytest

    from tstitch.errors import ConfigError
    from tstitch.jobs.train import interval

    chain = gaussian.chain(Schedule("linear").alphas_cumprod)
    x0, y = torch.zeros(4000, 1, 2, 2), torch.zeros(4000, dtype=torch.long)
    net = Recorder()
    diffusion_loss(net, x0, y, chain, torch.Generator().manual_seed(0), timesteps=(0, 474))
    t = net.seen[-1]
    assert t.min() == 0 and t.max() == 473 and len(t.unique()) == 474
    diffusion_loss(net, x0, y, chain, torch.Generator().manual_seed(0))
    assert net.seen[-1].max() > 900
    assert interval([0, 474], 1000) == (0, 474) and interval(None, 1000) is None
    with pytest.raises(ConfigError, match=r"timesteps=\[500,500\] is not a range"):
        interval([500, 500], 1000)


def test_train_command_fine_tunes_from_the_entry_weights_at_an_interval(tmp_path, in_process):
    """``init=model`` starts from the zoo entry's checkpoint (one step at a tiny learning rate stays next to it, far
    from a fresh net), ``timesteps=[lo,hi]`` is recorded in train.json."""
    import json

    r = in_process("tstitch-train", "model=toy/small", "init=model", "timesteps=[0,474]", "steps=1", "batch_size=4",
                   "lr=1e-9", "warmup=1", "progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    tuned = zoo.load("toy/small", checkpoint=str(tmp_path / "run" / "ema.safetensors"))
    shipped = zoo.load("toy/small")
    w, w0 = tuned.net.blocks[0].attn.qkv.weight, shipped.net.blocks[0].attn.qkv.weight
    assert torch.allclose(w, w0, atol=2e-3) and w0.abs().max() > 0.05
    assert json.loads((tmp_path / "run" / "train.json").read_text())["config"]["timesteps"] == [0, 474]


def test_train_refuses_a_model_it_cannot_train_in_one_line(tmp_path):
    exe = str(Path(sys.executable).parent / "tstitch-train")
    r = subprocess.run([exe, "model=dit/s2", "steps=1", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("tstitch-train: error: tstitch-train trains DiTs on Fashion")
