"""Self-describing metrics (tstitch/metrics/): each declares its values (label, format, direction), which the
table, plots, search and summaries read; the paired metric is the example of adding one (one module, one yaml)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import tstitch
from tstitch import metrics
from tstitch.errors import ConfigError
from tstitch.jobs import report
from tstitch.models.codecs import load_codec
from tstitch.searchpath import CONF

BIN = Path(sys.executable).parent


def test_every_metric_declares_its_values_and_the_report_reads_them():
    values = metrics.values()
    assert {"fd", "accuracy", "fid", "isc", "kid", "kid_std", "precision", "recall", "clip_score",
            "paired"} <= set(values)
    assert [k for k, _ in report.columns()][-1] == "paper" and ("paired", "paired distance") in report.columns()
    assert report.fmt("accuracy", 0.944) == "94.4%" and report.fmt("kid", 0.012345) == "0.0123"
    assert report.axis("fd") == "FD (lower is better)" and report.axis("isc") == "IS (higher is better)"
    assert values["accuracy"].maximize and not values["fid"].maximize and not values["kid_std"].plot
    for path in sorted((Path(CONF) / "metric").glob("*.yaml")):  # every yaml names a metric class of the package
        target = OmegaConf.load(path).get("_target_")
        assert target is None or target.startswith("tstitch.metrics."), path


def test_paired_metric_in_the_sweep_is_the_distance_to_the_last_member_alone(tmp_path, in_process):
    r = in_process("tstitch", "+debug=tiny", "metric=paired", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [row["fractions"] for row in rows] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert rows[0]["paired"] == 0.0 and rows[1]["paired"] > 0 and rows[2]["paired"] > 0
    assert "paired distance" in (tmp_path / "results.md").read_text().splitlines()[0]
    # the stitched row recomputed from the API: the RMS difference (in [0, 1]) of each seed's pair, averaged
    members = [tstitch.load("toy/small"), tstitch.load("toy/large")]
    codec = load_codec("pixels", members[-1].space)
    x, y, rng = tstitch.data.seeds.draw(range(8), (1, 28, 28), 10, labels="balanced")
    images = {}
    for f in ([0.5, 0.5], [0.0, 1.0]):
        parts = []
        for s in (slice(0, 4), slice(4, 8)):
            out = tstitch.sample(members, x[s], y[s], fractions=f, steps=3, guidance=3.0, randn_like=rng[s].randn_like)
            parts.append(codec.decode(out.x))
        images[f[0]] = torch.cat(parts).flatten(1).double() / 255
    rms = ((images[0.5] - images[0.0]) ** 2).mean(1).sqrt().mean()
    assert rows[1]["paired"] == pytest.approx(float(rms), rel=1e-9)


def test_paired_metric_on_files_and_in_feature_space(tmp_path):
    from tstitch.metrics.paired import PairedMetric

    rng = np.random.default_rng(0)
    alone = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    other = np.clip(alone.astype(int) + 51, 0, 255).astype(np.uint8)
    np.savez(tmp_path / "alone.npz", arr_0=alone, arr_1=np.arange(6))
    np.savez(tmp_path / "other.npz", arr_0=other, arr_1=np.arange(6))
    expected = np.sqrt(((other.astype(float) - alone) / 255) ** 2).reshape(6, -1)
    got = PairedMetric(reference=str(tmp_path / "alone.npz")).score_file(tmp_path / "other.npz")["paired"]
    assert got == pytest.approx(float(np.sqrt((expected ** 2).mean(1)).mean()), rel=1e-9)
    same = PairedMetric(space="features", extractor="tstitch-fashion", reference=str(tmp_path / "alone.npz"))
    assert same.score_file(tmp_path / "alone.npz")["paired"] == 0.0
    assert same.score_file(tmp_path / "other.npz")["paired"] > 0
    np.savez(tmp_path / "shuffled.npz", arr_0=other, arr_1=np.arange(6)[::-1])
    with pytest.raises(ConfigError, match="is not the same seeds as"):
        PairedMetric(reference=str(tmp_path / "alone.npz")).score_file(tmp_path / "shuffled.npz")


def test_generate_with_a_paired_metric_needs_its_reference_before_sampling(tmp_path, in_process):
    r = in_process("tstitch-generate", "metric=paired", "num_samples=4", "batch_size=2", "solver.steps=2",
                   "logger=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "tstitch-generate: error: metric=paired scores a sample set against the last member alone on the same "
        "seeds: give metric.reference=<that run's samples.npz>")
    assert not (tmp_path / "shards").exists()


def test_search_takes_the_objectives_direction_from_the_metric():
    from types import SimpleNamespace

    from tstitch.jobs.search import direction

    assert direction(SimpleNamespace(maximize=None, objective="accuracy")) is True
    assert direction(SimpleNamespace(maximize=None, objective="fd")) is False
    assert direction(SimpleNamespace(maximize=False, objective="accuracy")) is False  # given, it wins
