"""Every part of a sample set's identity (tstitch/jobs/identity.py) is compared on resume: each one changed once, the
others kept, is refused naming that part. Through the functions (all five parts), then through `tstitch-generate`
for the two a run only sees by content or by the prompt set: the decoder's weights and the prompt list."""
import json
import os
import re
from pathlib import Path

import pytest
from test_sd import SD_SCALE, save_sd, vae

from tstitch.errors import ConfigError
from tstitch.jobs import identity

# --- the functions ---------------------------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path):
    """(run dir, the identity written there, the files behind it): two checkpoints and a decoder directory."""
    (tmp_path / "small.pt").write_bytes(b"small weights")
    (tmp_path / "large.pt").write_bytes(b"large weights")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    (tmp_path / "vae" / "weights.safetensors").write_bytes(b"decoder weights")
    entries = {"small": {"checkpoint": str(tmp_path / "small.pt")}, "large": {"checkpoint": str(tmp_path / "large.pt")}}
    config = {"batch_size": 4, "seed": 0, "options": {"guidance": 1.5}}
    run = tmp_path / "run"
    run.mkdir()
    now = {**identity.of(config, entries, str(tmp_path / "vae")), "prompts": ["a cat", "a dog"]}
    identity.write(run, now)
    return run, now, entries, tmp_path


def current(stored, part):
    """The identity of ``stored`` with ``part`` changed the way a user would change it, the rest as stored."""
    run, now, entries, root = stored
    if part == "config":
        return {**now, "config": {**now["config"], "batch_size": 8}}
    if part == "checkpoints":
        (root / "large.pt").write_bytes(b"large weights, fine-tuned")  # same path, other content
        os.utime(root / "large.pt", (1, 1))  # and another mtime, so the hash cache does not answer
    elif part == "decoder":
        (root / "vae" / "weights.safetensors").write_bytes(b"decoder weights, fine-tuned")
        os.utime(root / "vae" / "weights.safetensors", (1, 1))
    elif part == "seeds":
        return {**now, "seeds": "per-batch-v0: another scheme"}
    elif part == "prompts":
        return {**now, "prompts": ["a cat", "a bird"]}
    return {**identity.of(now["config"], entries, str(root / "vae")), "prompts": now["prompts"]}


def test_an_unchanged_identity_resumes(stored):
    run, now, entries, root = stored
    again = {**identity.of(now["config"], entries, str(root / "vae")), "prompts": list(now["prompts"])}
    assert identity.check(run, again, parts=identity.PARTS) == json.loads(json.dumps(now))


@pytest.mark.parametrize("part,named", [
    ("config", "config.batch_size"), ("checkpoints", "checkpoints.large (the content of its checkpoint)"),
    ("decoder", "decoder.content (the decoder)"), ("seeds", "seeds"), ("prompts", "prompts (the prompt list)")])
def test_each_part_changed_alone_is_refused_naming_it(stored, part, named):
    run, now, *_ = stored
    changed = current(stored, part)
    assert [k for k in now if now[k] != changed.get(k)] == [part]  # only that part differs
    with pytest.raises(ConfigError, match="holds samples made with other settings") as e:
        identity.check(run, changed, parts=identity.PARTS)
    assert re.search(r"\(differs in: (.*)\); ", str(e.value)).group(1) == named, str(e.value)


def test_lora_weights_are_part_of_a_members_checkpoints(tmp_path):
    """A LoRA file changed at the same path changes the member's checkpoint content (one section or a list)."""
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"base")
    lora = tmp_path / "style.safetensors"
    for i, spec in enumerate(({"path": str(lora), "scale": 0.5}, [{"path": str(lora)}])):
        lora.write_bytes(b"lora %d" % i)
        entries = {"large": {"checkpoint": str(tmp_path / "unet"), "lora": spec}}
        before = identity.of({}, entries, None)["checkpoints"]["large"]
        assert len(before) == 2
        lora.write_bytes(b"lora %d, retrained" % i)
        os.utime(lora, (i + 1, i + 1))  # another mtime, so the hash cache does not answer
        after = identity.of({}, entries, None)["checkpoints"]["large"]
        assert after[0] == before[0] and after[1] != before[1]


# --- through tstitch-generate ----------------------------------------------------------------------------------

OFFLINE = {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def sd_pair(tmp_path_factory):
    """A tiny SD pair (text encoders of their own) and a separate tiny decoder, ``stitch.codec``."""
    root = tmp_path_factory.mktemp("sdparts")
    save_sd(root / "small", 32, seed=0)
    save_sd(root / "large", 48, seed=1)
    vae(SD_SCALE).save_pretrained(root / "vae")
    overrides = ["stitch=sd_bk_tiny_v1_4", "solver=scheduler", "solver.steps=2", "prompts=demo", "metric=none",
                 "logger=none", "timing.rounds=0", "grid_columns=0", "trainer=cpu", "batch_size=2",
                 f"stitch.codec={root / 'vae'}"]
    for name, width in (("small", 32), ("large", 48)):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={root / name}", f"{m}.net.cross_attention_dim={width}",
                      f"{m}.space.shape=[4,8,8]"]
    return root, overrides


def files(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(Path(run_dir).rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != ".lock"}


def refusal(r):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[-1]


def test_generate_refuses_another_decoder_and_another_prompt_list(sd_pair, tmp_path, in_process):
    """The settings stay the same (the same ``stitch.codec`` path, the same ``prompts`` group): only the decoder's
    weights, then only the prompt list, differ, and each resume is refused naming it, with nothing written."""
    import torch

    root, overrides = sd_pair
    run = tmp_path / "run"
    r = in_process("tstitch-generate", *overrides, "num_samples=2", f"hydra.run.dir={run}", env=OFFLINE)
    assert r.returncode == 0, r.stderr[-2000:]
    before = files(run)

    saved = root / "vae.bak"
    (root / "vae").rename(saved)
    try:
        torch.manual_seed(7)
        vae(SD_SCALE).save_pretrained(root / "vae")  # the same architecture and path, other weights
        line = refusal(in_process("tstitch-generate", *overrides, "num_samples=4", f"hydra.run.dir={run}",
                                  env=OFFLINE))
        assert "differs in: the decoder's content (stitch.codec, else the last member's codec)" in line, line
        assert files(run) == before
    finally:
        for p in (root / "vae").iterdir():
            p.unlink()
        (root / "vae").rmdir()
        saved.rename(root / "vae")

    line = refusal(in_process("tstitch-generate", *overrides, "num_samples=4", "prompts.limit=4",
                              f"hydra.run.dir={run}", env=OFFLINE))
    assert "differs in: prompts (the prompt list)" in line, line
    assert files(run) == before
