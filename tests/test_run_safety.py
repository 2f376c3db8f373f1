"""Runs that would exit 0 with a wrong result are refused instead (issue: no silent wrong results): a resume with other
settings or another checkpoint, non-finite values, a second writer, a corrupt shard, bad values found only after
files were written, bad inputs to the API. Each test asserts the refusal, its one line and that nothing was lost."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tstitch
from tstitch.errors import ConfigError
from tstitch.models.checks import NonFiniteError

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = ["num_samples=4", "batch_size=2", "solver.steps=3", "stitch.fractions=[0.5,0.5]", "metric=none",
         "logger=none", "timing.rounds=0", "grid_columns=0"]
LARGE = Path(tstitch.__file__).parent / "data" / "toy" / "weights" / "dit_large.safetensors"


def generate(in_process, run_dir, *args):
    return in_process("tstitch-generate", *SMALL, f"hydra.run.dir={run_dir}", *args)


def error_line(r):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[-1]


def strict_json(path):
    """JSON as the standard says it: NaN or Infinity are refused."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def files(run_dir):
    """Every file's bytes below ``run_dir`` except Hydra's own records and logs and the lock (which names the
    last process that took it)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(Path(run_dir).rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != ".lock"}


@pytest.fixture
def done_run(tmp_path, in_process):
    run_dir = tmp_path / "run"
    r = generate(in_process, run_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    return run_dir


# --- 1. identity: a resume with anything that changes bytes is refused -------------------------------------------

def test_resume_with_another_precision_is_refused_and_nothing_changes(done_run, in_process):
    """The issue's case: 40 samples fp32, then 60 with fast=bf16 gave a mixed set with a bf16 manifest."""
    before = files(done_run)
    r = generate(in_process, done_run, "num_samples=6", "fast=bf16")
    assert error_line(r) == (f"tstitch-generate: error: {done_run} holds samples made with other settings (differs in: "
                             f"fast.precision); resume with the settings in {done_run / 'identity.json'}, "
                             "or choose a new hydra.run.dir=...")
    assert files(done_run) == before


def test_resume_after_the_checkpoint_file_changed_is_refused(tmp_path, in_process):
    ckpt = tmp_path / "large.safetensors"
    ckpt.write_bytes(LARGE.read_bytes())
    run_dir, member = tmp_path / "run", f"stitch.members.large.checkpoint={ckpt}"
    assert generate(in_process, run_dir, member).returncode == 0
    from safetensors.torch import load_file, save_file

    weights = load_file(ckpt)
    weights["final_layer.linear.bias"] = weights["final_layer.linear.bias"] + 1e-3  # same path, same shapes
    save_file(weights, ckpt)
    before = files(run_dir)
    line = error_line(generate(in_process, run_dir, member, "num_samples=6"))
    assert "differs in: stitch.members.large.checkpoint (the content of its checkpoint)" in line
    assert files(run_dir) == before


def test_resume_across_versions_warns_and_completes(done_run, in_process):
    stored = json.loads((done_run / "identity.json").read_text())
    stored["versions"]["torch"] = "0.0.1"
    (done_run / "identity.json").write_text(json.dumps(stored))
    r = generate(in_process, done_run, "num_samples=6")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (f"warning: resuming {done_run} across versions: torch was 0.0.1 when this run started, now "
            f"{torch.__version__}") in r.stderr
    assert strict_json(done_run / "manifest.json")["resumed_from"] == 4


def test_same_settings_resume_and_checkpoint_hashes_are_cached(done_run, in_process, monkeypatch):
    """The checkpoint's hash is read from the cache (path, size, mtime) on a resume, not recomputed."""
    from tstitch.jobs import identity

    def refuse(*_):
        raise AssertionError("hashed again")

    monkeypatch.setattr(identity, "_sha256", refuse)
    r = generate(in_process, done_run, "num_samples=6")
    assert r.returncode == 0, r.stderr[-2000:]
    assert strict_json(done_run / "manifest.json")["generated"] == 2


# --- 2. non-finite values are errors --------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["tstitch", "tstitch-generate"])
def test_nan_guidance_is_refused_before_anything_is_written(tmp_path, in_process, command):
    """Before, guidance.scale=nan gave black images and a manifest with NaN. (The commands' functions in this
    process; a slip's exit code through the installed command: test_schema.py.)"""
    args = ["+debug=tiny"] if command == "tstitch" else SMALL
    r = in_process(command, *args, "guidance.scale=nan", f"hydra.run.dir={tmp_path / 'run'}")
    assert error_line(r) == (f"{command}: error: guidance.scale=nan is not allowed: give a number >= 0 (NaN and inf "
                             "are refused)")
    assert not (tmp_path / "run").exists()


def test_nan_in_a_checkpoint_is_refused_naming_the_tensor(tmp_path, in_process):
    from safetensors.torch import load_file, save_file

    weights = load_file(LARGE)
    weights["blocks.1.attn.qkv.weight"][0, 0] = float("nan")
    save_file(weights, tmp_path / "large.safetensors")
    r = generate(in_process, tmp_path / "run", f"stitch.members.large.checkpoint={tmp_path / 'large.safetensors'}")
    assert error_line(r) == ("tstitch-generate: error: toy-dit-large: its weights hold NaN or inf "
                             "(blocks.1.attn.qkv.weight); the checkpoint is damaged or was saved from a diverged run: "
                             "download or export it again")
    assert not (tmp_path / "run" / "shards").exists()


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    """Finite weights whose activations overflow to inf and then NaN: the large member breaks at run time."""
    from safetensors.torch import load_file, save_file

    weights = load_file(LARGE)
    weights["blocks.0.mlp.fc2.weight"] = weights["blocks.0.mlp.fc2.weight"].float() * 1e37
    path = tmp_path_factory.mktemp("ckpt") / "large.safetensors"
    save_file(weights, path)
    return f"stitch.members.large.checkpoint={path}"


def test_non_finite_samples_fail_naming_the_seeds_step_and_member(tmp_path, in_process, overflowing):
    r = generate(in_process, tmp_path / "run", overflowing, "solver.steps=4")
    assert error_line(r) == ("tstitch-generate: error: non-finite samples (NaN or inf) for 2 of 2 seeds in a batch: "
                             "0, 1; they first broke at step 3 of 4, run by toy-dit-large. Check the checkpoints, "
                             "fast.precision (fp32 is the reference) and guidance.scale; nonfinite=warn keeps going "
                             "(their images are black)")
    assert not list((tmp_path / "run" / "shards").glob("*.npz"))


def test_nonfinite_warn_keeps_going_and_records_the_seeds_in_valid_json(tmp_path, in_process, overflowing):
    run_dir = tmp_path / "run"
    r = generate(in_process, run_dir, overflowing, "nonfinite=warn", "timing.rounds=1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("warning: non-finite samples (NaN or inf) for 2 of 2 seeds") == 2
    manifest = strict_json(run_dir / "manifest.json")
    assert manifest["nonfinite_seeds"] == [0, 1, 2, 3] and "4 non-finite samples" in r.stdout
    for name in ("identity.json", "run.json"):
        strict_json(run_dir / name)
    assert all(json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines())


def test_main_job_with_nan_fails_in_one_line(tmp_path, in_process, overflowing):
    r = in_process("tstitch", "+debug=tiny", "metric=none", overflowing, "sweep.first=[0.0]",
                   f"hydra.run.dir={tmp_path}")
    assert "non-finite samples (NaN or inf) for 4 of 4 seeds in a batch: 0, 1, 2, 3; they first broke at step 1 of " \
           "3, run by toy-dit-large" in error_line(r)
    assert not (tmp_path / "results.jsonl").exists()


def test_nan_noise_through_the_api_is_refused(toy_members):
    x, y, _ = tstitch.data.seeds.draw(range(3), toy_members[0].space.shape, num_classes=10)
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(NonFiniteError, match=r"noise holds NaN or inf in sample\(s\) 1; give finite noise"):
        tstitch.sample(toy_members, x, y, fractions=[0.5, 0.5], steps=2)


def test_a_decoder_that_gives_nan_from_finite_latents_is_an_error():
    from tstitch.models.codecs import VAECodec

    class Broken(torch.nn.Module):
        config = type("C", (), {"scaling_factor": 1.0})

        def decode(self, z):
            return type("D", (), {"sample": torch.full((len(z), 3, 8, 8), float("nan"))})

    codec = VAECodec.__new__(VAECodec)
    codec.vae, codec.source, codec.device, codec.dtype, codec.chunk_size, codec.scale = \
        Broken(), "tiny-vae", "cpu", torch.float32, 16, 1.0
    with pytest.raises(NonFiniteError, match="the decoder tiny-vae gave NaN or inf pixels for 2 of 2 finite latents"):
        codec.decode(torch.zeros(2, 4, 1, 1))


# --- 5. one writer per run directory; corrupt shards -----------------------------------------------------------

def test_a_second_writer_exits_at_once_naming_the_holder(tmp_path, in_process):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tstitch.jobs.engine import lock; "
                               "lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = generate(in_process, run_dir)
        assert error_line(r).startswith(f"tstitch-generate: error: {run_dir} is being written by another process (PID "
                                        f"{holder.pid} on {os.uname().nodename}, started ")
        assert not (run_dir / "shards").exists() and not (run_dir / "identity.json").exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    r = generate(in_process, run_dir)
    assert r.returncode == 0, r.stderr[-2000:]


def test_two_commands_on_one_directory(tmp_path, in_process):
    """Two tstitch-generate at once on one directory: the second exits with code 2 while the first holds the lock,
    and the first completes the set alone. (The second runs in this process, which holds no lock of its own.)"""
    run_dir = tmp_path / "run"
    slow = [*SMALL, "num_samples=8", "solver.steps=200"]  # about a second a batch
    first = subprocess.Popen([str(BIN / "tstitch-generate"), *slow, f"hydra.run.dir={run_dir}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    import time

    deadline = time.monotonic() + 120
    while not list(run_dir.glob("shards/*.npz")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    second = in_process("tstitch-generate", *slow, f"hydra.run.dir={run_dir}")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert f"is being written by another process (PID {first.pid} on" in error_line(second)
    assert "8 samples (8 new, 0 from earlier shards)" in out + err


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_truncated_shard_is_set_aside_and_regenerated(done_run, in_process):
    original = np.load(done_run / "samples.npz")["arr_0"]
    shard = sorted((done_run / "shards").glob("*.npz"))[1]
    shard.write_bytes(shard.read_bytes()[:200])
    r = generate(in_process, done_run)
    assert r.returncode == 0, r.stderr[-2000:]
    moved = done_run / "shards" / "corrupt" / shard.name
    assert (f"tstitch-generate: shard {shard} is corrupt (BadZipFile: File is not a zip file); moved to {moved}, its "
            "seeds will be generated again") in r.stderr
    assert moved.exists() and strict_json(done_run / "manifest.json")["generated"] == 2
    assert np.array_equal(np.load(done_run / "samples.npz")["arr_0"], original)


def test_a_shard_corrupt_inside_its_images_is_named_at_export_then_regenerated(done_run, in_process):
    original = np.load(done_run / "samples.npz")["arr_0"]
    shard = sorted((done_run / "shards").glob("*.npz"))[0]
    _flip(shard, shard.stat().st_size // 2)  # inside the images: the zip's CRC no longer matches
    (done_run / "samples.npz").unlink()
    line = error_line(generate(in_process, done_run))
    moved = done_run / "shards" / "corrupt" / shard.name
    assert line.startswith(f"tstitch-generate: error: shard {shard} is unreadable (BadZipFile: ")
    assert line.endswith(f"; moved to {moved}: run the same command again to generate its seeds)")
    r = generate(in_process, done_run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(done_run / "samples.npz")["arr_0"], original)


# --- 6. validation before any side effect ---------------------------------------------------------------------

def test_a_bad_solver_leaves_nothing_so_the_corrected_run_starts(tmp_path, in_process):
    """Before, solver.name=nope wrote identity.json, and the corrected rerun was refused."""
    run_dir = tmp_path / "run"
    assert error_line(generate(in_process, run_dir, "solver.name=nope")) == (
        "tstitch-generate: error: unknown solver 'nope'; choose one of ['ddim', 'ddpm', 'diffusers', 'dpm_solver', "
        "'dpmpp_2m', 'ldm_ddim', 'scheduler'] (solver=...)")
    assert not run_dir.exists()
    assert generate(in_process, run_dir).returncode == 0


@pytest.mark.parametrize("value,message", [
    ("0", "solver.steps=0 is not allowed: give an integer >= 1"),
    ("-3", "solver.steps=-3 is not allowed: give an integer >= 1"),
    ("1001", "solver.steps=1001 is not allowed: give at most 1000 steps"),
    ("abc", "solver.steps='abc' is not allowed: give a step count or an ADM respacing string such as ddim50"),
])
def test_bad_step_counts_are_one_line_before_any_model_loads(tmp_path, in_process, monkeypatch, value, message):
    from tstitch.models import zoo

    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    line = error_line(generate(in_process, tmp_path / "run", f"solver.steps={value}"))
    assert line.startswith(f"tstitch-generate: error: {message}"), line
    assert not (tmp_path / "run").exists()


def test_devices_the_machine_lacks_are_one_line(tmp_path, in_process):
    line = error_line(generate(in_process, tmp_path / "run", "trainer.accelerator=tpu"))
    assert line == ("tstitch-generate: error: trainer.accelerator='tpu' is not allowed: one of cpu, gpu, cuda, auto "
                    "(did you mean gpu?)")
    if not torch.cuda.is_available():
        line = error_line(generate(in_process, tmp_path / "run", "trainer=gpu"))
        assert line == ("tstitch-generate: error: trainer.accelerator=gpu, but torch sees no CUDA GPU on this "
                        "machine; use trainer=cpu")
        line = error_line(in_process("tstitch", "+debug=tiny", "device=cuda", f"hydra.run.dir={tmp_path / 'm'}"))
        assert line == "tstitch: error: device=cuda, but torch sees 0 CUDA GPUs on this machine; use device=cpu"
    assert not (tmp_path / "run").exists() and not (tmp_path / "m").exists()


# --- 7. API inputs ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_members():
    return [tstitch.load("toy/small"), tstitch.load("toy/large")]


def _sample(members, x, y):
    return tstitch.sample(members, x, y, fractions=[0.5, 0.5], steps=2, guidance=2.0).x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_noise_of_another_float_dtype_is_cast_to_float32(toy_members, dtype):
    x, y, _ = tstitch.data.seeds.draw(range(2), toy_members[0].space.shape, num_classes=10)
    x = x.to(dtype)
    out = _sample(toy_members, x, y)
    assert out.dtype == torch.float32
    assert torch.equal(out, _sample(toy_members, x.float(), y))


@pytest.mark.parametrize("noise,labels,message", [
    ("int", "ok", "noise must be a floating-point tensor, not torch.int64"),
    ("list", "ok", "noise must be a torch.Tensor, not list"),
    ("empty", "ok", "the batch is empty (noise has no samples); give at least one sample"),
    ("ok", "float", "labels must be an integer tensor (class indices), not torch.float32"),
    ("ok", "short", "labels of shape (1,) for a batch of 2 samples; give one class index per sample"),
    ("ok", "floats", "labels must be an integer tensor or a list of ints (class indices), not a list of other values"),
    ("ok", "prompts", "labels must be an integer tensor or a list of ints (class indices), not a list of other"),
    ("ok", "three", "3 labels for a batch of 2 samples; give one class index per sample"),
])
def test_bad_api_inputs_are_one_line(toy_members, noise, labels, message):
    x, y, _ = tstitch.data.seeds.draw(range(2), toy_members[0].space.shape, num_classes=10)
    x = {"ok": x, "int": x.long(), "list": x.tolist(), "empty": x[:0]}[noise]
    y = {"ok": y, "float": y.float(), "short": y[:1], "floats": [1.0, 2.0], "prompts": ["a cat", "a dog"],
         "three": [1, 2, 3]}[labels]
    with pytest.raises(ConfigError) as e:
        _sample(toy_members, x, y)
    assert str(e.value).startswith(message), str(e.value)


def test_labels_as_a_list_of_ints_equal_a_tensor(toy_members):
    x, y, _ = tstitch.data.seeds.draw(range(2), toy_members[0].space.shape, num_classes=10)
    assert torch.equal(_sample(toy_members, x, [int(v) for v in y]), _sample(toy_members, x, y))


def test_prompts_must_be_one_string_per_sample():
    from types import SimpleNamespace

    from tstitch.models import checks
    from tstitch.models.protocols import Space

    member = SimpleNamespace(num_classes=None, space=Space("latents", (4, 2, 2)))
    x = torch.zeros(2, 4, 2, 2)
    assert checks.inputs([member], x, ["a", "b"], 7.5)[1] == ["a", "b"]
    for bad, message in [(["a"], "1 prompts for a batch of 2 samples"), ("a cat", "text-to-image members take a list"),
                         (torch.tensor([1, 2]), "text-to-image members take a list")]:
        with pytest.raises(ConfigError, match=message):
            checks.inputs([member], x, bad, 7.5)
