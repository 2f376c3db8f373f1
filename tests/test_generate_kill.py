"""`tstitch-generate` killed with SIGKILL mid-way and restarted ends with exactly N unique samples, identical to an
uninterrupted run: on one process, and on two DDP processes restarted on one."""
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

from tstitch.engine.writer import done

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
