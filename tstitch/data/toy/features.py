"""The toy zoo's feature network: a small CNN classifier on Fashion-MNIST whose penultimate activations
give a Frechet distance (FD) and whose logits give class accuracy of generated images. It is registered
with torch-fidelity as the feature extractor ``tstitch-fashion``, like Inception-v3 for ImageNet."""
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from tstitch.models.codecs import from_uint8

NAME = "tstitch-fashion"
WEIGHTS = "pkg://tstitch/data/toy/weights/features.safetensors"
FEATURES_DIM = 128


class FeatureNet(nn.Module):
    def __init__(self, width=32, features=FEATURES_DIM, num_classes=10):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, width), block(width, 2 * width), nn.Flatten(),
                                  nn.Linear(2 * width * 7 * 7, features), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(features, num_classes))

    def forward(self, x):
        """x in [-1, 1], (N, 1, 28, 28) -> (features (N, 128), logits (N, 10))."""
        f = self.body(x)
        return f, self.head(f)


class FashionFeatures(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 (N, 1, 28, 28) images -> ('features', 'logits')."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **_):
        super().__init__(name, features_list)
        from tstitch.models.checkpoints import load_into

        self.net = load_into(FeatureNet(), feature_extractor_weights_path or WEIGHTS, name="the feature net").eval()

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "features", "kid": "features", "prc": "features", "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

    def forward(self, x):
        if x.shape[1] == 3:  # torch-fidelity reads image folders as RGB; the toy data is grayscale
            x = x.float().mean(1, keepdim=True)
        f, logits = self.net(from_uint8(x))
        out = {"features": f.double(), "logits": logits.double()}
        return tuple(out[name] for name in self.features_list)


if NAME not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(NAME, FashionFeatures)


def train_classifier(data, *, epochs, batch_size, lr, seed):
    """Train FeatureNet with Adam + light shift augmentation; returns the net (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = data
    net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * (len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(len(x) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = from_uint8(x[idx])
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dx, dy), dims=(2, 3))
            loss = F.cross_entropy(net(xb)[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def accuracy(net, x_uint8, y, batch_size=1000):
    hits = sum((net(from_uint8(x_uint8[i:i + batch_size]))[1].argmax(1) == y[i:i + batch_size]).sum().item()
               for i in range(0, len(x_uint8), batch_size))
    return hits / len(x_uint8)
