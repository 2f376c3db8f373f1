"""Paper tables by config: every experiment composes, sweeps valid allocations and has its README; the toy
tables run end to end with the paper's column; a DiT experiment runs on tiny official-format weights."""
import json
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from tstitch.cli import CONF
from tstitch.models.nets.dit import DiT
from tstitch.sampling.stitch import check_fractions

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# each experiment's allocations, first member first (default: the first member's fraction 0, 0.1, ..., 1)
SWEEPS = {"dit_s_b_xl_grid": [[a / 10, b / 10, (10 - a - b) / 10] for a in range(11) for b in range(11 - a)],
          "cross_family": [[f / 10, (10 - f) / 10] for f in (0, 2, 4, 6, 10)],
          "sd_bk_tiny_v1_4": [[f / 10, (10 - f) / 10] for f in range(0, 11, 2)],
          "sd_ssd1b_sdxl": [[f / 10, (10 - f) / 10] for f in range(0, 11, 2)],
          "sd_lcm_2": [[f / 2, 1 - f / 2] for f in range(3)], "sd_lcm_4": [[f / 4, 1 - f / 4] for f in range(5)]}


def command(name):
    return "tstitch" if name.startswith("toy") else "generate"


def table(path):
    lines = Path(path).read_text().splitlines()
    return lines[0], [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_valid_sweeps_paper_values_and_readme(name):
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose(command(name), [f"experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    if "stitch.fractions" in params:
        (override,) = OverridesParser.create().parse_overrides([f"stitch.fractions={params['stitch.fractions']}"])
        rows = [OverridesParser.create().parse_override(f"x={v}").value() for v in override.sweep_string_iterator()]
        assert [check_fractions(r, len(cfg.stitch.members)) for r in rows] == rows  # valid as written
        assert rows == SWEEPS.get(name, [[f / 10, (10 - f) / 10] for f in range(11)])  # exact: as written
    for curve in (cfg.get("paper") or {}).get("curves", []):
        assert len(curve.first) == len(curve["values"]) >= 1
    readme = (ROOT / "experiments" / name / "README.md").read_text()
    assert f"experiment={name}" in readme  # experiment=NAME or +experiment=NAME


def test_toy_table_runs_beside_the_paper_column(tmp_path, in_process):
    r = in_process("tstitch", "+experiment=toy_s_l", "+debug=tiny", "metric=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "results.md")
    assert head.endswith("| paper FID-5K (DiT-S/XL) |")
    assert [(row[0], row[-1]) for row in rows] == [("0 : 1", "9.20"), ("0.5 : 0.5", "10.06"), ("1 : 0", "33.46")]


def test_toy_sampler_multirun_is_one_table_with_a_setting_column(tmp_path, in_process):
    r = in_process("tstitch", "-m", "+experiment=toy_samplers", "+debug=tiny", "solver=ddim,dpmpp_2m",
                   "solver.steps=10", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-report", tmp_path, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "report" / "results.md")
    assert head.startswith("| setting |") and "paper FID-5K (DiT-S/XL, approx.)" in head
    assert [(row[0], row[1], row[-1]) for row in rows] == [
        ("solver=ddim", "0 : 1", "20.20"), ("solver=ddim", "0.5 : 0.5", "25.40"), ("solver=ddim", "1 : 0", "54.90"),
        ("solver=dpmpp_2m", "0 : 1", "17.70"), ("solver=dpmpp_2m", "0.5 : 0.5", "22.90"),
        ("solver=dpmpp_2m", "1 : 0", "44.20")]
    speedup = [h.strip() for h in head.split("|")[1:-1]].index("speedup (p25-p75)")
    assert all(row[speedup] == "1.00x" for row in rows if row[1] == "0 : 1")  # speedup within each setting
    assert (tmp_path / "report" / "tradeoff.png").exists()  # FD and accuracy vs time per setting, ours vs the paper


@pytest.mark.parametrize("name", ["dit_s_xl", "dit_b_xl", "dit_s_b", "dit_samplers", "dit_s_b_xl_grid"])
def test_dit_experiment_runs_on_tiny_official_format_weights(tmp_path, name, in_process):
    """Each DiT experiment end to end on CPU: tiny random DiTs saved as DiT train.py checkpoints, a tiny VAE, two
    allocations of its sweep; the report puts the paper's FID-5K beside them where the paper has one."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                  norm_num_groups=8, sample_size=16, scaling_factor=0.18215).save_pretrained(tmp_path / "vae")
    tiny = []
    three = name == "dit_s_b_xl_grid"
    for member, hidden in (("small", 32), ("base", 48), ("large", 64))[:: 1 if three else 2]:
        net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=hidden, depth=2, num_heads=4)
        torch.save({"ema": net.state_dict(), "model": net.state_dict()}, tmp_path / f"{member}.pt")
        m = f"stitch.members.{member}"
        tiny += [f"{m}.net.input_size=8", f"{m}.net.hidden_size={hidden}", f"{m}.net.depth=2", f"{m}.net.num_heads=4",
                 f"{m}.checkpoint={tmp_path / member}.pt", f"{m}.space.shape=[4,8,8]"]
    fractions = "[0.0,0.0,1.0],[0.5,0.0,0.5]" if three else "[0.0,1.0],[0.5,0.5]"
    solver = ["solver=ddim"] if name == "dit_samplers" else []
    r = in_process("tstitch-generate", "-m", f"+experiment={name}", *tiny, *solver, f"stitch.codec={tmp_path / 'vae'}",
                   "trainer=cpu", "metric=none", "logger=none", "num_samples=4", "batch_size=4", "solver.steps=4",
                   f"stitch.fractions={fractions}", f"hydra.sweep.dir={tmp_path / 'runs'}")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "runs" / "1" / "manifest.json").read_text())
    assert manifest["decoder"] == str(tmp_path / "vae") and manifest["config"]["guidance"]["scale"] == 1.5
    r = in_process("tstitch-report", tmp_path / "runs", "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "report" / "results.md")
    paper = {"dit_s_xl": ("9.20", "10.06"), "dit_b_xl": ("9.20", "9.67"), "dit_s_b": ("12.30", "13.52")}
    if name in paper:
        assert head.endswith("| paper FID-5K |" if name == "dit_s_xl" else "| paper FID-5K (approx.) |")
        assert [(row[0], row[-1]) for row in rows] == [("0 : 1", paper[name][0]), ("0.5 : 0.5", paper[name][1])]
    else:  # the samplers' curves are for 10/20/50 steps (not 4); the three-model figure has no table
        assert len(rows) == 2 and "paper" not in head


def tiny_members(tmp_path, experiment, extra=()):
    """Overrides that shrink every member of an experiment to a tiny random model saved in its family's official
    format (DiT train.py checkpoint, U-ViT plain state dict), at 8x8, with a tiny VAE for latent spaces."""
    from diffusers import AutoencoderKL

    from tstitch.models.nets.uvit import UViT

    with initialize_config_dir(CONF, version_base=None):
        cfg = compose("generate", [f"experiment={experiment}", *extra])
    out = []
    for k, (member, e) in enumerate(cfg.stitch.members.items()):
        channels, m = e.space.shape[0], f"stitch.members.{member}"
        torch.manual_seed(k)
        if e.family == "dit":
            net = DiT(input_size=8, patch_size=2, in_channels=channels, hidden_size=32, depth=2, num_heads=4)
            torch.save({"ema": net.state_dict(), "model": net.state_dict()}, tmp_path / f"{member}.pt")
            out += [f"{m}.net.input_size=8", f"{m}.net.hidden_size=32", f"{m}.net.depth=2", f"{m}.net.num_heads=4"]
        else:
            net = UViT(img_size=8, patch_size=2, in_chans=channels, embed_dim=32, depth=2, num_heads=2,
                       num_classes=e.net.num_classes, conv=e.net.conv)
            torch.save(net.state_dict(), tmp_path / f"{member}.pt")
            out += [f"{m}.net.img_size=8", f"{m}.net.patch_size=2", f"{m}.net.embed_dim=32", f"{m}.net.depth=2",
                    f"{m}.net.num_heads=2"]
        out += [f"{m}.checkpoint={tmp_path / member}.pt", f"{m}.space.shape=[{channels},8,8]"]
    if cfg.stitch.members[list(cfg.stitch.members)[-1]].space.scale != 1.0:
        AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                      norm_num_groups=8, sample_size=16, scaling_factor=0.18215).save_pretrained(tmp_path / "vae")
        out.append(f"stitch.codec={tmp_path / 'vae'}")
    return out


@pytest.mark.parametrize("name,extra", [("uvit_m4_l4_64", []), ("uvit_l2_h2_256", []),
                                        ("cross_family", ["stitch=xf_dit_s2_uvit_h2"]),
                                        ("cross_family", ["stitch=xf_uvit_l2_dit_xl2"]), ("dit_s_uvit_h", [])])
def test_family_experiment_runs_on_tiny_official_format_weights(tmp_path, name, extra, in_process):
    r = in_process("tstitch-generate", "-m", f"+experiment={name}", *extra, *tiny_members(tmp_path, name, extra),
                   "trainer=cpu", "metric=none", "logger=none", "num_samples=4", "batch_size=4", "solver.steps=4",
                   "stitch.fractions=[0.0,1.0],[0.5,0.5]", f"hydra.sweep.dir={tmp_path / 'runs'}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-report", tmp_path / "runs", "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    head, rows = table(tmp_path / "report" / "results.md")
    # U-ViT experiments run U-ViT's DPM-Solver: its 4 model calls are a step of order 3 and one of order 1
    half = "3 : 1" if name.startswith("uvit") or name == "dit_s_uvit_h" else "2 : 2"
    assert [(row[0], row[1]) for row in rows] == [("0 : 1", "0 : 4"), ("0.5 : 0.5", half)]


def test_paper_values_are_the_ones_docs_paper_md_lists_and_nothing_points_outside_the_repo():
    """Every paper curve of an experiment is a row of a table in docs/paper.md (the numbers and their sources live
    in this repository), and no tracked file points to a file outside it."""
    def number(cell):  # "9.20" -> 9.2, "13.6 s" -> 13.6, "-" (a hidden marker) -> None, other text -> itself
        try:
            return None if cell == "-" else float(cell.removesuffix(" s"))
        except ValueError:
            return cell

    rows = [[number(c.strip()) for c in line.strip().strip("|").split("|")]
            for line in (ROOT / "docs" / "paper.md").read_text().splitlines() if line.startswith("|")]
    for name in EXPERIMENTS:
        with initialize_config_dir(CONF, version_base=None):
            cfg = compose(command(name), [f"experiment={name}"])
        for curve in (cfg.get("paper") or {}).get("curves", []):
            values = [None if v is None else float(v) for v in curve["values"]]
            n = len(values)
            found = [r for r in rows if any(r[i:i + n] == values for i in range(len(r) - n + 1))]
            assert found, (name, values)
        assert "docs/paper.md" in (cfg.get("paper") or {}).get("source", "docs/paper.md"), name
    outside = ["../" + "shared", "REFERENCE" + ".md"]
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    hits = [f for f in files if (ROOT / f).is_file() and (ROOT / f).suffix in (".md", ".yaml", ".py", ".sh", ".sbatch")
            and any(o in (ROOT / f).read_text(errors="replace") for o in outside)]
    assert hits == []


def test_cost_estimate_of_the_teaser_is_the_papers_timing_summed_over_its_jobs(capsys):
    """benchmarks/experiment_cost.py for dit_s_xl: 11 jobs of 5000 images; with 100 guided steps, r of them on
    DiT-S/2 (1.6 s per 8 images) and the rest on DiT-XL/2 (16.5 s), the 11 jobs take 5000 x (550 x 1.6 + 550 x 16.5)
    / 800 s."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("experiment_cost", ROOT / "benchmarks" / "experiment_cost.py")
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    cost.main(["dit_s_xl"])
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("dit_s_xl")]
    assert row[1:3] == ["11", "55000"] and row[3:7] == ["dit-s2", "5.50,", "dit-xl2", "5.50"]
    assert float(row[-1]) == pytest.approx(5000 * (550 * 1.6 + 550 * 16.5) / 800 / 3600, abs=0.05)
