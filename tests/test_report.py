"""`tstitch-report`: a Hydra multirun over allocations becomes one table and one plot."""
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_multirun_is_reported_as_one_table(tmp_path, in_process):
    # in-process, as the installed commands run in the other tests here and in test_cli
    r = in_process("tstitch", "-m", "+debug=tiny", "sweep=null", "stitch.fractions=[1.0,0.0],[0.0,1.0],[0.5,0.5]",
                   f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-report", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "results.md").read_text().splitlines()
    assert "toy-dit-small : toy-dit-large" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "0.5 : 0.5", "1 : 0"]
    assert "| 1.00x |" in table[2] and (tmp_path / "tradeoff.png").exists()
    assert "3 allocations from 3 runs" in r.stdout


def test_no_results_is_one_line_error(tmp_path):
    """Through the installed command: exit code 2 and exactly one line."""
    r = subprocess.run([str(BIN / "tstitch-report"), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (f"tstitch-report: error: no results.jsonl below {tmp_path}; "
                                                      "give tstitch run directories")


def test_generation_multirun_and_its_wandb_offline_runs_are_reported(tmp_path, in_process):
    """tstitch-generate runs (one allocation each, speedup measured in-run) report like the sweep; the W&B
    offline runs alone (e.g. copied from a cluster) give the same table."""
    import shutil

    r = subprocess.run([str(BIN / "tstitch-generate"), "-m", "stitch.fractions=[0.0,1.0],[0.5,0.5]", "num_samples=10",
                        "batch_size=10", "solver.steps=4", "logger.mode=offline", f"hydra.sweep.dir={tmp_path / 'm'}"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-2000:]
    for d in ("m", "w"):
        if d == "w":
            for k, run in enumerate(sorted((tmp_path / "m").glob("*/wandb/offline-run-*"))):
                shutil.copytree(run, tmp_path / "w" / f"{k}" / run.name)
        r = in_process("tstitch-report", tmp_path / d)
        assert r.returncode == 0, r.stderr[-2000:]
        table = (tmp_path / d / "results.md").read_text().splitlines()
        assert "toy-dit-small : toy-dit-large" in table[0] and "FD" in table[0] and "class acc." in table[0]
        assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "0.5 : 0.5"]
        assert "| 1.00x |" in table[2] and (tmp_path / d / "tradeoff.png").exists()
    assert (tmp_path / "m" / "results.md").read_text() == (tmp_path / "w" / "results.md").read_text()
