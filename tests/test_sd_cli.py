"""Text-to-image through the commands: a tiny BK-SDM -> SD pair (diffusers save_pretrained dirs, each with its own
text encoder) from the sd_bk_tiny_v1_4 preset, prompts from the shipped demo set, CLIP score from a tiny CLIP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_prompts import save_tiny_clip
from test_sd import save_sd

BIN = Path(sys.executable).parent
OFFLINE = {"HF_HUB_OFFLINE": "1"}  # the in-process runs' environment (the tiny models are local folders)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", **OFFLINE}  # the installed command's


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdcli")
    save_sd(root / "small", 32, seed=0)
    save_sd(root / "large", 48, seed=1, hub_tokenizer=True)
    save_tiny_clip(root / "clip")
    overrides = ["stitch=sd_bk_tiny_v1_4", "prompts=demo", "guidance.scale=7.5", "solver.steps=3",
                 "metric=clip", f"metric.model={root / 'clip'}", "logger=none"]
    for name, width in (("small", 32), ("large", 48)):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={root / name}", f"{m}.net.cross_attention_dim={width}",
                      f"{m}.space.shape=[4,8,8]"]
    return root, overrides


def test_generate_text_to_image_with_clip_score(tiny, tmp_path, in_process):
    """The sd_bk_tiny_v1_4 experiment's settings, on the tiny pair, the demo prompts and the CPU."""
    root, overrides = tiny
    r = in_process("tstitch-generate", "+experiment=sd_bk_tiny_v1_4", *overrides, "prompts.limit=null", "trainer=cpu",
                   "num_samples=10", "batch_size=4", f"hydra.run.dir={tmp_path}", env=OFFLINE)
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(tmp_path / "samples.npz") as z:
        assert z["arr_0"].shape == (10, 16, 16, 3) and z["arr_1"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
        images = torch.from_numpy(z["arr_0"]).permute(0, 3, 1, 2)
    row = json.loads((tmp_path / "results.jsonl").read_text())
    prompts = json.loads((tmp_path / "identity.json").read_text())["prompts"]
    assert prompts == (Path(__file__).resolve().parents[1] / "conf" / "prompts" / "demo.txt").read_text().splitlines()
    # the preset's sampler: the models' own PNDM, 3 steps = 4 model calls; 40% is 1 step, PLMS's 2-call warm-up
    assert row["nfe"] == [2, 2]
    # the score of the written images against the prompts of their seeds (seed i: prompt i mod 8), by CLIP's own
    # forward: 100 * mean cosine, here above the floor at 0
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(root / "clip").eval(), CLIPProcessor.from_pretrained(root / "clip")
    with torch.no_grad():
        out = model(**processor(text=[prompts[i % len(prompts)] for i in range(10)], images=list(images),
                                return_tensors="pt", padding=True))
    expected = float(100 * (out.image_embeds * out.text_embeds).sum(-1).mean())
    assert expected > 1 and row["clip_score"] == pytest.approx(expected, abs=1e-3)


def test_main_sweep_text_to_image(tiny, tmp_path, in_process):
    root, overrides = tiny
    r = in_process("tstitch", *overrides, "num_samples=4", "batch_size=4", "threads=1", "sweep.first=[0.0,1.0]",
                   f"hydra.run.dir={tmp_path}", env=OFFLINE)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["nfe"] for r in rows] == [[0, 4], [4, 0]] and all("clip_score" in r for r in rows)  # PNDM: N + 1
    assert "| CLIP score |" in (tmp_path / "results.md").read_text() and (tmp_path / "tradeoff.png").exists()


def test_text_members_without_prompts_are_one_line(tiny, tmp_path, in_process):
    root, overrides = tiny
    kept = [o for o in overrides if not o.startswith(("prompts", "metric"))]
    r = in_process("tstitch-generate", *kept, "metric=none", "num_samples=2", f"hydra.run.dir={tmp_path}", env=OFFLINE)
    assert r.returncode == 2 and "text-conditioned members need a prompt set: prompts=demo" in r.stderr


def test_sdxl_timing_experiment_on_tiny_sdxl_members(tmp_path, in_process):
    """+experiment=sd_ssd1b_sdxl (SSD-1B -> SDXL, timing with the demo's seconds as the paper column) on two tiny
    SDXL-like pipelines (two text encoders, pooled embeddings, time ids), bf16 on the CPU."""
    from test_sd import save_sdxl

    overrides = []
    for name, seed in (("small", 5), ("large", 6)):
        save_sdxl(tmp_path / name, seed=seed)
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={tmp_path / name}", f"{m}.net.cross_attention_dim=48",
                      f"{m}.space.shape=[4,8,8]"]
    r = in_process("tstitch-generate", "-m", "+experiment=sd_ssd1b_sdxl", *overrides, "trainer=cpu", "logger=none",
                   "num_samples=2", "batch_size=2", "solver.steps=5", "stitch.fractions=[0.0,1.0],[0.4,0.6]",
                   f"hydra.sweep.dir={tmp_path / 'runs'}", env=OFFLINE)
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-report", tmp_path / "runs", "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert lines[0].endswith("| paper s/image (SDXL demo) |")
    assert [line.split("|")[-2].strip() for line in lines[2:]] == ["13.60", "11.05"]


def test_unknown_scheduler_is_one_line_before_any_file(tiny, tmp_path):
    """A scheduler name diffusers does not have: exit code 2 and one line naming the fix, checked after the members
    load (their shipped schedulers) and before the run directory gets any file; through the installed command (the
    runs above are in-process)."""
    _, overrides = tiny
    r = subprocess.run([str(BIN / "tstitch-generate"), "+experiment=sd_bk_tiny_v1_4", *overrides, "trainer=cpu",
                        "num_samples=2", "prompts.limit=null", "solver=scheduler",
                        "solver.options.scheduler=NoSuchScheduler",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300, env=ENV,
                       check=False)
    lines = [line for line in r.stderr.splitlines() if line.startswith("tstitch-generate: error:")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr
    assert "unknown diffusers scheduler 'NoSuchScheduler'; use a class name such as PNDMScheduler" in lines[0]
    assert not (tmp_path / "identity.json").exists() and not list(tmp_path.glob("*.npz"))
