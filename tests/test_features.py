"""The toy feature net: a few training steps lower the loss, and torch-fidelity finds the registered extractor."""
import torch_fidelity

from tstitch.data.imageset import Images
from tstitch.data.toy import data, features


def test_short_training_beats_chance():
    x, y = data.load("train")
    net = features.train_classifier((x[:2048], y[:2048]), epochs=1, batch_size=64, lr=3e-3, seed=0)
    xt, yt = data.load("test")
    assert features.accuracy(net, xt[:500], yt[:500]) > 0.5


def test_registered_extractor_gives_zero_fd_for_identical_sets(tmp_path):
    x, _ = data.load("test")
    m = torch_fidelity.calculate_metrics(input1=Images(x[:300]), input2=Images(x[:300]), fid=True,
                                         feature_extractor=features.NAME, feature_layer_fid="features",
                                         cuda=False, save_cpu_ram=True, verbose=False)
    assert abs(m["frechet_inception_distance"]) < 1e-3
    far = torch_fidelity.calculate_metrics(input1=Images(x[:300]), input2=Images(255 - x[300:600]), fid=True,
                                           feature_extractor=features.NAME, feature_layer_fid="features",
                                           cuda=False, save_cpu_ram=True, verbose=False)
    assert far["frechet_inception_distance"] > 10
