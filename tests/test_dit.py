"""DiT: official parameter names and sizes, the checkpoint formats the official and T-Stitch files use and
their errors, the adapter, and classifier-free guidance exactly as the official ``forward_with_cfg``."""
import argparse

import pytest
import torch
from safetensors.torch import save_file

from tstitch.errors import ConfigError
from tstitch.models import zoo
from tstitch.models.checkpoints import load_into
from tstitch.models.nets.dit import DIT_CONFIGS, DiT
from tstitch.sampling.guidance import guided

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=1000,
            class_dropout_prob=0.1, learn_sigma=True)
X = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
T = torch.tensor([0, 500, 999])
Y = torch.tensor([1, 999, 1000])

# (zoo entry, official config, parameter count of facebookresearch/DiT models.py at that size, tokens)
OFFICIAL = [("dit/s2", "DiT-S/2", 32_963_360, 256), ("dit/b2", "DiT-B/2", 130_512_416, 256),
            ("dit/xl2", "DiT-XL/2", 675_129_632, 256), ("dit/xl2_512", "DiT-XL/2", 676_014_368, 1024)]


def tiny(seed=0, **net):
    """A tiny DiT with every weight random: adaLN-Zero would make a fresh one output zeros whatever it loaded."""
    model = DiT(**{**TINY, **net}).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def tiny_entry(checkpoint, **net):
    return {"name": "tiny-dit", "family": "dit", "net": {**TINY, **net}, "checkpoint": checkpoint,
            "schedule": {"name": "linear", "num_timesteps": 1000},
            "space": {"name": "sd-kl-f8", "shape": [4, 8, 8], "scale": 0.18215}, "cfg_channels": 3}


def no_weights(name, device="cpu"):
    return zoo.load({**zoo.entry(name), "checkpoint": None}, device=device)


@pytest.mark.parametrize("filename,wrap", [
    ("plain.pt", lambda sd: sd),  # the official DiT-XL-2-256x256.pt
    ("ema.pt", lambda sd: {"ema": sd}),
    ("model.pth", lambda sd: {"model": sd}),
    ("ema_first.pt", lambda sd: {"model": tiny(seed=7).state_dict(), "ema": sd}),  # DiT's find_model takes ema
    ("tiny.safetensors", None),
])
def test_official_format_round_trip(tmp_path, filename, wrap):
    src = tiny()
    path = tmp_path / filename
    if wrap is None:
        save_file(src.state_dict(), str(path))
    else:
        torch.save(wrap(src.state_dict()), path)
    with torch.no_grad():
        expected = src(X, T, Y)
        assert torch.equal(load_into(tiny(seed=1), path)(X, T, Y), expected)
        assert torch.equal(zoo.load(tiny_entry(str(path))).net(X, T, Y), expected)


def test_train_py_checkpoint_loads(tmp_path):
    src = tiny()
    opt = torch.optim.AdamW(tiny(seed=2).parameters())
    torch.save({"model": tiny(seed=3).state_dict(), "ema": src.state_dict(), "opt": opt.state_dict(),
                "args": argparse.Namespace(model="DiT-S/2", image_size=256)}, tmp_path / "0400000.pt")
    with torch.no_grad():
        assert torch.equal(load_into(tiny(seed=1), tmp_path / "0400000.pt")(X, T, Y), src(X, T, Y))


@pytest.mark.parametrize("name,config,params,tokens", OFFICIAL)
def test_zoo_entries_have_official_sizes(name, config, params, tokens):
    """Every DiT entry builds at its real size (XL on the meta device: 675M parameters, no memory)."""
    e = zoo.entry(name)
    assert {k: e["net"][k] for k in DIT_CONFIGS[config]} == DIT_CONFIGS[config]
    assert e["cfg_channels"] == 3 and e["codec"] == "stabilityai/sd-vae-ft-ema" and e["space"]["scale"] == 0.18215
    assert e["space"]["shape"] == [4, e["net"]["input_size"], e["net"]["input_size"]]
    with torch.device("meta"):
        net = no_weights(name, device="meta").net
    hidden = e["net"]["hidden_size"]
    assert sum(p.numel() for p in net.parameters()) == params
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["pos_embed"] == (1, tokens, hidden)
    assert shapes["y_embedder.embedding_table.weight"] == (1001, hidden)
    assert shapes["final_layer.linear.weight"] == (2 * 2 * 8, hidden)


def test_official_key_names_at_real_size():
    """DiT-S/2 for real on CPU: the keys an official state dict carries, with their shapes."""
    member = no_weights("dit/s2")
    shapes = {k: tuple(v.shape) for k, v in member.net.state_dict().items()}
    official = {
        "pos_embed": (1, 256, 384),
        "x_embedder.proj.weight": (384, 4, 2, 2),
        "x_embedder.proj.bias": (384,),
        "t_embedder.mlp.0.weight": (384, 256),
        "t_embedder.mlp.2.weight": (384, 384),
        "y_embedder.embedding_table.weight": (1001, 384),
        "blocks.0.attn.qkv.weight": (1152, 384),
        "blocks.0.attn.qkv.bias": (1152,),
        "blocks.0.attn.proj.weight": (384, 384),
        "blocks.0.mlp.fc1.weight": (1536, 384),
        "blocks.0.mlp.fc2.weight": (384, 1536),
        "blocks.0.adaLN_modulation.1.weight": (2304, 384),
        "blocks.11.adaLN_modulation.1.bias": (2304,),
        "final_layer.linear.weight": (32, 384),
        "final_layer.adaLN_modulation.1.weight": (768, 384),
    }
    assert {k: shapes.get(k) for k in official} == official
    assert len(shapes) == 2 + 4 + 1 + 1 + 12 * 10 + 4  # x/t/y embedders, pos_embed, 10 tensors a block, final layer
    assert sum(p.numel() for p in member.net.parameters()) == OFFICIAL[0][2]
    assert member.net.pos_embed.abs().max() == 1  # the fixed sin-cos table, which the checkpoint also carries


@pytest.mark.parametrize("net,message", [
    ({"hidden_size": 96}, "shape: pos_embed (1, 16, 64) vs (1, 16, 96), x_embedder.proj.weight (64, 4, 2, 2)"),
    ({"depth": 3}, "missing: blocks.2.attn.qkv.weight, blocks.2.attn.qkv.bias, blocks.2.attn.proj.weight ..."),
    ({"depth": 1}, "unexpected: blocks.1.attn.qkv.weight, blocks.1.attn.qkv.bias, blocks.1.attn.proj.weight"),
    ({"learn_sigma": False}, "shape: final_layer.linear.weight (32, 64) vs (16, 64)"),
    ({"class_dropout_prob": 0.0}, "shape: y_embedder.embedding_table.weight (1001, 64) vs (1000, 64)"),
])
def test_other_architecture_names_first_mismatches(tmp_path, net, message):
    torch.save(tiny().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ConfigError, match="does not fit tiny-dit") as err:
        zoo.load(tiny_entry(str(tmp_path / "tiny.pt"), **net))
    assert message in str(err.value)


@pytest.mark.parametrize("filename", ["missing.pt", "corrupt.pt", "corrupt.safetensors", "tensor.pt"])
def test_bad_file_names_the_path(tmp_path, filename):
    path = tmp_path / filename
    if filename.startswith("corrupt"):
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif filename == "tensor.pt":
        torch.save(torch.zeros(3), path)
    match = {"missing.pt": "checkpoint not found", "tensor.pt": "holds no state dict"}.get(filename, "corrupt")
    with pytest.raises(ConfigError, match=match) as err:
        load_into(tiny(), path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_url_checkpoint_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "cache"))

    def no_network(url, dst, *args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    url = "https://dl.example.org/DiT/models/DiT-tiny-8x8.pt"
    target = tmp_path / "cache" / "DiT-tiny-8x8.pt"
    with pytest.raises(ConfigError, match="cannot download checkpoint") as err:
        zoo.load(tiny_entry(url))
    assert f"put it at {target}" in str(err.value)
    src = tiny()
    torch.save(src.state_dict(), target)  # what the user does on the advice, or a previous download left
    with torch.no_grad():
        assert torch.equal(zoo.load(tiny_entry(url)).net(X, T, Y), src(X, T, Y))


def test_member_splits_learned_sigma_and_null_class():
    member = zoo.load(tiny_entry(None))
    member.net.load_state_dict(tiny().state_dict())
    with torch.no_grad():
        out, raw = member(X, 500, Y), member.net(X, torch.full((3,), 500), Y)
    assert torch.equal(out.eps, raw[:, :4]) and torch.equal(out.v, raw[:, 4:])
    assert member.cfg_channels == 3 and member.null(Y).tolist() == [1000] * 3
    plain = zoo.load(tiny_entry(None, learn_sigma=False))
    assert plain(X, 500, Y).v is None and plain(X, 500, Y).eps.shape == X.shape
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 1000\)"):
        member.condition(torch.tensor([3, 1000]))


def official_forward_with_cfg(model, x, t, y, cfg_scale):
    """facebookresearch/DiT models.py, verbatim apart from the name of ``self``."""
    half = x[: len(x) // 2]
    combined = torch.cat([half, half], dim=0)
    model_out = model(combined, t, y)
    eps, rest = model_out[:, :3], model_out[:, 3:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    eps = torch.cat([half_eps, half_eps], dim=0)
    return torch.cat([eps, rest], dim=1)


@pytest.mark.parametrize("scale", [1.5, 4.0])
def test_guidance_reproduces_official_forward_with_cfg(scale):
    member = zoo.load(tiny_entry(None))
    member.net.load_state_dict(tiny().state_dict())
    y = torch.tensor([1, 207, 999])
    with torch.no_grad():  # the official sample.py: z = cat([z, z]), y = cat([y, y_null]) with y_null = 1000
        official = official_forward_with_cfg(member.net, torch.cat([X, X]), torch.full((6,), 500),
                                             torch.cat([y, torch.full_like(y, 1000)]), scale)[:3]
        ours = guided(member, y, scale, channels=member.cfg_channels)(X, 500)
        every_channel = guided(member, y, scale)(X, 500)
    assert torch.allclose(ours.eps, official[:, :4], atol=1e-6, rtol=0)
    assert torch.allclose(ours.v, official[:, 4:], atol=1e-6, rtol=0)
    assert torch.allclose(every_channel.eps[:, :3], ours.eps[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(every_channel.eps[:, 3], ours.eps[:, 3], atol=1e-3)  # the quirk matters
