"""`tstitch-generate`: every image a function of its seed (batch size, device count, restarts), atomic shards,
resume, an ADM-style samples.npz, timing per member and against the last member alone, metric, W&B, errors; a
2-process CPU run (alone and in a multirun) prints each line once and leaves nothing beside its run directory."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tstitch.metrics import FashionMetric

EXE = str(Path(sys.executable).parent / "tstitch-generate")
COMMON = ["solver.steps=4", "stitch.fractions=[0.5,0.5]", "metric=none", "logger=none"]


def run(run_dir, *args, in_process=None):
    """`tstitch-generate` with COMMON into run_dir: the installed command in a subprocess, or given the
    ``in_process`` fixture, its function in this process (the same run without the start-up)."""
    args = [*COMMON, f"hydra.run.dir={run_dir}", *args]
    if in_process is not None:
        return in_process("tstitch-generate", *args)
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def generate(run_dir, *args, in_process=None):
    r = run(run_dir, *args, in_process=in_process)
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(run_dir / "samples.npz") as z:
        return z["arr_0"], z["arr_1"], json.loads((run_dir / "manifest.json").read_text()), run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory, in_process_shared):
    """13 seeds in batches of 4 on one process."""
    return generate(tmp_path_factory.mktemp("ref"), "num_samples=13", "batch_size=4", "png=true",
                    in_process=in_process_shared)


def test_npz_is_adm_layout_and_manifest_is_complete(reference):
    images, labels, manifest, run_dir = reference
    assert sorted(p.name for p in (run_dir / "png").iterdir()) == [f"{s:06d}.png" for s in range(13)]
    assert images.shape == (13, 28, 28, 1) and images.dtype == np.uint8 and labels.shape == (13,)
    assert manifest["nfe_per_image"] == [2, 2] and manifest["generated"] == 13 and manifest["world_size"] == 1
    assert manifest["s_per_image"] > 0 and manifest["images_per_second"] == pytest.approx(1 / manifest["s_per_image"])
    assert manifest["config"]["stitch"]["fractions"] == [0.5, 0.5] and "git" in manifest
    row = json.loads((run_dir / "results.jsonl").read_text())
    assert row["fractions"] == [0.5, 0.5] and row["nfe"] == [2, 2] and (run_dir / "grid.png").exists()


def test_timing_per_member_and_speedup_against_the_last_member_alone(reference):
    manifest = reference[2]
    per_member = manifest["s_per_image_per_member"]
    assert list(per_member) == ["toy-dit-small", "toy-dit-large"] and all(v > 0 for v in per_member.values())
    assert sum(per_member.values()) <= manifest["s_per_image"]  # member segments lie inside the sampling time
    assert sum(per_member.values()) > 0.8 * manifest["s_per_image"]
    assert per_member["toy-dit-small"] < per_member["toy-dit-large"]  # 109k vs 1.9M parameters, 2 steps each
    assert manifest["baseline_s_per_image"] > manifest["timed_s_per_image"]  # 4 large steps cost more than 2 + 2
    assert manifest["timing_rounds"] == 5 and manifest["speedup"] > 1  # interleaved rounds (conf timing.rounds)
    assert manifest["speedup_p25"] <= manifest["speedup"] <= manifest["speedup_p75"]
    assert manifest["timed_s_per_image_p25"] <= manifest["timed_s_per_image"] <= manifest["timed_s_per_image_p75"]
    assert manifest["predicted_s_per_image"] > 0 and "timing_flag" in manifest  # the cost model: both members alone
    row = json.loads((reference[3] / "results.jsonl").read_text())
    assert {k: row[k] for k in ("speedup", "speedup_p25", "speedup_p75", "s_per_image", "timing_flag")} == \
        {k: manifest[k] for k in ("speedup", "speedup_p25", "speedup_p75", "s_per_image", "timing_flag")}
    assert manifest["warmup_seconds"] > 0  # reported apart (with torch.compile, the compile time is in it)


def test_resume_generates_only_missing_seeds_and_gives_the_same_set(reference, tmp_path, in_process):
    images, labels, *_ = reference
    generate(tmp_path, "num_samples=7", "batch_size=4", in_process=in_process)
    (tmp_path / "shards" / ".000099-000100-r0.npz.123.tmp").write_bytes(b"half a shard from a killed run")
    images2, labels2, manifest, _ = generate(tmp_path, "num_samples=13", "batch_size=4", in_process=in_process)
    assert manifest["generated"] == 6 and manifest["resumed_from"] == 7
    assert not list((tmp_path / "shards").glob(".*.tmp"))  # the killed run's leftover is cleaned up
    assert np.array_equal(images2, images) and np.array_equal(labels2, labels)


DDP = ["trainer.devices=2", "trainer.strategy=ddp"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """``reference``'s 13 seeds on two DDP processes: the installed command started in an empty directory, its run
    directory the default one under outputs/ (the run, its directory, where it was started)."""
    cwd = tmp_path_factory.mktemp("two")
    r = subprocess.run([EXE, *COMMON, "num_samples=13", "batch_size=4", *DDP], capture_output=True, text=True,
                       timeout=300, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "generate").iterdir()
    return r, run_dir, cwd


def test_two_processes_give_the_same_set(reference, two_processes):
    images, labels, *_ = reference
    run_dir = two_processes[1]
    with np.load(run_dir / "samples.npz") as z:
        images2, labels2 = z["arr_0"], z["arr_1"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["s_per_image"] > 0  # reduced over both ranks
    assert manifest["speedup_p25"] <= manifest["speedup"] <= manifest["speedup_p75"]  # each rank's, averaged
    assert manifest["images_timed"] == 13  # 7 + 6: no seed padded in twice to even out the ranks
    # images/s in all is every image over the slowest rank's time: above the per-device rate (not the sum's)
    assert manifest["images_per_second"] > 1.2 / manifest["s_per_image"]
    assert np.array_equal(images2, images) and np.array_equal(labels2, labels)
    seeds = [s for p in (run_dir / "shards").glob("*.npz") for s in np.load(p)["seeds"]]
    assert sorted(seeds) == list(range(13))


def terminal(r):
    """The lines a terminal shows (progress bar and torch's CUDA note left out), each with its count."""
    lines = [line for line in (r.stdout + r.stderr).replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("generating:") and "cpp_extension" not in line]
    return Counter(lines)


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "shards" not in p.parts
                  and ".hydra" not in p.parts)


@pytest.mark.slow
def test_two_process_run_prints_each_line_once_and_leaves_only_its_run_directory(two_processes):
    r, run, cwd = two_processes
    lines = terminal(r)
    assert [line for line, n in lines.items() if n > 1] == [], lines
    assert sum("GPU available" in line for line in lines) == 1
    assert sum("Initializing distributed: GLOBAL_RANK" in line for line in lines) == 2  # one per rank
    assert [p.name for p in cwd.iterdir()] == ["outputs"]
    assert [f for f in files_under(run) if f.endswith(".log")] == ["generate.log"]  # no train_ddp_process_1.log
    assert "samples.npz" in files_under(run)
    log = (run / "generate.log").read_text()
    assert "GLOBAL_RANK: 0" in log and "GLOBAL_RANK: 1" in log  # both ranks' lines in the run's one log


@pytest.mark.slow
def test_two_process_multirun_shares_one_sweep_directory(tmp_path):
    """Lightning starts rank 1 as this command again: before, in a multirun it swept on its own, into a sweep
    directory of its own ${now} (rank 0 then waited for it in vain), and Hydra's launch lines came twice."""
    r = subprocess.run([EXE, "-m", "stitch.fractions=[0.0,1.0],[1.0,0.0]", "num_samples=4", "batch_size=2",
                        "solver.steps=2", "metric=none", "logger=none", "timing.rounds=0", *DDP], capture_output=True,
                       text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
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


def test_offloaded_members_give_the_same_set(reference, tmp_path, in_process):
    """fast=offload: Lightning moves no network; each moves itself to the device for its own steps."""
    images, labels, *_ = reference
    images2, labels2, manifest, _ = generate(tmp_path, "num_samples=13", "batch_size=4", "fast=offload",
                                             in_process=in_process)
    assert manifest["config"]["fast"]["offload"] is True
    assert np.array_equal(images2, images) and np.array_equal(labels2, labels)


def test_resume_with_other_settings_is_refused(tmp_path, in_process):
    """The refusal through the installed command: an error found inside the run exits with code 2 and one line on
    stderr (the bad-input cases below run in-process)."""
    generate(tmp_path, "num_samples=2", "batch_size=2", in_process=in_process)
    r = run(tmp_path, "num_samples=4", "guidance.scale=1.5")
    assert r.returncode == 2 and "holds samples made with other settings (differs in: batch_size, " \
        "guidance.scale)" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("tstitch-generate: error: ") and "Traceback" not in r.stderr


def test_metric_and_wandb_offline_run(tmp_path, in_process):
    """The default metric (toy FD + accuracy) scores the finished set; W&B writes an offline run in the run dir
    whose results table tstitch-report reads back."""
    from tstitch.jobs import tracking

    r = in_process("tstitch-generate", "solver.steps=4", "stitch.fractions=[0.5,0.5]", "num_samples=20",
                   "batch_size=10", "logger.mode=offline", f"hydra.run.dir={tmp_path}", env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads((tmp_path / "results.jsonl").read_text())
    expected = FashionMetric().score_file(tmp_path / "samples.npz")  # the written set and its labels, scored apart
    assert row["accuracy"] == expected["accuracy"] and row["fd"] == pytest.approx(expected["fd"], rel=1e-6)
    manifest = json.loads((tmp_path / "manifest.json").read_text())  # the last member alone vs this allocation
    assert row["speedup"] == manifest["speedup"] and row["speedup_p25"] <= row["speedup"] <= row["speedup_p75"]
    assert "tstitch-generate: 20 samples (20 new, 0 from earlier shards)" in r.stdout and "FD" not in r.stdout
    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    rows, members = tracking.read_offline(wandb_run)
    assert members == ["toy-dit-small", "toy-dit-large"] and rows[0]["fd"] == pytest.approx(row["fd"])
    assert list(wandb_run.rglob("grid_*.png"))


def test_logger_none_writes_no_wandb_files(reference):
    assert not (reference[3] / "wandb").exists()


@pytest.mark.parametrize("override,message", [
    ("num_samples=0", "num_samples=0 is not allowed: give an integer >= 1"),
    ("batch_size=-2", "batch_size=-2 is not allowed: give an integer >= 1"),
    ("metric=fid", "metric needs metric.reference: give metric.reference=... or metric=none"),
    ("metric=fid metric.reference=/nonexistent/ref.npz", "metric reference not found: /nonexistent/ref.npz"),
])
def test_bad_input_is_one_line_error(tmp_path, in_process, override, message):
    r = run(tmp_path, *override.split(), in_process=in_process)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and lines[-1].startswith("tstitch-generate: error: "), r.stderr[-1500:]
    assert message in lines[-1], r.stderr[-1500:]
    assert "Traceback" not in r.stderr and not (tmp_path / "shards").exists()


def test_torchrun_launch_gives_the_same_set_in_a_directory_named_by_the_job(reference, tmp_path):
    """torchrun starts every rank itself (Lightning reads its environment); without hydra.run.dir, the ranks
    share a directory named by the rendezvous id instead of a per-process ${now}."""
    images, labels, *_ = reference
    torchrun = str(Path(sys.executable).parent / "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "tstitch.cli.generate", *COMMON,
                        "num_samples=13", "batch_size=4", "trainer.devices=2", "trainer.strategy=ddp"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "generate").glob("torchrun-*")
    with np.load(run_dir / "samples.npz") as z:
        assert np.array_equal(z["arr_0"], images) and np.array_equal(z["arr_1"], labels)
    assert json.loads((run_dir / "manifest.json").read_text())["world_size"] == 2


def test_launched_ranks_need_a_shared_run_directory():
    from tstitch.cli.generate import launched_run_dir
    from tstitch.errors import ConfigError

    assert launched_run_dir([], {}) is None
    slurm = {"SLURM_NTASKS": "8", "SLURM_JOB_ID": "42"}
    assert launched_run_dir([], slurm) == "hydra.run.dir=outputs/generate/slurm-42"
    assert launched_run_dir(["hydra.run.dir=x"], {"SLURM_NTASKS": "8", "SLURM_JOB_ID": "42"}) is None
    with pytest.raises(ConfigError, match="give hydra.run.dir"):
        launched_run_dir([], {"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "none"})


def test_torch_fidelity_metric_on_the_finished_set(tmp_path, in_process):
    """metric=fid with the toy extractor registered in torch-fidelity, against an images npz reference."""
    from tstitch.data.toy import data

    np.savez(tmp_path / "ref.npz", arr_0=data.load("test")[0][:200].permute(0, 2, 3, 1).numpy())
    _, _, manifest, run_dir = generate(tmp_path / "run", "num_samples=20", "batch_size=10", "metric=fid",
                                       f"metric.reference={tmp_path / 'ref.npz'}", "metric.extractor=tstitch-fashion",
                                       "metric.metrics=[fid,kid]", "metric.kid_subset_size=10",
                                       f"metric.cache_root={tmp_path / 'cache'}", in_process=in_process)
    row = json.loads((run_dir / "results.jsonl").read_text())
    assert row["fid"] > 0 and "kid" in row and manifest["scores"] == {"fid": row["fid"], "kid": row["kid"],
                                                                      "kid_std": row["kid_std"]}
    assert manifest["metric"] == {"extractor": "tstitch-fashion", "weights": "default",
                                  "reference": str(tmp_path / "ref.npz"), "bootstrap": 0}


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_other_batch_sizes_agree_up_to_rounding(reference, tmp_path, in_process, batch_size):
    """Another batch shape runs other matrix kernels: the same images up to last-bit rounding, which can move a
    pixel by one grey level (the same batch size is byte-identical, see the tests above)."""
    images, labels, *_ = reference
    images2, labels2, manifest, _ = generate(tmp_path, "num_samples=13", f"batch_size={batch_size}",
                                             "timing.rounds=0", in_process=in_process)
    assert "speedup" not in manifest and "timing_rounds" not in manifest  # timing.rounds=0: no speedup timed
    diff = np.abs(images2.astype(int) - images.astype(int))
    assert np.array_equal(labels2, labels) and diff.max() <= 1 and diff.mean() < 1e-3


TINY = ["num_samples=2", "batch_size=2", "grid_columns=0"]


class FakeTime:
    """A clock (``tstitch.jobs.timing.clock_for``'s) that moves only when a member is called: ``cost`` seconds a call,
    ``slowdown`` times that once ``slow_after`` readings were taken, and ``switch`` seconds more when a sample
    changes member (an overhead the cost model does not know). Each reading starts a new sample."""

    def __init__(self, slow_after=float("inf"), slowdown=1.0, switch=0.0):
        self.now, self.reads, self.last = 0.0, 0, None
        self.slow_after, self.slowdown, self.switch = slow_after, slowdown, switch

    def __call__(self):
        self.reads, self.last = self.reads + 1, None
        return self.now

    def tick(self, k, cost):
        extra = self.switch if self.last not in (None, k) else 0.0
        self.now += (cost + extra) * (self.slowdown if self.reads >= self.slow_after else 1.0)
        self.last = k


@pytest.fixture
def fake_time(monkeypatch):
    """Members that cost 1 (small) and 3 (large) fake seconds a call on ``FakeTime``, set by the test."""
    from tstitch.jobs import build, timing
    from tstitch.models.protocols import Wrapped

    class Ticking(Wrapped):
        def __init__(self, member, k, cost):
            super().__init__(member)
            self.k, self.cost = k, cost

        def __call__(self, x, t, cond):
            clock.tick(self.k, self.cost)
            return self.member(x, t, cond)

    stitch, clock = build.stitch, FakeTime()

    def ticking(cfg, device="cpu"):
        members, codec = stitch(cfg, device)
        return [Ticking(m, k, c) for k, (m, c) in enumerate(zip(members, (1.0, 3.0)))], codec

    monkeypatch.setattr(build, "stitch", ticking)
    monkeypatch.setattr(timing, "clock_for", lambda device: clock)
    return clock


def test_speedup_is_the_true_ratio_when_the_machine_slows_down_half_way(tmp_path, in_process, fake_time):
    """2 + 2 steps cost 2 x 1 + 2 x 3 = 8 fake seconds, 4 large steps 12: the speedup is 1.5. The clock runs 3x
    slower from the middle of the timing on (3 variants x 5 rounds x 2 readings: 15); timed one after the other,
    the ratio would be 4.5 (or 0.5); interleaved, only the round in which it slowed is bent, and the median is not."""
    fake_time.slow_after, fake_time.slowdown = 15, 3.0
    r = run(tmp_path, *TINY, "timing.rounds=5", in_process=in_process)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["speedup"] == pytest.approx(1.5, rel=0.05)
    assert manifest["speedup_p25"] <= manifest["speedup"] <= manifest["speedup_p75"]
    assert "the rounds spread up to" in r.stderr and "timing.rounds=" in r.stderr  # the drift line, once
    assert r.stderr.count("warning: timing: the machine's speed changed") == 1
    assert "1.50x (" in r.stdout and "vs toy-dit-large alone, 5 interleaved rounds" in r.stdout
    r = run(tmp_path, *TINY, "timing.rounds=5", in_process=in_process)  # nothing left: the earlier timing stays
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((tmp_path / "manifest.json").read_text())
    assert again["generated"] == 0 and again["speedup"] == manifest["speedup"]
    assert again["speedup_p75"] == manifest["speedup_p75"] and again["timing_rounds"] == 5


def test_an_allocation_off_the_cost_model_is_flagged(tmp_path, in_process, fake_time):
    """Each change of member costs 5 fake seconds more, which the members alone never pay: the allocation takes
    13 against a predicted 2 x 1 + 2 x 3 = 8 (+62%), on a steady clock (no spread), so it is flagged."""
    fake_time.switch = 5.0
    r = run(tmp_path, *TINY, "timing.rounds=3", in_process=in_process)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    row = json.loads((tmp_path / "results.jsonl").read_text())
    assert manifest["speedup"] == pytest.approx(12 / 13) and manifest["speedup_p25"] == manifest["speedup_p75"]
    assert manifest["predicted_s_per_image"] == pytest.approx(8 / 2)  # fake seconds per image, batches of 2
    assert row["timing_flag"] == manifest["timing_flag"] == "+62% off the cost model"
    assert r.stderr.count("warning: timing: this allocation took") == 1
    assert "timing: +62% off the cost model" in r.stdout


def test_speedup_of_the_last_member_alone_is_one_without_timing(tmp_path, in_process, fake_time):
    _, _, manifest, _ = generate(tmp_path, *TINY, "stitch.fractions=[0,1]", in_process=in_process)
    assert manifest["speedup"] == manifest["speedup_p25"] == manifest["speedup_p75"] == 1.0
    assert fake_time.reads == 0 and "timing_rounds" not in manifest  # nothing timed in rounds


def test_summary_prints_the_speedup_with_its_spread():
    from tstitch.cli.generate import summary

    manifest = {"num_samples": 10, "generated": 10, "resumed_from": 0, "world_size": 1, "seconds": 2.0,
                "images_per_second": 5.0, "s_per_image_per_member": {"s": 0.05, "l": 0.1}, "timing_rounds": 5,
                "scores": {}, "samples": "samples.npz"}
    row = {"s_per_image": 0.2, "speedup": 1.83, "speedup_p25": 1.8, "speedup_p75": 1.86, "timing_flag": None}
    line = summary(row, ["s", "l"], manifest)
    assert "; 1.83x (1.80-1.86) vs l alone, 5 interleaved rounds;" in line and "timing:" not in line


# --- a resume's identity never hangs on identity.json; PNGs of every seed; `???` in one line ---------------------

SET = ["num_samples=4", "batch_size=2", "timing.rounds=0", "grid_columns=0"]


def _shard_bytes(run_dir):
    return {p.name: p.read_bytes() for p in sorted((run_dir / "shards").glob("*.npz"))}


@pytest.mark.parametrize("case", ["identity.json deleted", "identity.json edited", "old shards, no identity.json",
                                  "checkpoint changed, identity.json deleted"])
def test_shards_made_otherwise_are_refused_whatever_identity_json_says(tmp_path, in_process, case):
    """The issue's case: identity.json deleted, then a rerun with another solver.steps mixed 4- and 5-step images."""
    import tstitch

    ckpt = tmp_path / "large.safetensors"
    ckpt.write_bytes((Path(tstitch.__file__).parent / "data/toy/weights/dit_large.safetensors").read_bytes())
    run_dir, member = tmp_path / "run", f"stitch.members.large.checkpoint={ckpt}"
    generate(run_dir, *SET, member, in_process=in_process)
    stored = json.loads((run_dir / "identity.json").read_text())
    (run_dir / "identity.json").unlink()
    change = "solver.steps=5"
    if case == "identity.json edited":  # made to say the new settings
        stored["config"]["options"]["steps"] = 5
        (run_dir / "identity.json").write_text(json.dumps(stored))
    if case == "old shards, no identity.json":  # made before shards carried their identity
        for p in (run_dir / "shards").glob("*.npz"):
            with np.load(p) as z:
                np.savez(p, seeds=z["seeds"], labels=z["labels"], images=z["images"])
    if case.startswith("checkpoint changed"):  # found only once the checkpoints are hashed, before a file is written
        data = bytearray(ckpt.read_bytes())
        data[-1] ^= 1  # the last byte of the last tensor
        ckpt.write_bytes(bytes(data))
        change = "solver.steps=4"
    before = {**_shard_bytes(run_dir), "samples": (run_dir / "samples.npz").read_bytes()}
    r = run(run_dir, *SET, member, "num_samples=6", change, in_process=in_process)
    other = "made with other settings ({}; e.g. 000000-000001-r0.npz); rerun with the settings that made them, or"
    why = {"identity.json edited": other.format("not the settings in identity.json"),
           "old shards, no identity.json": "whose settings cannot be established (identity.json is missing and they "
                                           "carry no identity);"}.get(case, other.format("identity.json is missing"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"tstitch-generate: error: {run_dir} holds 2 shards {why} start over in a new hydra.run.dir=... (or empty "
        f"{run_dir})"), r.stderr[-2000:]
    assert {**_shard_bytes(run_dir), "samples": (run_dir / "samples.npz").read_bytes()} == before
    if case == "identity.json deleted":  # the settings that made them resume, and identity.json is written again
        _, _, manifest, _ = generate(run_dir, *SET, member, "num_samples=6", in_process=in_process)
        assert manifest["resumed_from"] == 4 and (run_dir / "identity.json").exists()


def test_a_resume_with_png_writes_the_pngs_of_every_seed(tmp_path, in_process):
    from PIL import Image

    generate(tmp_path, *SET, in_process=in_process)  # png=false
    images, *_ = generate(tmp_path, *SET, "num_samples=6", "png=true", in_process=in_process)
    pngs = sorted((tmp_path / "png").iterdir())
    assert [p.name for p in pngs] == [f"{s:06d}.png" for s in range(6)]
    assert all(np.array_equal(np.array(Image.open(p)), images[i, ..., 0]) for i, p in enumerate(pngs))


@pytest.mark.parametrize("command,args,message", [
    ("tstitch-generate", ["seed=???"], "seed=??? leaves seed without a value: give seed=VALUE, or leave the override "
                                       "out for its default"),
    ("tstitch-generate", ["-m", "solver.steps=4,???"], "solver.steps=??? leaves solver.steps without a value"),
    ("tstitch", ["+debug=tiny", "guidance.scale=???"], "guidance.scale=??? leaves guidance.scale without a value"),
    ("tstitch-evaluate", ["batch_size=???"], "batch_size=??? leaves batch_size without a value"),
    ("tstitch-train", ["seed=???"], "seed has no value (???): give seed=VALUE on the command line"),
    ("tstitch-generate", ["prompts=file"], "prompts.path has no value (???): give prompts.path=VALUE on the command "
                                           "line"),
])
def test_a_missing_value_is_one_line(tmp_path, in_process, command, args, message):
    r = in_process(command, *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'multi'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith(f"{command}: error: {message}"), r.stderr[-2000:]
    assert not (tmp_path / "multi").exists() and not (tmp_path / "run" / "shards").exists()
