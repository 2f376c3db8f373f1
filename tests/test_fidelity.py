"""Metrics of sample sets through torch-fidelity, with the toy feature extractor (Inception needs a download)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

from tstitch.data.imageset import Images
from tstitch.data.toy import data, features
from tstitch.errors import ConfigError
from tstitch.metrics import fidelity

EXTRACTOR = features.NAME


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test (and the commands it runs) caches reference features in its own folder, never the user's."""
    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "tstitch-cache"))


@pytest.fixture
def extractions(monkeypatch):
    """The number of sets whose features were extracted so far (a counting wrapper around the one extraction)."""
    calls = []
    extract = fidelity.features_of

    def counted(dataset, *args):
        calls.append(len(dataset))
        return extract(dataset, *args)

    monkeypatch.setattr(fidelity, "features_of", counted)
    return calls


@pytest.fixture(scope="module")
def sets(tmp_path_factory, in_process_shared):
    """A 96-sample set from tstitch-generate (the images alone: no metric, timing or grid), and the first 300 test
    images as npz, folder and statistics."""
    root = tmp_path_factory.mktemp("fidelity")
    r = in_process_shared("tstitch-generate", "num_samples=96", "batch_size=48", "solver.steps=4", "metric=none",
                          "logger=none", "timing.rounds=0", "grid_columns=0", f"hydra.run.dir={root / 'gen'}")
    assert r.returncode == 0, r.stderr[-2000:]
    x = data.load("test")[0][:300]
    nhwc = x.permute(0, 2, 3, 1).numpy()
    np.savez(root / "ref.npz", arr_0=nhwc)
    (root / "ref").mkdir()
    for i, img in enumerate(nhwc):
        Image.fromarray(img[..., 0]).save(root / "ref" / f"{i:04d}.png")
    fe = features.FashionFeatures(EXTRACTOR, ["features"])
    with torch.no_grad():
        f = fe(x)[0].numpy()
    np.savez(root / "stats.npz", mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    return root


def test_npz_is_read_through_a_memory_map(sets):
    images = fidelity.npz_member(sets / "gen" / "samples.npz", "arr_0")
    assert isinstance(images, np.memmap) and images.shape == (96, 28, 28, 1)
    with np.load(sets / "gen" / "samples.npz") as z:
        assert np.array_equal(np.asarray(images), z["arr_0"])


def test_fid_is_the_same_from_images_folder_and_statistics(sets):
    samples = sets / "gen" / "samples.npz"
    got = [fidelity.evaluate(samples, sets / ref, extractor=EXTRACTOR) for ref in ("ref.npz", "ref", "stats.npz")]
    fid = [m["fid"] for m in got]
    assert fid[0] > 0 and fid[1] == pytest.approx(fid[0], rel=1e-9) and fid[2] == pytest.approx(fid[0], rel=1e-6)
    assert [m.get("reference_cache") for m in got] == ["miss", "miss", None]  # statistics need no features


def test_all_metrics_and_their_provenance(sets):
    m = fidelity.evaluate(sets / "gen" / "samples.npz", sets / "ref.npz", metrics=["fid", "isc", "kid", "prc"],
                          extractor=EXTRACTOR, kid_subset_size=50)
    assert {"fid", "isc", "kid", "precision", "recall"} <= set(m) and 0 <= m["precision"] <= 1
    assert m["extractor"] == EXTRACTOR and m["reference"].endswith("ref.npz")
    same = fidelity.evaluate(sets / "ref.npz", sets / "ref.npz", metrics=["fid"], extractor=EXTRACTOR)
    assert abs(same["fid"]) < 1e-3
    folder_vs_own_stats = fidelity.evaluate(sets / "ref", sets / "stats.npz", metrics=["fid"], extractor=EXTRACTOR)
    assert abs(folder_vs_own_stats["fid"]) < 1e-3


def test_statistics_only_reference_cannot_give_kid(sets):
    with pytest.raises(ConfigError, match="statistics only"):
        fidelity.evaluate(sets / "gen" / "samples.npz", sets / "stats.npz", metrics=["kid"], extractor=EXTRACTOR)


def test_adm_style_reference_gives_fid_from_its_statistics_and_kid_from_its_images(sets, tmp_path):
    """ADM's reference batches hold mu/sigma and images: FID uses the former, KID the (cached) latter."""
    with np.load(sets / "ref.npz") as r, np.load(sets / "stats.npz") as s:
        np.savez(tmp_path / "adm.npz", arr_0=r["arr_0"], mu=s["mu"], sigma=s["sigma"])
    samples = sets / "gen" / "samples.npz"
    adm = fidelity.evaluate(samples, tmp_path / "adm.npz", metrics=["fid", "kid"], extractor=EXTRACTOR,
                            kid_subset_size=50, cache_root=tmp_path)
    stats = fidelity.evaluate(samples, sets / "stats.npz", extractor=EXTRACTOR, cache_root=tmp_path)
    images = fidelity.evaluate(samples, sets / "ref.npz", metrics=["kid"], extractor=EXTRACTOR, kid_subset_size=50,
                               cache_root=tmp_path)
    assert adm["fid"] == stats["fid"] and adm["kid"] == images["kid"] and adm["reference_cache"] == "miss"


def test_reference_features_are_extracted_once_then_read_from_the_cache(sets, tmp_path, extractions):
    samples, options = sets / "gen" / "samples.npz", dict(metrics=["fid", "isc", "kid", "prc"], extractor=EXTRACTOR,
                                                          kid_subset_size=50, cache_root=tmp_path / "cache")
    for ref in ("ref.npz", "ref"):
        first = fidelity.evaluate(samples, sets / ref, **options)
        assert extractions == [96, 300] and first["reference_cache"] == "miss"
        again = fidelity.evaluate(samples, sets / ref, **options)
        assert extractions == [96, 300, 96] and again.pop("reference_cache") == "hit"  # the samples only
        assert again == {k: v for k, v in first.items() if k != "reference_cache"}  # the same numbers
        extractions.clear()
    assert len(list((tmp_path / "cache").glob("reference-*.pt"))) == 2
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary files left behind
    fid_only = fidelity.evaluate(samples, sets / "ref", extractor=EXTRACTOR, cache_root=tmp_path / "cache")
    assert fid_only["reference_cache"] == "hit" and fid_only["fid"] == first["fid"]  # the same feature layer


def test_a_changed_reference_is_a_cache_miss(sets, tmp_path, extractions):
    samples, ref, folder = sets / "gen" / "samples.npz", tmp_path / "ref.npz", tmp_path / "ref"
    shutil.copy(sets / "ref.npz", ref)
    shutil.copytree(sets / "ref", folder)

    def run():
        return [fidelity.evaluate(samples, path, extractor=EXTRACTOR, cache_root=tmp_path / "cache")
                for path in (ref, folder)]

    before = run()
    assert [m["reference_cache"] for m in before + run()] == ["miss", "miss", "hit", "hit"]
    with np.load(sets / "ref.npz") as z:
        np.savez(ref, arr_0=z["arr_0"][1:])  # new content: the first image dropped, from both
    (folder / "0000.png").unlink()
    changed = run()
    assert [m["reference_cache"] for m in changed] == ["miss", "miss"]
    assert changed[0]["fid"] == pytest.approx(changed[1]["fid"], rel=1e-9) and changed[0]["fid"] != before[0]["fid"]
    os.utime(ref, ns=(0, 0))  # the same bytes, another mtime
    os.utime(folder / "0001.png", ns=(0, 0))
    touched = run()
    assert [m["reference_cache"] for m in touched] == ["miss", "miss"] and touched[0]["fid"] == changed[0]["fid"]
    assert len(extractions) == 8 + 6  # the samples every time, the reference on each of the 6 misses


def test_features_agree_with_torch_fidelity_calculate_metrics(sets, tmp_path):
    samples, ref = sets / "gen" / "samples.npz", sets / "ref.npz"
    expected = torch_fidelity.calculate_metrics(
        input1=Images(fidelity.npz_member(samples, "arr_0"), nhwc=True),
        input2=Images(fidelity.npz_member(ref, "arr_0"), nhwc=True), fid=True, isc=True, kid=True, prc=True,
        feature_extractor=EXTRACTOR, kid_subset_size=50, cuda=False, cache=False, save_cpu_ram=True, verbose=False)
    for _ in ("miss", "hit"):
        got = fidelity.evaluate(samples, ref, metrics=["fid", "isc", "kid", "prc"], extractor=EXTRACTOR,
                                kid_subset_size=50, cache_root=tmp_path)
        assert got["fid"] == pytest.approx(expected["frechet_inception_distance"], rel=1e-12)
        assert got["isc"] == pytest.approx(expected["inception_score_mean"], rel=1e-12)
        assert got["kid"] == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-12, abs=1e-15)
        assert (got["precision"], got["recall"]) == (expected["precision"], expected["recall"])


def test_reference_of_another_size_is_refused_before_any_extraction(sets, tmp_path, monkeypatch, extractions):
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    (tmp_path / "big").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "big" / "0.png")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no Inception weights here
    for ref in (tmp_path / "big.npz", tmp_path / "big"):
        for extractor in (EXTRACTOR, fidelity.INCEPTION):
            with pytest.raises(ConfigError, match=rf"^samples are 28x28x1 but reference {ref} holds 32x32x3 images; "
                                                  "give a reference at the samples' resolution$"):
                fidelity.evaluate(sets / "gen" / "samples.npz", ref, extractor=extractor, cache_root=tmp_path)
    assert extractions == [] and not list(tmp_path.glob("reference-*"))


def test_isc_needs_an_extractor_with_logits(sets, tmp_path):
    with pytest.raises(ConfigError, match="extractor vgg16 has no logits layer"):
        fidelity.evaluate(sets / "gen" / "samples.npz", sets / "ref.npz", metrics=["isc"], extractor="vgg16",
                          cache_root=tmp_path)


def test_missing_inception_weights_offline_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*_, **__):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError, match=f"put it at {tmp_path}/checkpoints/weights-inception"):
        fidelity.inception_weights()
    with pytest.raises(ConfigError, match="not found at /nope.pth"):
        fidelity.inception_weights("/nope.pth")


def test_unknown_metric_and_bad_paths(sets):
    with pytest.raises(ConfigError, match="unknown metrics"):
        fidelity.evaluate(sets / "ref.npz", sets / "ref.npz", metrics=["fd"], extractor=EXTRACTOR)
    with pytest.raises(ConfigError, match="neither an image folder nor an .npz"):
        fidelity.evaluate(sets / "nope.png", sets / "ref.npz", extractor=EXTRACTOR)
    with pytest.raises(ConfigError, match="unknown extractor fashion; choose a registered one: .*tstitch-fashion"):
        fidelity.evaluate(sets / "ref.npz", sets / "ref.npz", extractor="fashion")
    with pytest.raises(ConfigError, match="samples .*stats.npz hold no images"):
        fidelity.evaluate(sets / "stats.npz", sets / "ref.npz", extractor=EXTRACTOR)


def test_evaluate_command(sets, tmp_path, in_process):
    """In-process (the installed commands' errors run in test_reference_and_evaluate_commands_on_bad_input)."""
    r = in_process("tstitch-evaluate", f"samples={sets / 'gen' / 'samples.npz'}", f"reference={sets / 'ref.npz'}",
                   f"extractor={EXTRACTOR}", f"cache_root={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["fid"] > 0 and result["reference_cache"] == "miss"
    assert len(list((tmp_path / "cache").glob("reference-*.pt"))) == 1
    r = in_process("tstitch-evaluate", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and "give samples=PATH" in r.stderr


# --- inputs are checked before any extraction: dtype, range, layout, counts, readability ------------------------

@pytest.fixture(scope="module")
def variants(sets, tmp_path_factory):
    """The 96 generated samples stored the ways users store them."""
    root = tmp_path_factory.mktemp("variants")
    with np.load(sets / "gen" / "samples.npz") as z:
        nhwc = z["arr_0"]
    arrays = {"unit": nhwc.astype(np.float32) / 255, "float255": nhwc.astype(np.float32),
              "nchw": nhwc.transpose(0, 3, 1, 2), "nhw": nhwc[..., 0], "int16": nhwc.astype(np.int16),
              "one": nhwc[:1], "none": nhwc[:0],
              "signed": nhwc.astype(np.float32) / 127.5 - 1}
    for name, a in arrays.items():
        np.savez(root / f"{name}.npz", arr_0=a)
    (root / "empty.npz").write_bytes(b"")
    (root / "random.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    return root


def test_float_images_in_0_1_are_refused_with_the_fix_or_scaled_by_the_flag(sets, variants, extractions):
    """The issue's case: the same images as float32 in [0, 1] gave FID 1205.9 instead of 1.58."""
    for role, args in (("samples", (variants / "unit.npz", sets / "ref.npz")),
                       ("reference", (sets / "gen" / "samples.npz", variants / "unit.npz"))):
        with pytest.raises(ConfigError) as e:
            fidelity.evaluate(*args, extractor=EXTRACTOR)
        assert str(e.value) == (f"{role} {variants / 'unit.npz'}: arr_0 holds float32 values in [0, 1], i.e. images "
                                "in [0, 1], which read as [0, 255] would be all but black; save uint8 images "
                                "(np.round(x * 255).astype(np.uint8)) or pass float_range=unit to scale them")
    assert extractions == []
    uint8 = fidelity.evaluate(sets / "gen" / "samples.npz", sets / "ref.npz", extractor=EXTRACTOR)
    scaled = fidelity.evaluate(variants / "unit.npz", sets / "ref.npz", extractor=EXTRACTOR, float_range="unit")
    assert scaled["fid"] == pytest.approx(uint8["fid"], rel=1e-9)
    assert scaled["notes"] == ["samples: float32 in [0, 1] scaled to [0, 255] (float_range=unit)"]


@pytest.mark.parametrize("name,note", [("nchw", "samples: NCHW 28x28x1"), ("nhw", "samples: NHW 28x28x1"),
                                       ("float255", "samples: float32 in [0, 255] rounded to uint8"),
                                       ("int16", "samples: int16 in [0, 255] rounded to uint8")])
def test_other_layouts_and_dtypes_give_the_same_fid_and_are_said(sets, variants, name, note):
    uint8 = fidelity.evaluate(sets / "gen" / "samples.npz", sets / "ref.npz", extractor=EXTRACTOR)
    other = fidelity.evaluate(variants / f"{name}.npz", sets / "ref.npz", extractor=EXTRACTOR)
    assert other["fid"] == pytest.approx(uint8["fid"], rel=1e-9) and other["notes"] == [note]


def test_grayscale_becomes_rgb_for_inception(variants):
    from tstitch.data.imageset import open_set

    gray = open_set(variants / "nhw.npz", channels=3)
    assert gray.dataset[0].shape == (3, 28, 28) and torch.equal(gray.dataset[0][0], gray.dataset[0][2])
    assert open_set(variants / "nhw.npz").dataset[0].shape == (1, 28, 28)  # the toy extractor reads one channel


@pytest.mark.parametrize("name,message", [
    ("one", "samples hold 1 image, but FID needs a covariance: give at least 2 images"),
    ("none", "samples hold 0 images, but FID needs a covariance: give at least 2 images"),
    ("empty", "samples {} is not a readable .npz (BadZipFile: File is not a zip file)"),
    ("random", "samples {} is not a readable .npz (BadZipFile: File is not a zip file)"),
    ("signed", "samples {}: arr_0 (float32) spans [-1, 1], outside [0, 255] (it looks like model output in [-1, 1]: "
               "convert with np.clip((x + 1) * 127.5, 0, 255)); give uint8 images"),
])
def test_unusable_sample_files_are_one_line(sets, variants, extractions, name, message):
    with pytest.raises(ConfigError) as e:
        fidelity.evaluate(variants / f"{name}.npz", sets / "ref.npz", extractor=EXTRACTOR)
    assert str(e.value).startswith(message.format(variants / f"{name}.npz")), str(e.value)
    assert extractions == []


def test_images_of_the_wrong_shape_and_too_few_for_kid(sets, tmp_path):
    np.savez(tmp_path / "flat.npz", arr_0=np.zeros((10, 784), np.uint8))
    with pytest.raises(ConfigError, match=r"arr_0 has shape \(10, 784\), which is not images"):
        fidelity.evaluate(tmp_path / "flat.npz", sets / "ref.npz", extractor=EXTRACTOR)
    with pytest.raises(ConfigError, match=r"^samples hold 96 images, but KID draws subsets of kid_subset_size=1000 "
                                          r"images: give at least 1000; lower kid_subset_size \(at most 96\)"):
        fidelity.evaluate(sets / "gen" / "samples.npz", sets / "ref.npz", metrics=["kid"], extractor=EXTRACTOR)


def test_an_unreadable_image_in_a_folder_is_named(sets, tmp_path):
    folder = tmp_path / "ref"
    shutil.copytree(sets / "ref", folder)
    (folder / "0007.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=f"reference image {folder / '0007.png'} is unreadable"):
        fidelity.evaluate(sets / "gen" / "samples.npz", folder, extractor=EXTRACTOR, cache_root=tmp_path)


def test_reference_file_and_the_toy_reference_by_name(sets, tmp_path, extractions):
    """tstitch-reference's file serves FID, KID (mean and std) and precision/recall with no images, equal to the
    reference's images; the toy zoo's reference by name is the Fashion-MNIST test set."""
    from tstitch.data.imageset import open_set

    named_set = open_set("fashion-mnist-test")
    assert named_set.count == 10000 and torch.equal(named_set.dataset[7], data.load("test")[0][7])
    samples, options = sets / "gen" / "samples.npz", dict(metrics=["fid", "kid", "prc"], extractor=EXTRACTOR,
                                                          kid_subset_size=50, cache_root=tmp_path / "cache")
    from_images = fidelity.evaluate(samples, sets / "ref.npz", **options)
    ref = fidelity.make_reference(sets / "ref.npz", tmp_path / "ref.npz", extractor=EXTRACTOR)
    extractions.clear()
    from_file = fidelity.evaluate(samples, ref, **options)
    assert extractions == [96] and from_file["reference_cache"] == "file"  # the samples only
    for key in ("fid", "kid", "kid_std", "precision", "recall"):
        assert from_file[key] == pytest.approx(from_images[key], rel=1e-6)
    assert from_file["kid_std"] > 0
    with pytest.raises(ConfigError, match=f"reference {ref} holds features of extractor {EXTRACTOR}, not vgg16"):
        fidelity.evaluate(samples, ref, extractor="vgg16")


def test_reference_and_evaluate_commands_on_bad_input(sets, variants, tmp_path):
    """Through the installed commands: exit code 2 and one line, no traceback."""
    bin_dir = Path(sys.executable).parent
    r = subprocess.run([str(bin_dir / "tstitch-evaluate"), f"samples={variants / 'unit.npz'}",
                        f"reference={sets / 'ref.npz'}", f"extractor={EXTRACTOR}", f"hydra.run.dir={tmp_path / 'e'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("or pass float_range=unit to scale them")
    r = subprocess.run([str(bin_dir / "tstitch-reference"), f"source={sets / 'ref'}", f"extractor={EXTRACTOR}",
                        "metrics=[fid]", f"out={tmp_path / 'ref.npz'}", f"hydra.run.dir={tmp_path / 'r'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"wrote {tmp_path / 'ref.npz'}" in r.stdout + r.stderr, r.stderr[-2000:]
    with np.load(tmp_path / "ref.npz") as z:
        assert z["mu"].shape == (z["sigma"].shape[0],) and int(z["count"]) == 300
