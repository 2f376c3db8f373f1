"""The `tstitch` command end to end on the debug config, and its one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tstitch import load, sample
from tstitch.data import seeds
from tstitch.metrics import FashionMetric
from tstitch.models.codecs import load_codec

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "tstitch")


def tstitch(*args, tmp_path, in_process):
    """`tstitch +debug=tiny ...` run in tmp_path by the ``in_process`` fixture (the installed command's own exit code
    and error: test_unwritable_output_dir_is_one_line)."""
    args = ["+debug=tiny", f"hydra.run.dir={tmp_path / 'run'}", *args]
    return in_process("tstitch", *args, env={"WANDB_MODE": "disabled"}, cwd=tmp_path)


def test_debug_run_writes_table_grid_plot(tmp_path, in_process):
    r = tstitch(tmp_path=tmp_path, in_process=in_process)  # the installed command: below and in test_install
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "run"
    for name in ("results.md", "results.csv", "results.jsonl", "grid.png", "tradeoff.png", "run.json"):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["fractions"] for r in rows] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert [r["nfe"] for r in rows] == [[0, 3], [2, 1], [3, 0]]  # 3 steps: round-half-up(1.5) = 2 small
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert "FD" in r.stdout and "speedup" in r.stdout
    # each row is scored on its own samples against their labels: the stitched row equals the Python API's samples
    # of the same seeds (debug=tiny: 8 seeds in batches of 4, DDIM 3 steps, w = 3) scored apart
    members = [load("toy/small"), load("toy/large")]
    images, labels = [], []
    for batch in (range(0, 4), range(4, 8)):
        x, y, rng = seeds.draw(batch, (1, 28, 28), 10, labels="balanced")
        result = sample(members, x, y, fractions=[0.5, 0.5], solver="ddim", steps=3, guidance=3.0, eta=0.0,
                        randn_like=rng.randn_like)
        images.append(load_codec("pixels", members[-1].space).decode(result.x))
        labels.append(y)
    expected = FashionMetric()(torch.cat(images), torch.cat(labels))
    assert rows[1]["accuracy"] == expected["accuracy"] and rows[1]["fd"] == pytest.approx(expected["fd"], rel=1e-6)
    assert len({row["fd"] for row in rows}) == 3  # three sample sets, three distances
    logged = json.loads((out / "run.json").read_text())["config"]["stitch"]["fractions"]
    assert logged == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]  # the allocations it ran, not the default of sweep=null
    assert "| 0.5 : 0.5 |" in (out / "tstitch.log").read_text()  # the run's log holds the table


def test_wandb_offline_run_is_written(tmp_path, in_process):
    r = in_process("tstitch", "+debug=tiny", "logger.mode=offline", "sweep.first=[0.0,1.0]", "metric=none",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                   env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "no offline W&B run written"


@pytest.mark.parametrize("override,message", [
    ("sweep=null stitch.fractions=[0.5,0.6]", "sum to 1.1"),
    ("sweep=null stitch.fractions=[1.2,-0.2]", "negative"),
    ("sweep=null stitch.fractions=[1.0]", "1 stitch fractions for 2 members"),
    ("solver.name=euler", "unknown solver 'euler'"),
    ("stitch.members.large.checkpoint=/nonexistent/dit.pt", "checkpoint not found: /nonexistent/dit.pt"),
    ("stitch.members.small.space.name=mnist-pixels", "cannot stitch toy-dit-small with toy-dit-large: different space"),
    ("stitch.members.small.space.shape=[1,32,32]", "different space"),
])
def test_bad_input_is_one_line_error(tmp_path, in_process, override, message):
    r = tstitch(*override.split(), tmp_path=tmp_path, in_process=in_process)
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("tstitch: error:") and message in lines[-1], lines[-3:]
    assert "Traceback" not in r.stderr


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path, in_process):
    """An error found after Hydra started exits with code 2 and one line (the installed command's exit code:
    test_unwritable_output_dir_is_one_line)."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = tstitch(f"stitch.members.large.checkpoint={bad}", tmp_path=tmp_path, in_process=in_process)
    assert r.returncode == 2 and "unreadable or corrupt" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("tstitch: error:") and "Traceback" not in r.stderr
    small = ROOT / "tstitch/data/toy/weights/dit_small.safetensors"
    r = tstitch(f"stitch.members.large.checkpoint={small}", tmp_path=tmp_path, in_process=in_process)
    assert r.returncode == 2 and "does not fit toy-dit-large" in r.stderr and "shape: " in r.stderr


def test_unwritable_output_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = subprocess.run([EXE, "+debug=tiny", f"hydra.run.dir={blocker}/run"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"tstitch: error: output directory {blocker}/run cannot be made ({blocker} is a "
                                "file); choose another with hydra.run.dir=...")
