"""`tstitch-generate` killed with SIGKILL mid-way and restarted ends with exactly N unique samples, identical to an
uninterrupted run: on one process, and on two DDP processes restarted on one; the same after ``kill -TERM``, which
stops the run within seconds with exit code 143 (other signals: test_signals.py). A run stopped after its last shard
but before manifest.json rebuilds the NFE and timing; a full disk is one line, and the rerun resumes."""
import errno
import fnmatch
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tstitch.jobs.engine.writer import done, read_shard

EXE = str(Path(sys.executable).parent / "tstitch-generate")
N, BATCH = 32, 2           # 16 batches on one process, 8 per rank on two
STEPS = 40                 # ~0.2 s a batch on one thread: sampling lasts seconds, the kill lands well before the end
KILL_AT = 2                # shards on disk when the process group is killed
TWO_PROCESSES = ["trainer.devices=2", "trainer.strategy=ddp"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow


def arguments(run_dir, *extra):
    return [f"num_samples={N}", f"batch_size={BATCH}", f"solver.steps={STEPS}", "stitch.fractions=[0.5,0.5]",
            "metric=none", "logger=none", "timing.rounds=0", f"hydra.run.dir={run_dir}", *extra]


def shards(run_dir):
    return sorted((run_dir / "shards").glob("*.npz"))


def _group_alive(pgid):
    """Whether any process of the group is still running (zombies left to init do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def run_to_end(run, run_dir, log, *extra):
    """The run to its end in this process (``run`` is the in_process fixture or its shared form): only the killed
    run needs a process of its own."""
    r = run("tstitch-generate", *arguments(run_dir, *extra))
    log.write_text(r.stdout + r.stderr)
    assert r.returncode == 0, log.read_text()[-3000:]
    with np.load(run_dir / "samples.npz") as z:
        return z["arr_0"], z["arr_1"], json.loads((run_dir / "manifest.json").read_text())


def kill_mid_run(run_dir, log, *extra, timeout=180):
    """Start the run in its own session, SIGKILL the whole process group once KILL_AT shards exist, and return
    the seeds the surviving shards hold. Fails if the run ended (or never wrote a shard) before the kill."""
    with open(log, "w") as f:
        proc = subprocess.Popen([EXE, *arguments(run_dir, *extra)], stdout=f, stderr=subprocess.STDOUT, env=ENV,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while len(shards(run_dir)) < KILL_AT:
            finished = (run_dir / "samples.npz").exists() or proc.poll() is not None
            if finished or time.monotonic() > deadline:
                pytest.fail(f"no kill mid-way: the run {'ended' if finished else 'timed out'} with "
                            f"{len(shards(run_dir))} shards (exit {proc.poll()}); make it slower (STEPS)\n"
                            + log.read_text()[-3000:])
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid; DDP ranks share the group
        proc.wait()
        while _group_alive(proc.pid):
            time.sleep(0.02)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed (exit {proc.returncode})"
    return done(run_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, in_process_shared):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return run_to_end(in_process_shared, run_dir, run_dir.parent / "uninterrupted.log")


@pytest.mark.parametrize("killed", [[], TWO_PROCESSES], ids=["one-process", "two-processes"])
def test_sigkill_mid_run_then_restart_gives_exactly_the_uninterrupted_set(uninterrupted, killed, tmp_path,
                                                                          in_process):
    run_dir = tmp_path / "run"
    have = kill_mid_run(run_dir, tmp_path / "killed.log", *killed)
    batches = math.ceil(N / BATCH) if not killed else 2 * math.ceil(math.ceil(N / 2) / BATCH)
    assert KILL_AT <= len(shards(run_dir)) < batches and 0 < len(have) < N, "the kill did not land mid-way"
    assert not (run_dir / "samples.npz").exists() and not (run_dir / "manifest.json").exists()

    images, labels, manifest = run_to_end(in_process, run_dir, tmp_path / "restart.log")  # one process
    assert images.shape[0] == labels.shape[0] == N
    assert done(run_dir) == set(range(N))
    assert manifest["resumed_from"] == len(have) > 0 and manifest["generated"] == N - len(have)
    ref_images, ref_labels, _ = uninterrupted
    assert images.dtype == ref_images.dtype and images.shape == ref_images.shape
    assert images.tobytes() == ref_images.tobytes() and labels.tobytes() == ref_labels.tobytes()


def no_half_files(run_dir):
    """No temporary file anywhere, every shard whole, no set or manifest."""
    assert not list(run_dir.rglob("*.tmp")), list(run_dir.rglob("*.tmp"))
    for shard in shards(run_dir):
        read_shard(shard)  # raises CorruptShard
    assert not (run_dir / "samples.npz").exists() and not (run_dir / "manifest.json").exists()


def test_kill_term_stops_two_ranks_within_seconds_and_the_rerun_gives_the_same_bytes(uninterrupted, tmp_path,
                                                                                     in_process):
    """``kill -TERM`` of the command: rank zero passes SIGTERM on to the rank it started (SLURM signals every task
    itself; test_signals.py covers SIGINT, SIGHUP and one process)."""
    run_dir, log = tmp_path / "run", tmp_path / "stopped.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([EXE, *arguments(run_dir, *TWO_PROCESSES)], stdout=f, stderr=subprocess.STDOUT,
                                env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while len(shards(run_dir)) < KILL_AT:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    while _group_alive(proc.pid):  # the other rank has ended too
        time.sleep(0.02)
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    assert took < 30, f"stopped {took:.0f} s after SIGTERM"  # seconds on a quiet machine
    kept = done(run_dir)
    assert text.strip().splitlines()[-1] == (f"tstitch-generate: stopped by SIGTERM; {len(kept)} of {N} samples are in "
                                             f"whole shards in {run_dir}; run the same command again to resume")
    assert 0 < len(kept) < N and "Traceback" not in text
    no_half_files(run_dir)

    images, labels, manifest = run_to_end(in_process, run_dir, tmp_path / "rerun.log")  # on one process
    assert manifest["resumed_from"] == len(kept) and manifest["generated"] == N - len(kept)
    assert images.tobytes() == uninterrupted[0].tobytes() and labels.tobytes() == uninterrupted[1].tobytes()

# --- stopped before manifest.json; a full disk ------------------------------------------------------------------

SMALL = ["num_samples=4", "batch_size=2", "solver.steps=3", "stitch.fractions=[0.5,0.5]", "metric=none", "logger=none",
         "grid_columns=0"]


def files_of(run_dir):
    return {p.name: p.read_bytes() for p in sorted((run_dir / "shards").glob("*.npz"))} | \
        {"samples.npz": (run_dir / "samples.npz").read_bytes()}


@pytest.mark.parametrize("lost,line", [
    (["manifest.json"], "manifest.json was missing in {} (a run stopped before writing it): rebuilt from "
                        "measured.json"),
    (["manifest.json", "measured.json"], "no NFE or timing was recorded for {} (a run stopped before writing them): "
                                         "timing the first 2 samples again (not written)"),
], ids=["rebuilt", "timed-again"])
def test_a_run_stopped_before_its_manifest_gets_its_nfe_and_timing_back(tmp_path, in_process, lost, line):
    """What a kill after the last shard and before manifest.json leaves (before measured.json, or after it)."""
    run_dir = tmp_path / "run"
    args = [*SMALL, "timing.rounds=2", f"hydra.run.dir={run_dir}"]
    assert in_process("tstitch-generate", *args).returncode == 0
    first = json.loads((run_dir / "manifest.json").read_text())
    for name in lost:
        (run_dir / name).unlink()
    before = files_of(run_dir)
    r = in_process("tstitch-generate", *args)
    assert r.returncode == 0 and f"tstitch-generate: {line.format(run_dir)}\n" in r.stderr, r.stderr[-2000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["nfe_per_image"] == first["nfe_per_image"] and manifest["generated"] == 0
    assert manifest["s_per_image"] > 0 and manifest["speedup_p25"] <= manifest["speedup"] <= manifest["speedup_p75"]
    assert json.loads((run_dir / "results.jsonl").read_text())["nfe"] == first["nfe_per_image"]
    assert files_of(run_dir) == before  # nothing sampled again was written
    if lost == ["manifest.json"]:
        assert manifest["s_per_image"] == first["s_per_image"] and manifest["speedup"] == first["speedup"]


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(pattern)``: writing a file whose name matches fails as on a full disk (its temporary name is a
    link to /dev/full: a real ENOSPC); ``full_disk(None)`` ends it."""
    from tstitch import files

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    original = files.temporary

    def arm(pattern):
        def temporary(path):
            tmp = original(path)
            if pattern and fnmatch.fnmatch(Path(path).name, pattern):
                tmp.unlink(missing_ok=True)
                tmp.symlink_to("/dev/full")
            return tmp
        monkeypatch.setattr(files, "temporary", temporary)
    return arm


@pytest.mark.parametrize("pattern,where", [("000002-000003-r0.npz", "shards"), ("samples.npz", ""),
                                           ("measured.json", ""), ("manifest.json", ""), ("000001.png", "png")])
def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path, in_process, full_disk, pattern, where):
    run_dir = tmp_path / "run"
    args = [*SMALL, "timing.rounds=0", "png=true", f"hydra.run.dir={run_dir}"]
    full_disk(pattern)
    r = in_process("tstitch-generate", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"tstitch-generate: error: no space left on device in {run_dir / where if where else run_dir} (writing "
        f"{pattern}); free space there and run the same command again: it resumes from the finished shards")
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "manifest.json").exists()
    full_disk(None)
    r = in_process("tstitch-generate", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert done(run_dir) == set(range(4)) and len(list((run_dir / "png").glob("*.png"))) == 4
    # the first batch's shard is kept (its missing PNG is written by the rerun's export); the second is sampled again
    assert json.loads((run_dir / "manifest.json").read_text())["generated"] == (2 if where else 0)


def test_a_full_quota_or_a_full_disk_met_by_a_library_is_one_line():
    from tstitch.cli import one_line

    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "/runs/a/grid.png")
    assert one_line(quota) == ("error: disk quota exceeded in /runs/a (writing grid.png); free space there (or raise "
                               "the quota) and run the same command again", 2)
    assert one_line(OSError(errno.ENOSPC, "No space left on device")) == (
        "error: no space left on device; free space on the run directory's disk and run the same command again", 2)
    assert one_line(OSError(errno.EACCES, "Permission denied")) == (None, None)
