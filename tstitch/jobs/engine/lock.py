"""One writer per run directory: an advisory lock (``fcntl.flock`` on ``<run>/.lock``) taken by rank zero of a
launch before anything is written and held until the process ends; the kernel drops it when the process dies,
SIGKILL included, so a crashed run never leaves a stale lock.

Every other rank checks that the holder is its own launch (``TSTITCH_LAUNCH``, which rank zero exports to the
ranks Lightning starts, or the torchrun / srun job id); a second ``tstitch-generate`` on the same directory exits
within a second (``GRACE``) with one line naming the holder's PID and host.

Why ``fcntl.flock`` and not the ``filelock`` package: the other ranks check that the lock is held with a *shared*
lock taken and dropped at once (``_locked``), which never stops another rank's check; filelock takes only exclusive
locks on its file, and an exclusive check by one rank would make a second rank's check (reading the holder record
a killed run left) or rank zero's own acquire see a stranger. flock is also what filelock's ``FileLock`` runs on
Unix, so neither reaches further on a cluster's shared filesystem: across nodes on NFS (Linux maps flock onto NFS
byte-range locks; NFSv3 needs lockd) and on Lustre mounted with ``-o flock`` (``localflock`` locks one node only).
Where flock is missing, filelock falls back to a marker file that outlives a killed process (a stale lock); here
the command stops with one line saying so. The holder's record (PID, host, launch, start) is the lock file's
content, read by the other ranks and by a second command.
"""
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from tstitch.errors import ConfigError

NAME = ".lock"
GRACE = 1.0  # seconds rank zero retries a held lock (another rank's check holds it for microseconds, a writer all run)
BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock's "held by another"; other errors: no flock here
_held = {}  # path -> open file: the lock lives as long as the file stays open


def launch_id(env=os.environ):
    """What all ranks of one launch share: ours (set by rank zero), torchrun's run id or SLURM's job step."""
    if env.get("TSTITCH_LAUNCH"):
        return env["TSTITCH_LAUNCH"]
    if env.get("TORCHELASTIC_RUN_ID") and env["TORCHELASTIC_RUN_ID"] != "none":
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '0')}"
    return None


def is_rank_zero(env=os.environ):
    """Rank zero of the launch, as its environment tells before any process group exists."""
    return all(int(env.get(k, "0") or 0) == 0 for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


def spawned(env=os.environ):
    """A rank that rank zero of this launch started itself (Lightning's DDP launcher), whose exit code no user
    reads: rank zero reports for it."""
    return env.get("TSTITCH_LAUNCH", "").startswith("tstitch-") and not is_rank_zero(env)


def _holder(path):
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _busy(path, holder):
    started = f", started {holder['started']}" if holder.get("started") else ""
    return ConfigError(f"{path.parent} is being written by another process (PID {holder.get('pid', '?')} on "
                       f"{holder.get('host', '?')}{started}); wait for it to finish, stop it, or choose another "
                       "hydra.run.dir=...")


def acquire(run_dir):
    """Take the run directory's lock for this process (rank zero); raises ConfigError naming the holder."""
    path = Path(run_dir) / NAME
    if str(path) in _held:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - kept open: the lock lives as long as the file does
    deadline = time.monotonic() + GRACE
    try:
        while not _flock(f, fcntl.LOCK_EX, path):
            if time.monotonic() > deadline:
                raise _busy(path, _holder(path))
            time.sleep(0.05)
    except BaseException:
        f.close()
        raise
    launch = launch_id() or f"tstitch-{uuid.uuid4().hex[:12]}"
    os.environ["TSTITCH_LAUNCH"] = launch  # ranks that Lightning starts from here inherit it
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "launch": launch,
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    f.flush()
    _held[str(path)] = f
    return path


def release(run_dir):
    f = _held.pop(str(Path(run_dir) / NAME), None)
    if f is not None:
        f.close()  # closing drops the flock


def check_member(run_dir, timeout=120.0, poll=0.2):
    """For a rank other than zero: wait (up to ``timeout`` seconds, while rank zero starts) until the lock is held,
    then make sure its holder is this launch."""
    path, launch = Path(run_dir) / NAME, launch_id()
    deadline = time.monotonic() + timeout
    while True:
        holder = _holder(path) if path.exists() else {}
        if path.exists() and _locked(path) and holder.get("launch"):
            if launch is not None and holder["launch"] != launch:
                raise _busy(path, holder)
            return holder
        if time.monotonic() > deadline:
            raise ConfigError(f"rank zero of this launch never locked {path.parent} within {timeout:.0f} s; check "
                              "that every rank was given the same hydra.run.dir=...")
        time.sleep(poll)


def _flock(f, how, path):
    """``fcntl.flock(f, how)`` without waiting: whether it was taken; a filesystem without flock is one line."""
    try:
        fcntl.flock(f, how | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in BUSY:
            return False
        raise ConfigError(f"cannot lock {path} ({os.strerror(e.errno)}): its filesystem has no file locks (NFSv3 "
                          "without lockd, Lustre without -o flock); choose a hydra.run.dir=... on one that has them"
                          ) from None


def _locked(path):
    """Whether some process holds the lock (probed with a shared lock taken and dropped at once)."""
    with open(path) as f:
        if not _flock(f, fcntl.LOCK_SH, path):
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def take(run_dir):
    """Rank zero acquires; every other rank checks the holder is its own launch."""
    return acquire(run_dir) if is_rank_zero() else check_member(run_dir)
