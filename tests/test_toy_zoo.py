"""The shipped toy zoo is real: the large member beats the small one clearly, and guided samples are
recognisably of their class, measured by the shipped feature net on a fixed seed set."""
import pytest
import torch

import tstitch
from tstitch.data.toy import data, features
from tstitch.metrics import FashionMetric
from tstitch.models.codecs import PixelCodec

N = 200  # seeds 0..199, balanced labels, DDIM 20 steps, guidance 3 (the demo's settings)
CHUNK = 25  # seeds sampled at a time: a guided batch of 50 runs ~20% faster per image than 400 on one CPU thread


@pytest.fixture(scope="module")
def metric():
    return FashionMetric()


@pytest.fixture(scope="module")
def scores(metric):
    members = [tstitch.load("toy/small"), tstitch.load("toy/large")]
    x, y, _ = tstitch.data.seeds.draw(range(N), (1, 28, 28), 10, labels="balanced")
    out = {}
    for name, fractions in (("large", [0.0, 1.0]), ("small", [1.0, 0.0]), ("stitch40", [0.4, 0.6])):
        images = [tstitch.sample(members, x[i:i + CHUNK], y[i:i + CHUNK], fractions=fractions, solver="ddim",
                                 steps=20, guidance=3.0).x for i in range(0, N, CHUNK)]  # each image its seed's
        out[name] = metric(PixelCodec().decode(torch.cat(images)), y)
    return out


def test_feature_net_classifies_real_test_images():
    net = features.FashionFeatures(features.NAME, ["logits"]).net
    x, y = data.load("test")
    assert features.accuracy(net, x[:2000], y[:2000]) >= 0.88


# Measured when the weights were shipped (docs/toy_results.md): large FD 97.4 / 95.5%, small FD 635.0 / 50.5%,
# 40% small FD 90.4 / 94.5%. The bounds leave room for CPU kernel differences, not for a worse model.
def test_large_member_is_good_and_clearly_better_than_small(scores):
    assert scores["large"]["accuracy"] >= 0.90 and scores["large"]["fd"] <= 120, scores
    assert scores["small"]["fd"] >= 4 * scores["large"]["fd"], scores  # the issue asks for at least 1.5x
    assert scores["small"]["accuracy"] <= scores["large"]["accuracy"] - 0.3, scores


def test_stitching_40_percent_keeps_the_quality_of_the_large_member(scores):
    """T-Stitch's claim on the toy zoo: 40% of the steps on the small model cost (almost) no quality."""
    assert scores["stitch40"]["fd"] <= 1.15 * scores["large"]["fd"], scores
    assert scores["stitch40"]["accuracy"] >= 0.90, scores
