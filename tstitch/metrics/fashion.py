"""The toy zoo's metric: the Frechet distance (FD) of the registered ``tstitch-fashion`` feature extractor against the
Fashion-MNIST test set (reference statistics cached by torch-fidelity), and the class accuracy of the same network on
the generated images (do they show the class they were asked for?).

The features of the generated images are extracted once and kept for the FD's bootstrap interval (``fd_p5``,
``fd_p95``: ``tstitch.metrics.fd_bootstrap`` over the samples against the fixed reference statistics, ``bootstrap``
replicates, 0 (none) by default); the FD itself is torch-fidelity's own computation, as
``torch_fidelity.calculate_metrics(fid=True, ...)`` makes it, to the bit."""
import hashlib
import os
from pathlib import Path

from torch_fidelity import metric_fid
from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id_cached

from tstitch.data.imageset import Images
from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value, bootstrapped, check_bootstrap, fd_interval, read_samples
from tstitch.models.checkpoints import cache_dir, resolve

LAYER = "features"  # the feature net's layer the FD reads


class FashionMetric(MetricBase):
    values = (*bootstrapped(Value("fd", "FD")), Value("accuracy", "class acc.", "{:.1%}", "higher"))

    def __init__(self, weights=None, reference="test", cache_root=None, bootstrap=0):
        from tstitch.data.toy import data, features

        self.extractor = features.NAME
        self.weights = str(resolve(weights or features.WEIGHTS))
        self.net = features.FashionFeatures(features.NAME, ["logits"], self.weights).net
        self.reference_name = f"fashion-mnist-{reference}"
        self.reference = Images(data.load(reference)[0])
        digest = hashlib.sha1(Path(self.weights).read_bytes()).hexdigest()[:10]
        self.cache_name = f"{self.reference_name}-{digest}"  # new weights -> new cached statistics
        self.cache_root = str(cache_root or cache_dir() / "fidelity")
        self.bootstrap = check_bootstrap(bootstrap)

    def __call__(self, images, labels) -> dict:
        """images: uint8 (N, 1, 28, 28); labels: the classes they were conditioned on."""
        from tstitch.data.toy.features import accuracy

        options = dict(input1=Images(images), input2=self.reference, fid=True, feature_extractor=self.extractor,
                       feature_layer_fid=LAYER, feature_extractor_weights_path=self.weights, cuda=False,
                       save_cpu_ram=True, verbose=False, cache=True, cache_root=self.cache_root,
                       input2_cache_name=self.cache_name, batch_size=500)
        fe = create_feature_extractor(self.extractor, [LAYER], **options)  # calculate_metrics' steps for FID alone
        features = extract_featuresdict_from_input_id_cached(1, fe, **options)[LAYER]  # (N, 128)
        reference = metric_fid.fid_input_id_to_statistics_cached(2, fe, LAYER, **options)  # cached under cache_root
        mine = metric_fid.fid_features_to_statistics(features)
        fd = metric_fid.fid_statistics_to_metric(mine, reference, False)[metric_fid.KEY_METRIC_FID]
        return {"fd": fd, **fd_interval("fd", features, reference, self.bootstrap),
                "accuracy": accuracy(self.net, images, labels.cpu())}

    def score_file(self, path) -> dict:
        images, labels = read_samples(path)
        if labels is None:
            raise ConfigError(f"{path} has no labels (arr_1); class accuracy needs them")
        return self(images, labels)

    def describe(self) -> dict:
        return {"extractor": self.extractor, "weights": os.path.basename(self.weights),
                "reference": self.reference_name, "bootstrap": self.bootstrap}
