"""`tstitch-generate` stopped by a signal (SLURM's SIGTERM before preemption or the time limit, Ctrl+C's SIGINT, a
closed terminal's SIGHUP): it exits within seconds with 128 + the signal, keeps every finished shard, leaves no half
file, and the rerun completes the set. Here in this process; ``kill -TERM`` of the installed command on two ranks,
and the rerun's bytes against an uninterrupted run, are in test_generate_kill.py (which has that run already).
SLURM's side (``--signal``, requeue, the submitit launcher) is in slurm/README.md."""
import os
import signal

import numpy as np
import pytest
from test_generate_kill import no_half_files

from tstitch.jobs.engine import stop
from tstitch.jobs.engine.writer import done


def _signal_after(monkeypatch, signum, shards_written, inside=False):
    """Send ``signum`` to this process once ``shards_written`` shards are written: after the writer's batch, or
    ``inside`` it, between the shard and its PNGs (which are written together: the signal waits for them)."""
    from tstitch.jobs.engine import writer

    count = {"n": 0}

    def send():
        count["n"] += 1
        if count["n"] == shards_written:
            assert signal.getsignal(signum) is stop._handler  # ours while predicting, not Lightning's
            os.kill(os.getpid(), signum)
    if inside:
        original = writer.write_npz

        def write_npz(*args, **kwargs):
            original(*args, **kwargs)
            send()
        monkeypatch.setattr(writer, "write_npz", write_npz)
        return
    original = writer.ShardWriter.write_on_batch_end

    def write_on_batch_end(self, *args, **kwargs):
        original(self, *args, **kwargs)
        send()
    monkeypatch.setattr(writer.ShardWriter, "write_on_batch_end", write_on_batch_end)


@pytest.mark.parametrize("signum,inside", [(signal.SIGINT, False), (signal.SIGHUP, False), (signal.SIGTERM, True)],
                         ids=["SIGINT", "SIGHUP", "SIGTERM-between-a-shard-and-its-PNGs"])
def test_a_signal_stops_the_run_with_128_plus_its_number(tmp_path, in_process, monkeypatch, signum, inside):
    run_dir = tmp_path / "run"
    args = ["num_samples=8", "batch_size=2", "solver.steps=3", "stitch.fractions=[0.5,0.5]", "metric=none",
            "logger=none", "timing.rounds=0", "grid_columns=0", "png=true", f"hydra.run.dir={run_dir}"]
    with monkeypatch.context() as patch:
        _signal_after(patch, signum, 2, inside)
        r = in_process("tstitch-generate", *args)
    name = signal.Signals(signum).name
    assert r.returncode == 128 + signum, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"tstitch-generate: stopped by {name}; 4 of 8 samples are in whole "
                                                 f"shards in {run_dir}; run the same command again to resume")
    no_half_files(run_dir)
    assert sorted(p.name for p in (run_dir / "png").iterdir()) == [f"{s:06d}.png" for s in range(4)]
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)  # put back
    r = in_process("tstitch-generate", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert done(run_dir) == set(range(8)) and len(list((run_dir / "png").iterdir())) == 8
    with np.load(run_dir / "samples.npz") as z:
        assert z["arr_0"].shape == (8, 28, 28, 1)


def test_signals_with_a_handler_of_their_own_keep_it():
    """nohup's ignored SIGHUP, and a job runner's handler (submitit ignores SIGTERM and requeues on USR2), stay."""
    def runner(signum, frame):
        pass

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN), signal.signal(signal.SIGTERM, runner)
    try:
        with stop.on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is runner
            assert signal.getsignal(signal.SIGINT) is stop._handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGHUP, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_a_signal_inside_deferred_writes_is_raised_when_they_end():
    with stop.on_signals():
        with pytest.raises(stop.Stopped) as e:
            with stop.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                written = True  # not interrupted: the block ran to its end
        assert written and e.value.code == 130 and e.value.name == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)  # a second signal is not raised again: the run is already stopping
