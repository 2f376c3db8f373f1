"""The catalogue of issue 22's cases (and their siblings): each is a call or a command with the one line it must be
refused with (an exact substring) or the right result it must give; commands also leave nothing half-written.

Sections: the Python API (sample, load, pipeline, seeds), float ranges and the reference cache, image folders,
tstitch-reference's output path, tstitch-report on unfinished multiruns and malformed rows."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tstitch
from tstitch.data import seeds
from tstitch.data.toy import data, features
from tstitch.errors import ConfigError
from tstitch.metrics import fidelity
from tstitch.models.zoo import entry

EXTRACTOR = features.NAME
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# --- the Python API ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api():
    """Two toy members, a batch of two seeds, and a pipeline of the same members."""
    small, large = tstitch.load("toy/small"), tstitch.load("toy/large")
    x, y, _ = tstitch.data.seeds.draw(range(2), small.space.shape, num_classes=10)
    return {"members": [small, large], "x": x, "y": y, "pipe": tstitch.pipeline([small, large], codec="pixels",
                                                                               steps=2)}


def sample(a, **kwargs):
    return tstitch.sample(a["members"], a["x"], a["y"], **{"fractions": [0.5, 0.5], "steps": 2, **kwargs})


def with_entry(**changes):
    """The toy/large zoo entry with ``changes`` (dotted keys)."""
    e = entry("toy/large")
    for key, value in changes.items():
        *parents, last = key.split(".")
        d = e
        for p in parents:
            d = d[p]
        d[last] = value
    return e


def nan_noise(x):
    return torch.full_like(x, float("nan"))


BIG = 2 ** 70
API_REFUSED = [  # (id, call, the one line's substring[, marks])
    ("eta-nan", lambda a: sample(a, eta=float("nan")), "eta=nan is not allowed: give a number in [0, 1]"),
    ("eta-inf", lambda a: sample(a, eta=float("inf")), "eta=inf is not allowed: give a number in [0, 1]"),
    ("eta-negative", lambda a: sample(a, eta=-1.0), "eta=-1.0 is not allowed: give a number in [0, 1]"),
    ("eta-above-1", lambda a: sample(a, eta=1.5), "eta=1.5 is not allowed: give a number in [0, 1]"),
    ("eta-text", lambda a: sample(a, eta="a"), "eta='a' is not allowed"),
    ("eta-scheduler-nan", lambda a: sample(a, solver="diffusers", scheduler="DDIMScheduler", eta=float("nan")),
     "eta=nan is not allowed"),
    ("randn-nan-ddim", lambda a: sample(a, eta=1.0, randn_like=nan_noise), "randn_like returned NaN or inf; give"),
    ("randn-nan-ddpm", lambda a: sample(a, solver="ddpm", randn_like=nan_noise), "randn_like returned NaN or inf"),
    ("randn-inf", lambda a: sample(a, eta=1.0, randn_like=lambda x: torch.full_like(x, float("inf"))),
     "randn_like returned NaN or inf"),
    ("randn-scalar", lambda a: sample(a, eta=1.0, randn_like=lambda x: torch.zeros(())),
     "randn_like returned () for samples of shape (2, 1, 28, 28)"),
    ("channels-0", lambda a: sample(a, guidance=2.0, channels=0),
     "channels=0 is not allowed: give an int in [1, 1]"),
    ("channels-negative", lambda a: sample(a, guidance=2.0, channels=-1), "channels=-1 is not allowed"),
    ("channels-too-many", lambda a: sample(a, guidance=2.0, channels=5), "channels=5 is not allowed"),
    ("channels-float", lambda a: sample(a, guidance=2.0, channels=2.5), "channels=2.5 is not allowed"),
    ("channels-bool", lambda a: sample(a, guidance=2.0, channels=True), "channels=True is not allowed"),
    ("entry-cfg-channels-0", lambda a: tstitch.load(with_entry(cfg_channels=0)),
     "toy-dit-large.cfg_channels=0 is not allowed: give an integer >= 1"),
    ("entry-cfg-channels-too-many", lambda a: tstitch.load(with_entry(cfg_channels=3)),
     "toy-dit-large.cfg_channels=3 is not allowed: its samples have 1 channels"),
    ("entry-net-channels-0", lambda a: tstitch.load(with_entry(**{"net.in_channels": 0, "checkpoint": None})),
     "toy-dit-large.net.in_channels=0 is not allowed: its samples (space.shape [1, 28, 28]) have 1 channels"),
    ("entry-space-channels-0", lambda a: tstitch.load(with_entry(**{"space.shape": [0, 28, 28]})),
     "toy-dit-large.space.shape[0]=0 is not allowed: give an integer >= 1"),
    ("entry-schedule", lambda a: tstitch.load(with_entry(**{"schedule.name": "cosine2"})),
     "toy-dit-large.schedule: unknown noise schedule 'cosine2'"),
    ("steps-float", lambda a: sample(a, steps=2.5), "steps=2.5 is not allowed: give an int >= 1"),
    ("steps-whole-float", lambda a: sample(a, steps=2.0), "steps=2.0 is not allowed: give an int >= 1"),
    ("steps-nan", lambda a: sample(a, steps=float("nan")), "steps=nan is not allowed"),
    ("steps-bool", lambda a: sample(a, steps=True), "steps=True is not allowed"),
    ("steps-negative", lambda a: sample(a, steps=-1), "steps=-1: cannot divide a section of 1000 timesteps"),
    ("steps-dpm-solver-float", lambda a: sample(a, solver="dpm_solver", steps=2.5), "steps=2.5 is not allowed"),
    ("pipeline-steps-0", lambda a: tstitch.pipeline(["toy/small", "toy/large"], steps=0),
     "steps=0: cannot divide a section of 1000 timesteps into 0 steps"),
    ("pipeline-steps-negative", lambda a: tstitch.pipeline(["toy/large"], steps=-1), "steps=-1: cannot divide"),
    ("pipeline-solver-empty", lambda a: tstitch.pipeline(["toy/large"], solver=""), "unknown solver ''"),
    ("pipe-call-steps-0", lambda a: a["pipe"]([1], steps=0), "steps=0: cannot divide"),
    ("sample-unknown-keyword", lambda a: sample(a, foo=1),
     "unknown keyword argument 'foo': tstitch.sample takes fractions, solver, steps, guidance, channels, rule, "
     "randn_like, callback, and solver ddim takes eta"),
    ("sample-misspelt-keyword", lambda a: sample(a, gudiance=2.0), "unknown keyword argument 'gudiance': did you "
                                                                   "mean guidance?"),
    ("sample-option-of-another-solver", lambda a: sample(a, variance="small"),
     "unknown keyword argument 'variance'"),
    ("load-unknown-keyword", lambda a: tstitch.load("toy/large", foo=1),
     "tstitch.load got an unknown keyword argument 'foo'; it takes checkpoint, device, dtype"),
    ("load-dtype-text", lambda a: tstitch.load("toy/large", dtype="bf16"), "dtype='bf16' is not allowed"),
    ("load-not-a-name", lambda a: tstitch.load(3), "give a zoo name such as 'toy/large' or a zoo entry dict"),
    ("pipeline-unknown-keyword", lambda a: tstitch.pipeline(["toy/large"], foo=1),
     "unknown keyword argument 'foo'"),
    ("pipe-call-unknown-keyword", lambda a: a["pipe"]([1], foo=1), "unknown keyword argument 'foo'"),
    ("members-not-members", lambda a: tstitch.sample([1, 2], a["x"], a["y"]),
     "members must be loaded members (tstitch.load(...)), zoo names such as 'toy/large' or zoo entry dicts, not int"),
    ("members-unknown-name", lambda a: tstitch.sample(["toy/tiny"], a["x"], a["y"]), "unknown zoo entry 'toy/tiny'"),
    ("members-none", lambda a: tstitch.sample([], a["x"], a["y"]), "give one or more members"),
    ("load-cuda", lambda a: tstitch.load("toy/large", device="cuda"),
     "device='cuda', but torch sees 0 CUDA GPUs on this machine; use device='cpu'", NO_CUDA),
    ("load-cuda-1", lambda a: tstitch.load("toy/large", device="cuda:1"), "device='cuda:1', but torch sees 0 CUDA GPUs",
     NO_CUDA),
    ("pipeline-cuda", lambda a: tstitch.pipeline(["toy/large"], device="cuda"),
     "device='cuda', but torch sees 0 CUDA GPUs", NO_CUDA),
    ("load-no-such-device", lambda a: tstitch.load("toy/large", device="tpu"),
     "device='tpu' is not a torch device; give 'cpu', 'cuda' or 'cuda:N'"),
    ("pipe-no-prompts", lambda a: a["pipe"]([]), "no prompts or class indices given; give one or more"),
    ("pipe-none", lambda a: a["pipe"](None), "conditions must be prompts or class indices"),
    ("pipe-seed-2**70", lambda a: a["pipe"]([1], seeds=[BIG]),
     f"seed {BIG} is not allowed: give integers in [0, 2**64 - 1]"),
    ("pipe-seed-negative", lambda a: a["pipe"]([1], seeds=[-1]), "seed -1 is not allowed"),
    ("pipe-seed-float", lambda a: a["pipe"]([1], seeds=[1.5]), "seed 1.5 is not allowed"),
    ("draw-seed-2**70", lambda a: seeds.draw([BIG], (1, 28, 28), 10), f"seed {BIG} is not allowed"),
    ("draw-seed-2**64", lambda a: seeds.draw([2 ** 64], (1, 28, 28), 10), f"seed {2 ** 64} is not allowed"),
    ("draw-seed-negative", lambda a: seeds.draw([-1], (1, 28, 28), 10), "seed -1 is not allowed"),
    ("draw-seed-float", lambda a: seeds.draw([1.5], (1, 28, 28), 10), "seed 1.5 is not allowed"),
    ("draw-seed-bool", lambda a: seeds.draw([True], (1, 28, 28), 10), "seed True is not allowed"),
    ("draw-seed-int", lambda a: seeds.draw(5, (1, 28, 28), 10), "seeds must be a list of ints, not int"),
    ("draw-no-seeds", lambda a: seeds.draw([], (1, 28, 28), 10), "no seeds given; give one or more"),
]


@pytest.mark.parametrize("case,call,message", [pytest.param(*c[:3], id=c[0], marks=c[3:]) for c in API_REFUSED])
def test_api_refuses_in_one_line(api, case, call, message):
    with pytest.raises(ConfigError) as e:
        call(api)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_members_as_zoo_names_are_loaded_and_give_the_loaded_members_result(api):
    by_name = tstitch.sample(["toy/small", "toy/large"], api["x"], api["y"], fractions=[0.5, 0.5], steps=2)
    assert torch.equal(by_name.x, sample(api).x) and by_name.nfe == [1, 1]
    alone = tstitch.sample("toy/large", api["x"], api["y"], steps=2)  # one name alone is one member
    assert torch.equal(alone.x, tstitch.sample(api["members"][1:], api["x"], api["y"], steps=2).x)
    assert tstitch.pipeline("toy/large", steps=2)([3])[0].size == (28, 28)


def test_whole_numbers_of_other_types_and_edge_values_give_the_right_result(api):
    assert torch.equal(sample(api, steps=np.int64(2)).x, sample(api).x)
    assert torch.equal(sample(api, eta=0).x, sample(api).x)  # an int eta
    x, _, _ = tstitch.data.seeds.draw([2 ** 64 - 1, np.int64(3), torch.tensor(3)], (1, 28, 28), 10)
    assert torch.equal(x[1], x[2]) and torch.isfinite(x).all()
    pipe = tstitch.pipeline(["toy/large"], steps=None)
    assert pipe.options["steps"] == 100  # None, not 0, means the family's own
    rng = tstitch.data.seeds.SeedNoise([0, 1])
    assert torch.isfinite(sample(api, eta=1.0, randn_like=rng.randn_like).x).all()  # the per-seed source stays
    assert torch.isfinite(sample(api, eta=1.0, randn_like=lambda x: torch.randn_like(x)).x).all()


# --- float ranges and the reference cache ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """40 test images as uint8 samples, and 40 others as a uint8 reference and as float32 in [0, 1]."""
    root = tmp_path_factory.mktemp("catalogue")
    x = data.load("test")[0][:80].permute(0, 2, 3, 1).numpy()  # uint8 NHWC
    np.savez(root / "samples.npz", arr_0=x[:40])
    np.savez(root / "ref.npz", arr_0=x[40:])
    np.savez(root / "ref_unit.npz", arr_0=x[40:].astype(np.float32) / 255)
    return root


def evaluate(samples, reference, **kwargs):
    return fidelity.evaluate(samples, reference, extractor=EXTRACTOR, **kwargs)


def saved(path, array):
    np.savez(path, arr_0=array)
    return path


def test_the_reference_cache_key_holds_the_float_range(sets, tmp_path):
    """The issue's case: a reference read with float_range=unit was cached, and the same file read with
    float_range=byte hit that entry (a stale reference: FID 1394)."""
    cache = tmp_path / "cache"
    unit = evaluate(sets / "samples.npz", sets / "ref_unit.npz", float_range="unit", cache_root=cache)
    byte = evaluate(sets / "samples.npz", sets / "ref_unit.npz", float_range="byte", cache_root=cache)
    fresh = evaluate(sets / "samples.npz", sets / "ref_unit.npz", float_range="byte", cache_root=tmp_path / "fresh")
    assert (unit["reference_cache"], byte["reference_cache"]) == ("miss", "miss")
    assert byte["fid"] == fresh["fid"] and byte["fid"] > 2 * unit["fid"]  # read as [0, 255]: all but black
    assert unit["fid"] == pytest.approx(evaluate(sets / "samples.npz", sets / "ref.npz")["fid"], rel=1e-9)
    again = evaluate(sets / "samples.npz", sets / "ref_unit.npz", float_range="unit", cache_root=cache)
    assert again["reference_cache"] == "hit" and again["fid"] == unit["fid"]


FLOAT_REFUSED = [  # (id, values from the uint8 samples x, float_range, the one line's substring)
    ("max-1.02", lambda x: x / 255 * 1.02, "auto", "values in [0, 1.02]: images in [0, 1] a little past 1, or very "
                                                   "dark images in [0, 255]; say which: float_range=unit"),
    ("max-1.5", lambda x: x / 255 * 1.5, "auto", "values in [0, 1.5]: images in [0, 1] a little past 1"),
    ("max-2", lambda x: x / 255 * 1.99 + 0.01, "auto", "a little past 1, or very dark images in [0, 255]"),
    ("min-below-0", lambda x: x / 255 * 1.04 - 0.02, "auto",
     "outside [0, 255] (images in [0, 1] a little outside it? float_range=unit clips and scales them)"),
    ("max-1", lambda x: x / 255, "auto", "i.e. images in [0, 1], which read as [0, 255] would be all but black"),
    ("unit-of-bytes", lambda x: x * 1.0, "unit", "float_range=unit but arr_0 spans [0, 255], far from [0, 1]"),
    ("unit-of-signed", lambda x: x / 127.5 - 1, "unit", "float_range=unit but arr_0 spans [-1, 1], far from [0, 1]"),
]


@pytest.mark.parametrize("case,values,float_range,message", FLOAT_REFUSED, ids=[c[0] for c in FLOAT_REFUSED])
def test_ambiguous_float_ranges_are_refused_naming_the_fix(sets, tmp_path, case, values, float_range, message):
    with np.load(sets / "samples.npz") as z:
        path = saved(tmp_path / "s.npz", values(z["arr_0"].astype(np.float32)))
    with pytest.raises(ConfigError) as e:
        evaluate(path, sets / "ref.npz", float_range=float_range)
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("case,values,float_range,note", [
    ("unit-past-1-clipped", lambda x: np.where(x == 255, 1.02, x / 255), "unit",
     "samples: float32 in [0, 1.02] clipped to [0, 1] scaled to [0, 255] (float_range=unit)"),
    ("byte-said", lambda x: x / 255 * 1.02, "byte", "samples: float32 in [0, 255] rounded to uint8"),
    ("whole-floats-max-2", lambda x: np.minimum(x, 2), "auto", "samples: float32 in [0, 255] rounded to uint8"),
    ("max-above-2", lambda x: x * 1.0, "auto", "samples: float32 in [0, 255] rounded to uint8"),
])
def test_float_ranges_that_say_what_they_are_give_the_uint8_result(sets, tmp_path, case, values, float_range, note):
    with np.load(sets / "samples.npz") as z:
        x = z["arr_0"].astype(np.float32)
    path = saved(tmp_path / "s.npz", values(x))
    expected = np.clip(np.round(values(x) * (255 if float_range == "unit" else 1)), 0, 255).astype(np.uint8)
    got = evaluate(path, sets / "ref.npz", float_range=float_range)
    assert got["fid"] == pytest.approx(evaluate(saved(tmp_path / "u.npz", expected), sets / "ref.npz")["fid"], rel=1e-9)
    assert got["notes"] == [note]


# --- image folders: RGBA, palette, grayscale + alpha, 16-bit ---------------------------------------------------------

MODES = {  # mode -> (the PIL image of uint8 RGB pixels in that mode, the same image as read: 8-bit RGB)
    "RGBA": lambda a: Image.fromarray(a).convert("RGBA"),
    "P": lambda a: Image.fromarray(a).convert("P"),
    "LA": lambda a: Image.fromarray(a).convert("LA"),
    "P-transparent": lambda a: Image.fromarray(a).convert("P"),
    "I;16": lambda a: Image.fromarray(np.asarray(Image.fromarray(a).convert("L")).astype(np.uint16) * 257),
    "1": lambda a: Image.fromarray(a).convert("1"),
}


def folder(path, images, mode):
    path.mkdir()
    for i, a in enumerate(images):
        extra = {"transparency": 0} if mode == "P-transparent" else {}
        MODES[mode](a).save(path / f"{i:03d}.png", **extra)
    return path


@pytest.mark.parametrize("mode,note", [
    ("RGBA", "40 RGBA (alpha dropped)"), ("P", "40 P (palette expanded)"), ("LA", "40 LA (alpha dropped)"),
    ("P-transparent", "40 P (palette expanded)"), ("I;16", "40 I;16 (16-bit scaled to 8)"), ("1", "40 1 (bilevel)"),
])
def test_image_folders_of_other_modes_are_converted_to_rgb_with_a_note(sets, tmp_path, in_process, mode, note):
    with np.load(sets / "samples.npz") as z:
        rgb = np.repeat(z["arr_0"], 3, axis=3)
    mine = folder(tmp_path / "mine", rgb, mode)
    as_read = (tmp_path / "rgb")
    as_read.mkdir()
    for i, a in enumerate(rgb):
        img = Image.fromarray(a).convert("L") if mode == "I;16" else MODES[mode](a)  # 16 bits: its 8-bit source
        img.convert("RGB").save(as_read / f"{i:03d}.png")
    r = in_process("tstitch-evaluate", f"samples={mine}", f"reference={sets / 'ref.npz'}", f"extractor={EXTRACTOR}",
                   f"cache_root={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"tstitch-evaluate: read samples: images converted to RGB as torch-fidelity reads them: {note}" in r.stdout
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["fid"] == pytest.approx(evaluate(as_read, sets / "ref.npz")["fid"], rel=1e-9)


# --- tstitch-reference out= ----------------------------------------------------------------------------------------

def test_reference_out_that_cannot_be_written_is_one_line_before_anything(sets, tmp_path, in_process):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("a file")
    cases = [(tmp_path / "dir", f"out={tmp_path / 'dir'} is a directory; give a file to write, e.g. "
                                f"out={tmp_path / 'dir' / 'reference.npz'}"),
             (tmp_path / "ref.txt", f"out={tmp_path / 'ref.txt'} does not end in .npz; give a .npz path"),
             (tmp_path / "file" / "ref.npz", f"({tmp_path / 'file'} is a file); choose another out=..."),
             (Path("/sys/tstitch-catalogue.npz"), "out=/sys/tstitch-catalogue.npz cannot be written (no file can be "
                                                  "made in /sys")]
    if os.geteuid() != 0:  # root writes into a folder without write permission: only a mount can stop it
        (tmp_path / "ro").mkdir(mode=0o555)
        cases.append((tmp_path / "ro" / "ref.npz", f"cannot be written (no file can be made in {tmp_path / 'ro'}"))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for out, message in cases:
        r = in_process("tstitch-reference", f"source={sets / 'ref.npz'}", f"extractor={EXTRACTOR}", f"out={out}",
                       f"hydra.run.dir={tmp_path / 'run'}")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr[-2000:]
        assert lines[0].startswith("tstitch-reference: error: ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no run directory, no temporary file
    with pytest.raises(ConfigError, match="is a directory"):  # the API refuses it too, before reading any image
        fidelity.make_reference(sets / "ref.npz", tmp_path / "dir", extractor=EXTRACTOR)


# --- tstitch-report: unfinished multirun jobs and malformed rows ------------------------------------------------------

@pytest.fixture(scope="module")
def multirun(tmp_path_factory, in_process_shared):
    """A finished two-job multirun (jobs 0 and 1), made once."""
    root = tmp_path_factory.mktemp("multirun")
    r = in_process_shared("tstitch", "-m", "+debug=tiny", "sweep=null", "metric=none", "timing.rounds=1",
                          "stitch.fractions=[1.0,0.0],[0.0,1.0]", f"hydra.sweep.dir={root}")
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def report(in_process, tmp_path, multirun, change):
    sweep = tmp_path / "sweep"
    shutil.copytree(multirun, sweep)
    change(sweep)
    return sweep, in_process("tstitch-report", f"runs={sweep}", f"out={tmp_path / 'report'}")


@pytest.mark.parametrize("case,change,line", [
    ("job-not-started", lambda s: shutil.rmtree(s / "1"),
     "tstitch-report: missing {s}: job 1 of 2 (stitch.fractions=[0.0,1.0]) has no results.jsonl (not finished, or "
     "failed); wait for it, or run that job again"),
    ("job-not-finished", lambda s: (s / "1" / "results.jsonl").unlink(),
     "tstitch-report: missing {s}: job 1 of 2 (stitch.fractions=[0.0,1.0]) has no results.jsonl in {s}/1 (not "
     "finished, or failed)"),
    ("first-job-not-finished", lambda s: (s / "0" / "results.jsonl").unlink(),
     "tstitch-report: missing {s}: job 0 of 2 (stitch.fractions=[1.0,0.0]) has no results.jsonl in {s}/0"),
    ("multirun-yaml-damaged", lambda s: (s / "multirun.yaml").write_text("hydra: [\n"),
     "tstitch-report: missing {s}/multirun.yaml: cannot tell which jobs the multirun has"),
])
def test_a_multirun_with_a_missing_job_names_it_and_exits_1(multirun, tmp_path, in_process, case, change, line):
    sweep, r = report(in_process, tmp_path, multirun, change)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(line.format(s=sweep)), r.stderr
    assert "1 allocations from 1 runs (1 missing)" in r.stdout or case == "multirun-yaml-damaged"
    (missing,) = json.loads((tmp_path / "report" / "report.json").read_text())["missing"]
    assert r.stderr.strip() == f"tstitch-report: missing {missing}"


def test_a_finished_multirun_reports_with_exit_0(multirun, tmp_path, in_process):
    sweep, r = report(in_process, tmp_path, multirun, lambda s: None)
    assert r.returncode == 0 and r.stderr.strip() == "" and "2 allocations from 2 runs;" in r.stdout


@pytest.mark.parametrize("row,why", [
    ({"fractions": ["a", 1.0]}, 'fractions ["a", 1.0] are not numbers in [0, 1]'),
    ({"fractions": [None, 1.0]}, "fractions [null, 1.0] are not numbers in [0, 1]"),
    ({"fractions": []}, "fractions [] are not numbers in [0, 1]"),
    ({"fractions": [1.5, -0.5]}, "fractions [1.5, -0.5] are not numbers in [0, 1]"),
    ({"fractions": "0 : 1"}, "no fractions"),
    ([0, 1], "no fractions"),
    ({"fractions": [0.0, 1.0, 0.0]}, "has 3 fractions for the run's 2 members"),
    ({"fractions": [0.0, 1.0], "s_per_image": "fast"}, 's_per_image is "fast", not a finite number'),
    ({"fractions": [0.0, 1.0], "speedup": "x"}, 'speedup is "x", not a finite number'),
    ({"fractions": [0.0, 1.0], "fd": "x"}, 'fd is "x", not a finite number'),
    ({"fractions": [0.0, 1.0], "nfe": 5}, "nfe is 5, not a list of numbers"),
    ({"fractions": [0.0, 1.0], "setting": 3}, "setting is 3, not text"),
    ({"fractions": [0.0, 1.0], "s_per_image": True}, "s_per_image is true, not a finite number"),
])
def test_a_malformed_results_row_is_skipped_with_one_line(multirun, tmp_path, in_process, row, why):
    text = json.dumps(row) + "\n"
    sweep, r = report(in_process, tmp_path, multirun, lambda s: (s / "1" / "results.jsonl").write_text(text))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().startswith(f"tstitch-report: skipped {sweep / '1' / 'results.jsonl'} line 1 ")
    assert why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "1 allocations from 1 runs (1 skipped)" in r.stdout
