"""What tstitch-generate says and leaves: a refused resume names the keys a user types; a 2-process CPU run (alone
and in a multirun) prints each line once and leaves nothing beside its run directory, its ranks' log in one file."""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tstitch.jobs.generate import user_key

BIN = Path(sys.executable).parent
SMALL = ["num_samples=4", "batch_size=2", "solver.steps=2", "metric=none", "logger=none", "timing.rounds=0"]
DDP = ["trainer.devices=2", "trainer.strategy=ddp"]


def test_identity_keys_are_named_as_a_user_types_them():
    assert [user_key(k) for k in (
        "config.options.fractions", "config.options.steps", "config.options.solver", "config.options.guidance",
        "config.options.channels", "config.options.rule", "config.options.eta", "config.members.large.net.depth",
        "config.codec", "config.fast.precision", "config.batch_size", "config.labels", "config.seed",
        "config.accelerator", "checkpoints.large", "prompts")] == [
        "stitch.fractions", "solver.steps", "solver.name", "guidance.scale", "guidance.channels", "stitch.rule",
        "solver.options.eta", "stitch.members.large.net.depth", "stitch.codec", "fast.precision", "batch_size",
        "labels", "seed", "trainer.accelerator", "stitch.members.large.checkpoint (the content of its checkpoint)",
        "prompts (the prompt list)"]


def test_a_resume_with_other_fractions_names_stitch_fractions(tmp_path, in_process):
    run = tmp_path / "run"
    r = in_process("tstitch-generate", *SMALL, "stitch.fractions=[0.5,0.5]", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-generate", *SMALL, "num_samples=6", "stitch.fractions=[0.4,0.6]", f"hydra.run.dir={run}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"tstitch-generate: error: {run} holds samples made with other settings (differs in: stitch.fractions); "
        f"resume with the settings in {run / 'identity.json'}, or choose a new hydra.run.dir=...")


def run_in(cwd, *args):
    return subprocess.run([str(BIN / "tstitch-generate"), *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})


def terminal(r):
    """The lines a terminal shows (progress bar and torch's CUDA note left out), each with its count."""
    lines = [line for line in (r.stdout + r.stderr).replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("generating:") and "cpp_extension" not in line]
    return Counter(lines)


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "shards" not in p.parts
                  and ".hydra" not in p.parts)


@pytest.mark.slow
def test_two_process_run_prints_each_line_once_and_leaves_only_its_run_directory(tmp_path):
    r = run_in(tmp_path, *SMALL, *DDP)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = terminal(r)
    assert [line for line, n in lines.items() if n > 1] == [], lines
    assert sum("GPU available" in line for line in lines) == 1
    assert sum("Initializing distributed: GLOBAL_RANK" in line for line in lines) == 2  # one per rank
    (run,) = (tmp_path / "outputs" / "generate").iterdir()
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]
    assert [f for f in files_under(run) if f.endswith(".log")] == ["generate.log"]  # no train_ddp_process_1.log
    assert "samples.npz" in files_under(run)
    log = (run / "generate.log").read_text()
    assert "GLOBAL_RANK: 0" in log and "GLOBAL_RANK: 1" in log  # both ranks' lines in the run's one log


@pytest.mark.slow
def test_two_process_multirun_shares_one_sweep_directory(tmp_path):
    """Lightning starts rank 1 as this command again: before, in a multirun it swept on its own, into a sweep
    directory of its own ${now} (rank 0 then waited for it in vain), and Hydra's launch lines came twice."""
    r = run_in(tmp_path, "-m", "stitch.fractions=[0.0,1.0],[1.0,0.0]", *SMALL, *DDP)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = terminal(r)
    assert [line for line, n in lines.items() if n > 1 and "GPU available" not in line and "TPU" not in line] == []
    assert sum("Launching 2 jobs" in line for line in lines) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    for job in ("0", "1"):
        assert [f for f in files_under(sweep / job) if f.endswith(".log")] == ["generate.log"]
        assert "samples.npz" in files_under(sweep / job)
        assert "GLOBAL_RANK: 1" in (sweep / job / "generate.log").read_text() or job == "1"  # ranks joined once
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
