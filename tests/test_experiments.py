"""Paper tables by config: every experiment composes, sweeps valid allocations and has its README; the toy
tables run end to end with the paper's column; a DiT experiment runs on tiny official-format weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from tstitch.cli import CONF
from tstitch.nets.dit import DiT
from tstitch.stitch import check_fractions

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def command(name):
    return "tstitch" if name.startswith("toy") else "generate"


def table(path):
    lines = Path(path).read_text().splitlines()
    return lines[0], [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_valid_sweeps_paper_values_and_readme(name):
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose(command(name), [f"+experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    if "stitch.fractions" in params:
        (override,) = OverridesParser.create().parse_overrides([f"stitch.fractions={params['stitch.fractions']}"])
        rows = [OverridesParser.create().parse_override(f"x={v}").value() for v in override.sweep_string_iterator()]
        assert all(check_fractions(r, len(cfg.stitch.members)) for r in rows)
        assert len(rows) == {"dit_s_b_xl_grid": 66, "cross_family": 5}.get(name, 11)
    for curve in (cfg.get("paper") or {}).get("curves", []):
        assert len(curve.first) == len(curve["values"]) == 11
    readme = (ROOT / "experiments" / name / "README.md").read_text()
    assert f"+experiment={name}" in readme


def test_toy_table_runs_beside_the_paper_column(tmp_path):
    r = subprocess.run([str(BIN / "tstitch"), "+experiment=toy_s_l", "+debug=tiny", "metric=none",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "results.md")
    assert head.endswith("| paper FID-5K (DiT-S/XL) |")
    assert [(row[0], row[-1]) for row in rows] == [("0 : 1", "9.20"), ("0.5 : 0.5", "10.06"), ("1 : 0", "33.46")]


def test_toy_sampler_multirun_is_one_table_with_a_setting_column(tmp_path):
    r = subprocess.run([str(BIN / "tstitch"), "-m", "+experiment=toy_samplers", "+debug=tiny",
                        "solver=ddim,dpmpp_2m", "solver.steps=10", f"hydra.sweep.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([str(BIN / "tstitch-report"), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "results.md")
    assert head.startswith("| setting |") and "paper FID-5K (DiT-S/XL, approx.)" in head
    assert [(row[0], row[1], row[-1]) for row in rows] == [
        ("solver=ddim", "0 : 1", "20.20"), ("solver=ddim", "0.5 : 0.5", "25.40"), ("solver=ddim", "1 : 0", "54.90"),
        ("solver=dpmpp_2m", "0 : 1", "17.70"), ("solver=dpmpp_2m", "0.5 : 0.5", "22.90"),
        ("solver=dpmpp_2m", "1 : 0", "44.20")]
    assert all(row[4] == "1.00x" for row in rows if row[1] == "0 : 1")  # speedup within each setting
    assert (tmp_path / "tradeoff.png").exists()  # FD and accuracy vs time per setting, ours vs the paper


def test_dit_experiment_runs_on_tiny_official_format_weights(tmp_path):
    """+experiment=dit_s_xl end to end on CPU: two tiny random DiTs saved as DiT train.py checkpoints, a tiny
    VAE, two allocations of the sweep; the report puts the paper's FID-5K beside them."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                  norm_num_groups=8, sample_size=16, scaling_factor=0.18215).save_pretrained(tmp_path / "vae")
    tiny = []
    for name, hidden in (("small", 32), ("large", 64)):
        net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=hidden, depth=2, num_heads=4)
        torch.save({"ema": net.state_dict(), "model": net.state_dict()}, tmp_path / f"{name}.pt")
        m = f"stitch.members.{name}"
        tiny += [f"{m}.net.input_size=8", f"{m}.net.hidden_size={hidden}", f"{m}.net.depth=2", f"{m}.net.num_heads=4",
                 f"{m}.checkpoint={tmp_path / name}.pt", f"{m}.space.shape=[4,8,8]"]
    r = subprocess.run([str(BIN / "tstitch-generate"), "-m", "+experiment=dit_s_xl", *tiny,
                        f"stitch.codec={tmp_path / 'vae'}", "trainer=cpu", "metric=none", "logger=none",
                        "num_samples=4", "batch_size=4", "solver.steps=4", "stitch.fractions=[0.0,1.0],[0.5,0.5]",
                        f"hydra.sweep.dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "runs" / "1" / "manifest.json").read_text())
    assert manifest["decoder"] == str(tmp_path / "vae") and manifest["config"]["guidance"]["scale"] == 1.5
    r = subprocess.run([str(BIN / "tstitch-report"), str(tmp_path / "runs")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "runs" / "results.md")
    assert "dit-s2 : dit-xl2" in head and head.endswith("| paper FID-5K |")
    assert [(row[0], row[-1]) for row in rows] == [("0 : 1", "9.20"), ("0.5 : 0.5", "10.06")]
