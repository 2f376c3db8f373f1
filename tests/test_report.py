"""`tstitch-report`: a Hydra multirun over allocations becomes one table and one plot."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def test_multirun_is_reported_as_one_table(tmp_path, in_process):
    # in-process, as the installed commands run in the other tests here and in test_cli
    r = in_process("tstitch", "-m", "+debug=tiny", "sweep=null", "stitch.fractions=[1.0,0.0],[0.0,1.0],[0.5,0.5]",
                   f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-report", tmp_path, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert "toy-dit-small : toy-dit-large" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "0.5 : 0.5", "1 : 0"]
    assert "| 1.00x |" in table[2] and (tmp_path / "report" / "tradeoff.png").exists()
    assert "3 allocations from 3 runs" in r.stdout


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three tiny single-allocation runs (0, 1, 2) of one multirun, made once."""
    root = tmp_path_factory.mktemp("runs")
    r = subprocess.run([str(BIN / "tstitch"), "-m", "+debug=tiny", "sweep=null", "metric=none",
                        "stitch.fractions=[1.0,0.0],[0.0,1.0],[0.5,0.5]", f"hydra.sweep.dir={root}"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.name.startswith("results.")}


def test_a_report_never_writes_into_the_runs_it_reads(three_runs, tmp_path, in_process):
    """The issue's case: `tstitch-report runA runB` overwrote runA's results with the two-run table."""
    a, b = three_runs / "0", three_runs / "1"
    before = snapshot(a), snapshot(b)
    r = in_process("tstitch-report", a, b, "--out", tmp_path / "ab")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (snapshot(a), snapshot(b)) == before
    assert len((tmp_path / "ab" / "results.jsonl").read_text().splitlines()) == 2
    r = in_process("tstitch-report", a, "--out", tmp_path / "a")
    assert r.returncode == 0 and "1 allocations from 1 runs" in r.stdout
    assert len((tmp_path / "a" / "results.jsonl").read_text().splitlines()) == 1


def test_default_output_is_a_new_directory_it_names(three_runs, tmp_path, in_process):
    r = in_process("tstitch-report", three_runs / "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (made,) = (tmp_path / "outputs" / "report").iterdir()
    assert f"report in {Path('outputs') / 'report' / made.name}" in r.stdout
    assert (made / "results.md").exists() and (made / "report.json").exists()


def test_a_run_directory_is_refused_as_the_output(three_runs, in_process):
    before = snapshot(three_runs / "1")
    r = in_process("tstitch-report", three_runs / "0", "--out", three_runs / "1")
    assert r.returncode == 2 and r.stderr.strip() == (f"tstitch-report: error: {three_runs / '1'} holds a run's "
                                                      "results; give the report its own directory (--out ...)")
    assert snapshot(three_runs / "1") == before


def test_a_truncated_run_is_skipped_with_one_line_and_the_rest_reported(three_runs, tmp_path, in_process):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(three_runs, sweep)
    results = sweep / "2" / "results.jsonl"
    results.write_text(results.read_text()[:25])  # killed while writing
    r = in_process("tstitch-report", sweep, "--out", tmp_path / "report")
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip() == (f"tstitch-report: skipped {results} line 1 is not valid JSON (a run killed while "
                                "writing it?)")
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "1 : 0"]
    assert "2 allocations from 2 runs (1 skipped)" in r.stdout


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
        r = in_process("tstitch-report", tmp_path / d, "--out", tmp_path / f"report-{d}")
        assert r.returncode == 0, r.stderr[-2000:]
        table = (tmp_path / f"report-{d}" / "results.md").read_text().splitlines()
        assert "toy-dit-small : toy-dit-large" in table[0] and "FD" in table[0] and "class acc." in table[0]
        assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "0.5 : 0.5"]
        assert "| 1.00x |" in table[2] and (tmp_path / f"report-{d}" / "tradeoff.png").exists()
    assert (tmp_path / "report-m" / "results.md").read_text() == (tmp_path / "report-w" / "results.md").read_text()
