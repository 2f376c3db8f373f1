"""Every fast path against the plain float32 path on CPU, with the tolerance it is held to (relative L2 error of
the final samples of a stitched toy-zoo run: 10 DDIM steps, guidance 3, 0.4 : 0.6)."""
import json

import pytest
import torch

from tstitch.data import seeds
from tstitch.errors import ConfigError
from tstitch.models import fast, zoo
from tstitch.sampling.sample import sample

OPTIONS = dict(fractions=[0.4, 0.6], solver="ddim", steps=10, guidance=3.0)


def members():
    return [zoo.load("toy/small"), zoo.load("toy/large")]


@pytest.fixture(scope="module")
def plain():
    x, y, _ = seeds.draw(range(32), (1, 28, 28), 10, "balanced")
    return x, y, sample(members(), x, y, **OPTIONS).x


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("switches,floor,tolerance", [
    # 8-bit mantissa; guidance 3 amplifies it along the trajectory (measured 0.023)
    (dict(precision="bf16", force=True), 1e-3, 0.05),
    (dict(precision="fp16", force=True), 1e-4, 0.01),  # force: its numerics, whatever this CPU's speed (0.0036)
    (dict(channels_last=True), 0.0, 1e-6),
    (dict(offload=True), 0.0, 0.0),           # the same weights, copied to where the input is
    pytest.param(dict(compile=True), 0.0, 1e-5, marks=pytest.mark.slow),  # inductor's fused kernels: fp32 rounding
    pytest.param(dict(graphs=True), 0.0, 1e-5, marks=pytest.mark.slow),   # on a CPU: compile in reduce-overhead mode
], ids=["bf16", "fp16", "channels_last", "offload", "compile", "graphs"])
def test_fast_path_matches_plain_float32(plain, switches, floor, tolerance):
    """Within its tolerance of float32; a lower precision also differs by more than float32 round-off (``floor``),
    so that a precision switch that runs nothing in that precision fails."""
    x, y, ref = plain
    out = sample(fast.speed_up(members(), "cpu", **switches), x, y, **OPTIONS).x
    assert out.dtype == torch.float32 and rel(out, ref) <= tolerance, rel(out, ref)
    if floor:
        assert rel(out, ref) > floor, f"{rel(out, ref)}: no more than float32 round-off"


def test_autocast_member_keeps_the_protocol_and_float32_outputs():
    (m,) = fast.speed_up([zoo.load("toy/large")], "cpu", precision="bf16", force=True)
    assert isinstance(m, fast.Autocast)
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


# Fake machines for the precision decision: what each one is known to run slower than fp32.
AVX2 = fast.Capability("cpu", "AVX2", name="an AVX2-only CPU")
SKYLAKE = fast.Capability("cpu", "AVX512")  # AVX-512 without its bf16 extension: oneDNN emulates bf16 there too
ZEN4 = fast.Capability("cpu", "AVX512", frozenset({"avx512_bf16"}))
SAPPHIRE = fast.Capability("cpu", "AVX512", frozenset({"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"}))
GRAVITON3 = fast.Capability("cpu", "SVE256", frozenset({"bf16", "fp16_arith"}))
T4, A100, P4 = (fast.Capability("cuda", sm=sm, name=n) for sm, n in [((7, 5), "T4"), ((8, 0), "A100"), ((6, 1), "P4")])


@pytest.mark.parametrize("cap,precision,runs", [
    (AVX2, "bf16", "fp32"), (SKYLAKE, "bf16", "fp32"), (ZEN4, "bf16", "bf16"), (SAPPHIRE, "bf16", "bf16"),
    (GRAVITON3, "bf16", "bf16"), (AVX2, "fp16", "fp32"), (ZEN4, "fp16", "fp32"), (SAPPHIRE, "fp16", "fp16"),
    (T4, "bf16", "fp32"), (A100, "bf16", "bf16"), (T4, "fp16", "fp16"), (P4, "fp16", "fp32"),
    (AVX2, "fp32", "fp32"), (T4, "fp32", "fp32"), (fast.Capability("meta"), "bf16", "bf16"),
])
def test_a_precision_known_to_be_slower_falls_back_to_fp32_with_one_line(cap, precision, runs):
    chosen, line = fast.choose_precision(precision, cap)
    assert chosen == runs
    if runs == precision:
        assert line is None
    else:  # one line naming the capability and both ways out
        assert "\n" not in line and line.startswith(f"fast.precision={precision} is slower than fp32 on {cap}")
        fix = f"use a GPU of sm_{'80' if precision == 'bf16' else '70'}" if cap.sm else "use a CPU with"
        assert fix in line and "fast.force=true" in line
    assert fast.choose_precision(precision, cap, force=True) == (precision, None)  # the user insists


def test_speed_up_runs_fp32_on_a_cpu_without_native_bf16_unless_forced(monkeypatch, capsys):
    monkeypatch.setattr(fast, "capability", lambda device="cpu": AVX2)
    capsys.readouterr()
    fell_back = fast.speed_up(members(), "cpu", precision="bf16")
    err = capsys.readouterr().err.strip().splitlines()
    assert not any(isinstance(m, fast.Autocast) for m in fell_back)
    assert len(err) == 1 and err[0].startswith("warning: fast.precision=bf16 is slower than fp32 on CPU AVX2")
    forced = fast.speed_up(members(), "cpu", precision="bf16", force=True)
    assert all(isinstance(m, fast.Autocast) for m in forced) and capsys.readouterr().err == ""
    monkeypatch.setattr(fast, "capability", lambda device="cpu": ZEN4)
    assert all(isinstance(m, fast.Autocast) for m in fast.speed_up(members(), "cpu", precision="bf16"))
    assert capsys.readouterr().err == ""


def test_capability_reads_the_cpu_and_a_onednn_limit(monkeypatch):
    cap = fast.capability("cpu")
    assert cap.kind == "cpu" and cap.isa == torch.backends.cpu.get_cpu_capability() and cap.isa in str(cap)
    monkeypatch.setattr(fast, "_cpu_features", lambda: ({"avx2", "fma3", "avx512_bf16"}, "Fake CPU"))
    assert fast.capability("cpu").native("bf16") and not fast.capability("cpu").native("fp16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN held to AVX2 emulates bf16 (0.2x fp32 here)
    cap = fast.capability("cpu")
    assert not cap.native("bf16") and "ONEDNN_MAX_CPU_ISA=AVX2" in str(cap) and "Fake CPU" in str(cap)
    assert fast.choose_precision("bf16", cap)[0] == "fp32"
    monkeypatch.setattr(fast, "_cpu_features", lambda: ({"avx2"}, ""))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert fast.choose_precision("bf16", fast.capability("cpu"))[0] == "fp32"
    assert fast.capability("meta").native("bf16")  # devices it cannot judge keep what was asked


def test_cli_warns_once_and_runs_fp32_on_a_cpu_without_bf16(tmp_path, in_process, monkeypatch):
    monkeypatch.setattr(fast, "capability", lambda device="cpu": AVX2)
    autocast = []
    call = fast.Autocast.__call__
    monkeypatch.setattr(fast.Autocast, "__call__", lambda self, *a: (autocast.append(1), call(self, *a))[1])
    r = in_process("tstitch", "+debug=tiny", "fast=bf16", "metric=none", f"hydra.run.dir={tmp_path / 'auto'}")
    assert r.returncode == 0, r.stderr[-2000:]
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: fast.precision=")]
    assert len(warned) == 1 and "CPU AVX2" in warned[0] and "fast.force=true" in warned[0] and not autocast
    r = in_process("tstitch", "+debug=tiny", "fast=bf16", "fast.force=true", "metric=none",
                   f"hydra.run.dir={tmp_path / 'forced'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: fast.precision=" not in r.stderr and autocast
    assert json.loads((tmp_path / "forced" / "run.json").read_text())["config"]["fast"]["force"] is True
