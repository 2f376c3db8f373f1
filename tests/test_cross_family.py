"""Cross-family stitching in the shared SD kl-f8 latent space: a tiny DiT and a tiny U-ViT (random weights in their
official checkpoint formats) stitch in both orders with guidance; each alone is reproduced exactly; mismatched
spaces are refused naming both members; a class label reaches each family in its own convention."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from tstitch.cli import CONF
from tstitch.errors import ConfigError
from tstitch.models import zoo
from tstitch.models.nets.dit import DiT
from tstitch.models.nets.uvit import UViT
from tstitch.sampling.sample import sample

SPACE = {"name": "sd-kl-f8", "shape": [4, 8, 8], "scale": 0.18215}
DIT_NET = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=1000)
UVIT_NET = dict(img_size=8, patch_size=2, in_chans=4, embed_dim=32, depth=3, num_heads=4, num_classes=1001)


def randomized(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """tiny-dit (DiT train.py checkpoint, linear schedule) and tiny-uvit (plain state dict as nnet_ema.pth,
    continuous VP-SDE as U-ViT-L/2), both declaring sd-kl-f8 latents."""
    root = tmp_path_factory.mktemp("xf")
    dit = randomized(DiT(**DIT_NET), 0)
    torch.save({"ema": dit.state_dict(), "model": dit.state_dict()}, root / "dit.pt")
    uvit = randomized(UViT(**UVIT_NET), 1)
    torch.save(uvit.state_dict(), root / "nnet_ema.pth")
    return {
        "dit": zoo.load({"name": "tiny-dit", "family": "dit", "net": DIT_NET, "checkpoint": str(root / "dit.pt"),
                         "schedule": {"name": "linear"}, "space": SPACE, "cfg_channels": 3}),
        "uvit": zoo.load({"name": "tiny-uvit", "family": "uvit", "net": UVIT_NET,
                          "checkpoint": str(root / "nnet_ema.pth"), "schedule": {"name": "vp_continuous"},
                          "space": SPACE, "null_class": 1000}),
    }


def run(ms, fractions=None, steps=6):
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return sample(ms, x, torch.tensor([3, 999, 0]), fractions=fractions, solver="ddim", steps=steps, guidance=1.5)


@pytest.mark.parametrize("order", [("dit", "uvit"), ("uvit", "dit")])
def test_dit_and_uvit_stitch_in_both_orders(members, order):
    first, last = members[order[0]], members[order[1]]
    stitched = run([first, last], [0.5, 0.5])
    assert stitched.nfe == [3, 3] and stitched.plan == [0, 0, 0, 1, 1, 1] and torch.isfinite(stitched.x).all()
    assert torch.equal(run([first, last], [0.0, 1.0]).x, run([last]).x)
    assert torch.equal(run([first, last], [1.0, 0.0]).x, run([first]).x)
    assert not torch.equal(stitched.x, run([last]).x) and not torch.equal(stitched.x, run([first]).x)


def test_three_members_across_families(members):
    out = run([members["dit"], members["uvit"], members["dit"]], [0.34, 0.33, 0.33])
    assert out.nfe == [2, 2, 2] and out.plan == [0, 0, 1, 1, 2, 2]


def test_class_labels_reach_each_family_in_its_convention(members):
    """User label y is DiT's and U-ViT's embedding row y; unconditional is row 1000 for both (DiT: the extra row
    of 1000 + 1 when trained with label dropout, U-ViT: row 1000 of 1001); 1000 is not a user label."""
    dit, uvit = members["dit"], members["uvit"]
    y = torch.tensor([0, 7, 999])
    for m in (dit, uvit):
        assert m.num_classes == 1000 and torch.equal(m.condition(y), y)
        assert m.null(m.condition(y)).tolist() == [1000, 1000, 1000]
        with pytest.raises(ConfigError, match=r"class labels must be in \[0, 1000\)"):
            m.condition(torch.tensor([1000]))
    assert dit.net.y_embedder.embedding_table.weight.shape[0] == 1001
    assert uvit.net.label_emb.weight.shape[0] == 1001


@pytest.mark.parametrize("space,mismatch", [
    ({"name": "sdxl-vae", "shape": [4, 8, 8], "scale": 0.13025}, "sdxl-vae"),
    ({"name": "sd-kl-f8", "shape": [4, 16, 16], "scale": 0.18215}, "(4, 16, 16)"),
    ({"name": "sd-kl-f8", "shape": [4, 8, 8], "scale": 0.5}, "scale=0.5"),
])
def test_members_of_other_latent_spaces_are_refused_naming_both(members, tmp_path, space, mismatch):
    uvit = randomized(UViT(**{**UVIT_NET, "img_size": space["shape"][1]}), 1)
    torch.save(uvit.state_dict(), tmp_path / "u.pth")
    other = zoo.load({"name": "other-uvit", "family": "uvit", "net": {**UVIT_NET, "img_size": space["shape"][1]},
                      "checkpoint": str(tmp_path / "u.pth"), "schedule": {"name": "scaled_linear"}, "space": space,
                      "null_class": 1000})
    with pytest.raises(ConfigError) as e:
        run([members["dit"], other], [0.5, 0.5])
    message = str(e.value)
    assert "\n" not in message and message.startswith("cannot stitch tiny-dit with other-uvit: different space")
    assert mismatch in message


@pytest.mark.parametrize("preset", ["xf_uvit_l2_dit_xl2", "xf_dit_s2_uvit_h2", "xf_dit_b2_uvit_h2",
                                    "xf_dit_s2_uvit_l2_dit_xl2", "uvit_dit_s_l2_h2_256"])
def test_cross_family_presets_compose_into_one_latent_space(preset):
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose("tstitch", [f"stitch={preset}"])
    spaces = {(m.space.name, tuple(m.space.shape), m.space.scale) for m in cfg.stitch.members.values()}
    assert spaces == {("sd-kl-f8", (4, 32, 32), 0.18215)}
    assert {m.family for m in cfg.stitch.members.values()} == {"dit", "uvit"}


def test_a_diffusers_scheduler_drives_the_stitch(members):
    """solver=diffusers follows the stitch's grid: the plan and NFE hold, across families and schedules."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3, 5])
    out = sample([members["dit"], members["uvit"]], x, y, fractions=[0.5, 0.5], solver="diffusers", steps=6,
                 guidance=1.5, scheduler="DPMSolverMultistepScheduler")
    assert out.nfe == [3, 3] and torch.isfinite(out.x).all()
