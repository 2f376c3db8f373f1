"""Stopping a run on SIGTERM, SIGINT or SIGHUP within seconds, with nothing half-written.

SLURM sends SIGTERM before it preempts a job and at its time limit (``--signal``), a terminal sends SIGINT (Ctrl+C)
or SIGHUP (closed). The handler raises ``Stopped`` in the main thread at once: the batch being sampled is dropped,
every file is written whole (``tstitch.files``), so the finished shards stay and a rerun resumes to the same bytes.
Writes that belong together run ``deferred``: a signal that comes during them is raised when they end. The command
exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT).
"""
import contextlib
import signal
import subprocess
import threading
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_state = {"received": None, "raised": False, "defer": 0, "handled": ()}


class Stopped(BaseException):
    """A signal stopped the run. A BaseException, as KeyboardInterrupt: no ``except Exception`` swallows it."""

    def __init__(self, signum):
        self.signum, self.name, self.code = signum, signal.Signals(signum).name, 128 + signum
        self.detail = ""  # what was kept and how to go on, set by the command
        super().__init__(f"stopped by {self.name}")


def _raise():
    _state["raised"] = True
    raise Stopped(_state["received"])


def _handler(signum, frame):
    if _state["received"] is None:
        _state["received"] = signum
        if not _state["defer"]:
            _raise()


@contextlib.contextmanager
def on_signals():
    """Stop on SIGTERM, SIGINT and SIGHUP inside this block (main thread only). A signal that already has another
    handler keeps it: an ignored one (``nohup``) and one a job runner set, e.g. submitit, which ignores SIGTERM and
    checkpoints and requeues on its own signal (``hydra.launcher.signal_delay_s``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {}
    for s in SIGNALS:
        if signal.getsignal(s) in (signal.SIG_DFL, signal.default_int_handler):
            before[s] = signal.signal(s, _handler)
    _state.update(received=None, raised=False, defer=0, handled=tuple(before))
    try:
        yield
    finally:
        _state.update(received=None, raised=False, defer=0, handled=())
        for s, handler in before.items():
            signal.signal(s, handler)


def reclaim():
    """Take the signals back when Lightning's prediction starts: its SIGTERM handler passes SIGTERM on to the ranks
    and then broadcasts inside the handler, where a rank that gets SIGTERM twice (from SLURM or ``kill`` and from
    rank zero) waits for ever. ``stop_ranks`` passes the signal on instead; Lightning's teardown puts ours back."""
    if threading.current_thread() is threading.main_thread():
        for s in _state["handled"]:
            signal.signal(s, _handler)


@contextlib.contextmanager
def deferred():
    """Writes that belong together: a signal received inside is raised when the block ends."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
    if _state["received"] is not None and not _state["raised"] and not _state["defer"]:
        _raise()


def stop_ranks(trainer, signum, timeout=20.0):
    """Rank zero, stopped: pass the signal on to the ranks it started itself (Lightning's DDP launcher) and wait for
    them to end (killed after ``timeout`` seconds), so that no rank still writes when the command has exited."""
    procs = getattr(trainer.strategy.launcher, "procs", None) or []
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
