"""The run directory's lock (tstitch/jobs/engine/lock.py) in one process: flock locks belong to an open file, so a
second ``open`` here stands for another process or rank. (A real second process: tests/test_run_safety.py.)"""
import errno
import fcntl
import json
import os
import threading

import pytest

from tstitch.errors import ConfigError
from tstitch.jobs.engine import lock


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TSTITCH_LAUNCH", "tstitch-ours")  # acquire exports it: put back after the test
    monkeypatch.setattr(lock, "GRACE", 0.3)
    yield tmp_path / "run"
    lock.release(tmp_path / "run")


def hold(path, how, record=None):
    """Another holder: ``path`` opened apart and flocked (``how``), with ``record`` written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - the caller closes it, which drops the lock
    fcntl.flock(f, how | fcntl.LOCK_NB)
    if record is not None:
        f.write(json.dumps(record))
        f.flush()
    return f


def test_rank_zero_waits_out_another_ranks_check(run_dir):
    """A rank's check (a shared lock held for an instant) never makes rank zero see a stranger."""
    other = hold(run_dir / lock.NAME, fcntl.LOCK_SH)
    threading.Timer(0.1, other.close).start()
    path = lock.acquire(run_dir)
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["launch"] == "tstitch-ours"
    assert lock._locked(path)


def test_a_writer_holding_the_lock_is_named(run_dir):
    other = hold(run_dir / lock.NAME, fcntl.LOCK_EX, {"pid": 4242, "host": "node7", "started": "2026-01-01T00:00:00"})
    try:
        with pytest.raises(ConfigError, match=rf"^{run_dir} is being written by another process \(PID 4242 on node7, "
                                              r"started 2026-01-01T00:00:00\); wait for it"):
            lock.acquire(run_dir)
    finally:
        other.close()
    assert lock.acquire(run_dir) == run_dir / lock.NAME  # the holder gone (its file closed), the lock is free


def test_other_ranks_accept_only_their_own_launch(run_dir, monkeypatch):
    lock.acquire(run_dir)
    assert lock.check_member(run_dir, timeout=1)["launch"] == "tstitch-ours"
    monkeypatch.setenv("TSTITCH_LAUNCH", "tstitch-theirs")
    with pytest.raises(ConfigError, match=f"^{run_dir} is being written by another process"):
        lock.check_member(run_dir, timeout=1)
    lock.release(run_dir)
    assert not lock._locked(run_dir / lock.NAME)


def test_a_record_a_killed_run_left_is_not_a_holder(run_dir):
    """The record alone (its process gone, the flock with it) holds nothing: the other ranks wait for rank zero."""
    hold(run_dir / lock.NAME, fcntl.LOCK_SH, {"pid": 1, "host": "gone", "launch": "tstitch-old"}).close()
    with pytest.raises(ConfigError, match="rank zero of this launch never locked"):
        lock.check_member(run_dir, timeout=0.3, poll=0.05)


def test_a_filesystem_without_flock_is_one_line(run_dir, monkeypatch):
    def no_locks(f, how):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match=r"^cannot lock .*\.lock \(No locks available\): its filesystem has no file "
                                          r"locks \(NFSv3 without lockd, Lustre without -o flock\)"):
        lock.acquire(run_dir)
