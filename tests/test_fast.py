"""Every fast path against the plain float32 path on CPU, with the tolerance it is held to (relative L2 error of
the final samples of a stitched toy-zoo run: 10 DDIM steps, guidance 3, 0.4 : 0.6)."""
import json

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
    (dict(offload=True), 0.0),           # the same weights, copied to where the input is
    pytest.param(dict(compile=True), 1e-5, marks=pytest.mark.slow),  # inductor's fused kernels: float32 rounding
    pytest.param(dict(graphs=True), 1e-5, marks=pytest.mark.slow),   # on a CPU: compile in reduce-overhead mode
], ids=["bf16", "fp16", "channels_last", "offload", "compile", "graphs"])
def test_fast_path_matches_plain_float32(plain, switches, tolerance):
    x, y, ref = plain
    out = sample(fast.speed_up(members(), "cpu", **switches), x, y, **OPTIONS).x
    assert out.dtype == torch.float32 and rel(out, ref) <= tolerance, rel(out, ref)


def test_autocast_member_keeps_the_protocol_and_float32_outputs():
    (m,) = fast.speed_up([zoo.load("toy/large")], "cpu", precision="bf16")
    out = m(torch.randn(2, 1, 28, 28), 500, torch.tensor([1, 2]))
    assert out.eps.dtype == torch.float32 and out.v.dtype == torch.float32
    assert m.name == "toy-dit-large" and m.space.shape == (1, 28, 28)


def test_unknown_precision_is_one_line(tmp_path, in_process):
    with pytest.raises(ConfigError, match="fast.precision must be one of"):
        fast.speed_up(members(), "cpu", precision="int4")
    r = in_process("tstitch", "+debug=tiny", "fast.precision=fp8", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("tstitch: error: fast.precision")


def test_main_job_runs_in_bf16(tmp_path, in_process):
    r = in_process("tstitch", "+debug=tiny", "fast=bf16", "metric=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["fast"]["precision"] == "bf16"
    assert record["warmup_seconds"] > 0  # reported apart from the timed sweep (torch.compile time lands here)


def test_offload_keeps_one_network_on_the_device_at_a_time():
    """A second device without a GPU: ``meta`` (shapes only). Each call brings the caller's weights to the input's
    device and sends the other member's back to their host copies, unchanged."""
    small, large = fast.speed_up(members(), "cpu", offload=True)
    before = {m.name: [p.clone() for p in m.net.parameters()] for m in (small, large)}
    seen = []
    for m in (small, large):
        m.net.register_forward_pre_hook(lambda net, args, m=m: seen.append(
            (m.name, {p.device.type for p in net.parameters()}, {p.device.type for p in other(m).net.parameters()})))

    def other(m):
        return large if m is small else small

    x, y = torch.randn(4, 1, 28, 28, device="meta"), torch.zeros(4, dtype=torch.long, device="meta")
    for m in (small, small, large, small):
        assert m(x, 500, y).eps.device.type == "meta"
    assert seen == [(n, {"meta"}, {"cpu"}) for n in ("toy-dit-small",) * 2 + ("toy-dit-large", "toy-dit-small")]
    assert {p.device.type for m in (small, large) for p in m.net.parameters()} <= {"cpu", "meta"}
    large(torch.randn(2, 1, 28, 28), 500, torch.tensor([1, 2]))  # back on the CPU: the weights as they were
    for m in (small, large):
        assert all(torch.equal(p, q) for p, q in zip(m.net.parameters(), before[m.name]))


def test_offload_copies_each_network_once_per_stitched_batch(plain, monkeypatch):
    loads = []
    load = fast.Offloaded.load
    monkeypatch.setattr(fast.Offloaded, "load", lambda self, device: (loads.append(self.name), load(self, device)))
    x, y, _ = plain
    offloaded = fast.speed_up(members(), "cpu", offload=True)
    for _ in range(2):
        sample(offloaded, x, y, **OPTIONS)
    assert loads == ["toy-dit-small", "toy-dit-large"] * 2


def test_offload_with_graphs_is_refused():
    with pytest.raises(ConfigError, match="fast.offload and fast.graphs cannot be combined"):
        fast.speed_up(members(), "cpu", offload=True, graphs=True)
