"""tstitch.pipeline: load, sample and decode in one call; each image is the one the API and tstitch-generate give
for its seed and condition (the Stable Diffusion case against diffusers' own pipeline is in test_sd.py)."""
import numpy as np
import pytest

import tstitch
from tstitch.errors import ConfigError
from tstitch.models.codecs import load_codec


@pytest.fixture(scope="module")
def toy():
    return tstitch.pipeline(["toy/small", "toy/large"], [0.4, 0.6], steps=10, guidance=3.0)


def test_images_are_the_apis_for_each_seed_and_label(toy):
    x, y, rng = tstitch.data.seeds.draw([5, 9], (1, 28, 28), num_classes=10)  # labels drawn from the seeds
    images = toy([int(v) for v in y], seeds=[5, 9])
    expected = tstitch.sample(toy.members, x, y, fractions=[0.4, 0.6], steps=10, guidance=3.0,
                              randn_like=rng.randn_like).x
    pixels = load_codec("pixels", toy.members[-1].space).decode(expected)[:, 0].numpy()
    assert [img.size for img in images] == [(28, 28)] * 2 and images[0].mode == "L"
    assert np.array_equal(np.stack([np.asarray(img) for img in images]), pixels)
    assert toy.result.nfe == [4, 6]


def test_a_seeds_image_is_the_same_alone_or_in_a_batch_and_calls_override_defaults(toy):
    both = toy([1, 2], seeds=[3, 4])
    alone = toy([2], seeds=[4])
    assert np.array_equal(np.asarray(both[1]), np.asarray(alone[0]))
    toy([1], seeds=[3], fractions=[0.0, 1.0])
    assert toy.result.nfe == [0, 10]


def test_family_defaults_and_bad_input():
    pipe = tstitch.pipeline(["toy/large"])
    assert (pipe.options["solver"], pipe.options["steps"], pipe.options["guidance"]) == ("ddim", 100, 1.5)
    with pytest.raises(ConfigError, match=r"class-conditional members take class indices in \[0, 10\)"):
        pipe(["a cat"])
    with pytest.raises(ConfigError, match="2 conditions for 1 seeds"):
        pipe([1, 2], seeds=[0])
    with pytest.raises(ConfigError, match="the last member was given loaded: give its decoder too"):
        tstitch.pipeline([tstitch.load("toy/large")])
    with pytest.raises(ConfigError, match="unknown solver 'euler'"):
        tstitch.pipeline(["toy/large"], solver="euler")
    loaded = tstitch.pipeline([pipe.members[0]], codec="pixels", steps=2)
    assert loaded([0])[0].size == (28, 28) and loaded.result.nfe == [2]
