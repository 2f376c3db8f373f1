"""The contracts as code (tstitch/models/protocols.py): every family's member, the codecs and the metrics satisfy their
Protocol with the optional parts explicit, and every solver takes the same keywords."""
import inspect

import pytest
import torch

import tstitch
from tstitch.models.codecs import PixelCodec
from tstitch.models.protocols import Codec, Member, MemberBase, Metric
from tstitch.sampling import solvers


def test_members_of_each_family_satisfy_the_protocol():
    from tstitch.models.zoo import entry, load

    uvit = entry("uvit/m4_64")
    uvit["net"].update(img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2)
    uvit["space"]["shape"], uvit["checkpoint"] = [3, 8, 8], None
    members = [tstitch.load("toy/large"), load(uvit)]
    for m in members:
        assert isinstance(m, Member) and isinstance(m, MemberBase)
        assert m.encoder is None and m.guidance_embedded is False and m.offloaded is False
        assert set(m.sampler) == {"solver", "steps", "guidance"}
    assert members[0].sampler == {"solver": "ddim", "steps": 100, "guidance": 1.5}
    assert members[1].sampler == {"solver": "dpm_solver", "steps": 50, "guidance": 1.0}  # no null class at 64x64


def test_wrapped_members_keep_the_protocol():
    from tstitch.models import fast

    (wrapped,) = fast.speed_up([tstitch.load("toy/small")], precision="bf16", offload=True)
    assert isinstance(wrapped, Member) and wrapped.offloaded is True and wrapped.encoder is None


def test_codecs_and_metrics_satisfy_theirs():
    from tstitch.metrics import FashionMetric

    assert isinstance(PixelCodec(), Codec) and PixelCodec().source == "pixels"
    assert isinstance(FashionMetric(), Metric)


@pytest.mark.parametrize("name", sorted(solvers.SOLVERS))
def test_every_solver_takes_the_same_keywords(name):
    params = inspect.signature(solvers.get(name)).parameters
    assert list(params)[:4] == ["denoiser", "x", "timesteps", "abar"]
    assert {"schedule", "steps", "randn_like", "clip", "callback"} <= {
        k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


def test_a_hand_written_member_needs_only_the_required_parts():
    """A member written by hand on MemberBase (family ``custom``) samples, stitches and is guided like a zoo member:
    its eps is g(class) x, so DDIM with guidance w is a per-sample product of known factors,
    sqrt(a') (1 - sqrt(1 - a) g) / sqrt(a) + sqrt(1 - a') g with g = g(null) + w (g(class) - g(null))."""
    from tstitch.models.protocols import Output, Space
    from tstitch.models.schedules import Schedule, grid

    gains = torch.tensor([0.3, -0.2, 0.1])  # classes 0 and 1, then the null class 2

    class Linear(MemberBase):
        name, schedule, space, num_classes, net = "linear", Schedule("linear"), Space("px", (1, 4, 4)), 2, None

        def __call__(self, x, t, y):
            return Output(gains[y].view(-1, 1, 1, 1) * x)

        def condition(self, labels):
            return labels

        def null(self, y):
            return torch.full_like(y, 2)

    x, w = torch.ones(2, 1, 4, 4), 2.0
    out = tstitch.sample([Linear(), Linear()], x, [0, 1], fractions=[0.5, 0.5], steps=4, guidance=w)
    assert out.nfe == [2, 2] and Linear().family == "custom"
    _, abar = grid(Schedule("linear"), 4)
    abar = [float(a) for a in abar]
    for k, label in enumerate((0, 1)):
        g = float(gains[2] + w * (gains[label] - gains[2]))
        factor = 1.0
        for a, a_prev in zip(abar[:-1], abar[1:]):
            factor *= a_prev ** 0.5 * (1 - (1 - a) ** 0.5 * g) / a ** 0.5 + (1 - a_prev) ** 0.5 * g
        assert torch.allclose(out.x[k], x[k] * factor, rtol=1e-5), (k, out.x[k].flatten()[0], factor)
    assert not torch.allclose(out.x[0], out.x[1])
