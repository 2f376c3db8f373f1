"""The toy zoo's metric: the Frechet distance (FD) of the registered ``tstitch-fashion`` feature extractor against the
Fashion-MNIST test set (reference statistics cached by torch-fidelity), and the class accuracy of the same network on
the generated images (do they show the class they were asked for?)."""
import hashlib
import os
from pathlib import Path

import torch_fidelity

from tstitch.data.imageset import Images
from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value, read_samples
from tstitch.models.checkpoints import cache_dir, resolve


class FashionMetric(MetricBase):
    values = (Value("fd", "FD"), Value("accuracy", "class acc.", "{:.1%}", "higher"))

    def __init__(self, weights=None, reference="test", cache_root=None):
        from tstitch.data.toy import data, features

        self.extractor = features.NAME
        self.weights = str(resolve(weights or features.WEIGHTS))
        self.net = features.FashionFeatures(features.NAME, ["logits"], self.weights).net
        self.reference_name = f"fashion-mnist-{reference}"
        self.reference = Images(data.load(reference)[0])
        digest = hashlib.sha1(Path(self.weights).read_bytes()).hexdigest()[:10]
        self.cache_name = f"{self.reference_name}-{digest}"  # new weights -> new cached statistics
        self.cache_root = str(cache_root or cache_dir() / "fidelity")

    def __call__(self, images, labels) -> dict:
        """images: uint8 (N, 1, 28, 28); labels: the classes they were conditioned on."""
        from tstitch.data.toy.features import accuracy

        m = torch_fidelity.calculate_metrics(
            input1=Images(images), input2=self.reference, fid=True, feature_extractor=self.extractor,
            feature_layer_fid="features", feature_extractor_weights_path=self.weights, cuda=False,
            save_cpu_ram=True, verbose=False, cache=True, cache_root=self.cache_root,
            input2_cache_name=self.cache_name, batch_size=500)
        return {"fd": m["frechet_inception_distance"], "accuracy": accuracy(self.net, images, labels.cpu())}

    def score_file(self, path) -> dict:
        images, labels = read_samples(path)
        if labels is None:
            raise ConfigError(f"{path} has no labels (arr_1); class accuracy needs them")
        return self(images, labels)

    def describe(self) -> dict:
        return {"extractor": self.extractor, "weights": os.path.basename(self.weights),
                "reference": self.reference_name}
