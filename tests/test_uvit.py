"""U-ViT: official parameter names and sizes (baofff/U-ViT libs/uvit.py, configs/imagenet*_uvit_*.py), strict
loading of official-format state dicts, the time input of discrete- and continuous-time models, the null class,
guidance against the official ``cfg_nnet``, stitching through ``tstitch.sample``, and every U-ViT yaml."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from test_codecs import to_compvis  # tests/ is on sys.path under pytest

import tstitch
from tstitch.cli import CONF
from tstitch.errors import ConfigError
from tstitch.jobs.sweep import sweep
from tstitch.models import zoo
from tstitch.models.adapters.uvit import time_input
from tstitch.models.codecs import load_codec
from tstitch.models.nets.dit import DiT
from tstitch.models.nets.uvit import UVIT_CONFIGS, UViT
from tstitch.models.schedules import Schedule
from tstitch.sampling.guidance import guided
from tstitch.sampling.stitch import check_compatible

TINY = dict(img_size=8, patch_size=2, in_chans=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, qkv_bias=False,
            mlp_time_embed=False, num_classes=1001, conv=True)
SHRINK = dict(embed_dim=32, depth=2, num_heads=2)  # a real zoo entry at toy width, for the yaml smoke tests
X = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([1, 207, 999])

# (zoo entry, official config, parameter count of our net = libs/uvit.py's at that config, patch tokens)
OFFICIAL = [("uvit/m4_64", "imagenet64_uvit_mid", 130_940_292, 256),
            ("uvit/l4_64", "imagenet64_uvit_large", 286_827_652, 256),
            ("uvit/l2_256", "imagenet256_uvit_large", 286_763_172, 256),
            ("uvit/h2_256", "imagenet256_uvit_huge", 500_832_016, 256),
            ("uvit/l4_512", "imagenet512_uvit_large", 286_861_524, 256),
            ("uvit/h4_512", "imagenet512_uvit_huge", 500_942_656, 256)]
# libs/uvit.py Block: norm1, attn.qkv (no bias: qkv_bias=False), attn.proj, norm2, mlp.fc1, mlp.fc2 (+ skip_linear)
BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
         "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def tiny(seed=0, **net):
    model = UViT(**{**TINY, **net}).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def tiny_entry(checkpoint, schedule="scaled_linear", null_class=1000, **net):
    return {"name": "tiny-uvit", "family": "uvit", "net": {**TINY, **net}, "checkpoint": checkpoint,
            "schedule": {"name": schedule, "num_timesteps": 1000},
            "space": {"name": "sd-kl-f8", "shape": [4, 8, 8], "scale": 0.18215}, "null_class": null_class}


def saved(tmp_path, name, **kwargs):
    """A tiny member loaded through the zoo from an official-format file (a plain state dict, as nnet_ema.pth)."""
    seed = kwargs.pop("seed", 0)
    schedule = kwargs.pop("schedule", "scaled_linear")
    torch.save(tiny(seed, **kwargs).state_dict(), tmp_path / f"{name}.pth")
    return zoo.load({**tiny_entry(str(tmp_path / f"{name}.pth"), schedule, **kwargs), "name": name})


def test_official_state_dict_loads_strictly(tmp_path):
    src = tiny()
    torch.save(src.state_dict(), tmp_path / "nnet_ema.pth")
    member = zoo.load(tiny_entry(str(tmp_path / "nnet_ema.pth")))
    t = torch.full((3,), 500.0)
    with torch.no_grad():
        assert torch.equal(member.net(X, t, Y), src(X, t, Y))
    shapes = {k: tuple(v.shape) for k, v in src.state_dict().items()}
    official = {"pos_embed": (1, 2 + 16, 32), "patch_embed.proj.weight": (32, 4, 2, 2), "label_emb.weight": (1001, 32),
                "in_blocks.0.attn.qkv.weight": (96, 32), "mid_block.mlp.fc1.weight": (128, 32),
                "out_blocks.0.skip_linear.weight": (32, 64), "norm.weight": (32,), "decoder_pred.weight": (16, 32),
                "final_layer.weight": (4, 4, 3, 3)}
    assert {k: shapes.get(k) for k in official} == official


@pytest.mark.parametrize("net,message", [
    ({"conv": False}, "unexpected: final_layer.weight, final_layer.bias"),
    ({"qkv_bias": True}, "missing: in_blocks.0.attn.qkv.bias, mid_block.attn.qkv.bias, out_blocks.0.attn.qkv.bias"),
    ({"num_classes": 1000}, "shape: label_emb.weight (1001, 32) vs (1000, 32)"),
    ({"mlp_time_embed": True}, "missing: time_embed.0.weight, time_embed.0.bias, time_embed.2.weight ..."),
])
def test_other_architecture_names_first_mismatches(tmp_path, net, message):
    torch.save(tiny().state_dict(), tmp_path / "nnet_ema.pth")
    with pytest.raises(ConfigError, match="does not fit tiny-uvit") as err:
        zoo.load(tiny_entry(str(tmp_path / "nnet_ema.pth"), **net))
    assert message in str(err.value)


def test_dit_checkpoint_is_refused_by_name(tmp_path):
    torch.save(DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2).state_dict(),
               tmp_path / "dit.pt")
    with pytest.raises(ConfigError) as err:
        zoo.load(tiny_entry(str(tmp_path / "dit.pt")))
    message = str(err.value)
    assert "does not fit tiny-uvit (missing: patch_embed.proj.weight, patch_embed.proj.bias, label_emb.weight" \
        in message
    assert "unexpected: x_embedder.proj.weight" in message and "pick the zoo entry" in message and "\n" not in message


@pytest.mark.parametrize("name,config,params,tokens", OFFICIAL)
def test_zoo_entries_have_official_sizes(name, config, params, tokens):
    """Every entry is its official config, at its real size on the meta device (no memory)."""
    e = zoo.entry(name)
    official = {"mlp_ratio": 4, "qkv_bias": False, "mlp_time_embed": False, "conv": True, **UVIT_CONFIGS[config]}
    assert e["net"] == official and e["family"] == "uvit"
    d, c, p, depth = official["embed_dim"], official["in_chans"], official["patch_size"], official["depth"]
    assert e["space"]["shape"] == [c, official["img_size"], official["img_size"]]
    with torch.device("meta"):
        net = zoo.load({**e, "checkpoint": None}, device="meta").net
    assert sum(q.numel() for q in net.parameters()) == params
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {"pos_embed": (1, 2 + tokens, d), "patch_embed.proj.weight": (d, c, p, p), "patch_embed.proj.bias": (d,),
                "label_emb.weight": (official["num_classes"], d), "norm.weight": (d,), "norm.bias": (d,),
                "decoder_pred.weight": (p * p * c, d), "decoder_pred.bias": (p * p * c,)}
    if official["conv"]:
        expected.update({"final_layer.weight": (c, c, 3, 3), "final_layer.bias": (c,)})
    blocks = {f"{prefix}.{k}" for prefix in [f"in_blocks.{i}" for i in range(depth // 2)] + ["mid_block"] +
              [f"out_blocks.{i}" for i in range(depth // 2)] for k in BLOCK}
    blocks |= {f"out_blocks.{i}.skip_linear.{k}" for i in range(depth // 2) for k in ("weight", "bias")}
    assert set(shapes) == set(expected) | blocks
    assert {k: shapes[k] for k in expected} == expected
    assert shapes[f"out_blocks.{depth // 2 - 1}.skip_linear.weight"] == (d, 2 * d)
    assert shapes["mid_block.attn.qkv.weight"] == (3 * d, d) and shapes["in_blocks.0.mlp.fc1.weight"] == (4 * d, d)


def test_time_input_matches_the_official_samplers():
    """Discrete (train_ldm_discrete.py): DPM-Solver's t_continuous = (i + 1) / N for alpha-bar index i, net input
    N t_continuous. Continuous (sde.ScoreModel): net input 999 s, our timestep t at s = (t + 1) / T."""
    discrete, continuous = Schedule("scaled_linear"), Schedule("vp_continuous")
    for i in (0, 499, 999):
        assert time_input(i, discrete) == (i + 1) / 1000 * 1000
        assert time_input(i, continuous) == pytest.approx(999 * (i + 1) / 1000, abs=1e-9)
    assert time_input(499.25, discrete) == 500.25 and time_input(999, continuous) == 999.0
    for schedule, t, t_net in (("scaled_linear", 499, 500.0), ("scaled_linear", 12.5, 13.5),
                               ("vp_continuous", 499, 499.5), ("vp_continuous", 0, 0.999)):
        member = zoo.load(tiny_entry(None, schedule))
        member.net.load_state_dict(tiny().state_dict())
        with torch.no_grad():
            assert torch.equal(member(X, t, Y).eps, member.net(X, torch.full((3,), t_net), Y))


def test_condition_and_null_class():
    member = zoo.load(tiny_entry(None))
    assert member.num_classes == 1000 and member.cfg_channels is None
    assert member.condition(torch.tensor([0, 999])).tolist() == [0, 999]
    assert member.null(Y).tolist() == [1000] * 3  # the extra label row 1000 of 1001
    for bad in ([3, 1000], [-1, 5]):
        with pytest.raises(ConfigError, match=r"class labels must be in \[0, 1000\)"):
            member.condition(torch.tensor(bad))
    pixels = zoo.load(tiny_entry(None, num_classes=1000, null_class=None))  # the 64x64 models: no null class
    assert pixels.num_classes == 1000 and pixels.condition(torch.tensor([999])).tolist() == [999]
    with pytest.raises(ConfigError, match="trained without a null class.*guidance.scale=1"):
        guided(pixels, Y, 1.4)
    with pytest.raises(ConfigError, match="null_class 5 must be the last label row"):
        zoo.load(tiny_entry(None, null_class=5))


def official_cfg_nnet(nnet, x, timesteps, y, scale):
    """baofff/U-ViT eval_ldm_discrete.py ``cfg_nnet``, with dataset.K = 1000."""
    _cond = nnet(x, timesteps, y=y)
    _uncond = nnet(x, timesteps, y=torch.tensor([1000] * x.size(0)))
    return _cond + scale * (_cond - _uncond)


@pytest.mark.parametrize("official_scale", [0.4, 0.7])
def test_guidance_is_official_scale_plus_one(official_scale):
    member = zoo.load(tiny_entry(None))
    member.net.load_state_dict(tiny().state_dict())
    t = torch.full((3,), 500.0)  # our timestep 499 of the discrete schedule
    with torch.no_grad():
        official = official_cfg_nnet(member.net, X, t, Y, official_scale)
        ours = guided(member, Y, 1 + official_scale)(X, 499).eps
        eps_c, eps_u = member.net(X, t, Y), member.net(X, t, torch.full_like(Y, 1000))
    assert torch.allclose(ours, official, atol=1e-5, rtol=0)
    assert torch.allclose(ours, eps_u + (1 + official_scale) * (eps_c - eps_u), atol=1e-5, rtol=0)


def test_stitched_sampling(tmp_path):
    small = saved(tmp_path, "small", seed=1)
    base = saved(tmp_path, "base", seed=2, embed_dim=48, num_heads=3)
    large = saved(tmp_path, "large", seed=3, embed_dim=64, depth=4, num_heads=4)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([3, 999])
    opts = dict(solver="ddim", steps=5, guidance=1.4)
    alone = tstitch.sample([large], noise, y, **opts)
    stitched = tstitch.sample([small, large], noise, y, fractions=[0.4, 0.6], **opts)
    assert stitched.nfe == [2, 3] and stitched.x.shape == noise.shape and torch.isfinite(stitched.x).all()
    assert not torch.allclose(stitched.x, alone.x)
    assert torch.equal(tstitch.sample([small, large], noise, y, fractions=[0, 1], **opts).x, alone.x)
    three = tstitch.sample([small, base, large], noise, y, fractions=[0.4, 0.2, 0.4], **opts)
    assert three.nfe == [2, 1, 2] and torch.isfinite(three.x).all()


def test_continuous_member_stitched_with_a_discrete_one(tmp_path):
    """U-ViT-L/2 (continuous VP-SDE) -> U-ViT-H/2 (discrete scaled_linear): the second is fed its own fractional
    timestep of equal noise level, converted to its time input t + 1."""
    first = saved(tmp_path, "first", seed=1, schedule="vp_continuous")
    second = saved(tmp_path, "second", seed=2, embed_dim=64, num_heads=4)
    seen = []
    second.net.register_forward_pre_hook(lambda module, args: seen.append(args[1][0].item()))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    out = tstitch.sample([first, second], noise, torch.tensor([3, 999]), fractions=[0.4, 0.6], steps=5, guidance=1.4)
    assert out.nfe == [2, 3] and torch.isfinite(out.x).all()
    vp, sl = Schedule("vp_continuous"), Schedule("scaled_linear")
    expected = [sl.time_of(vp.alphas_cumprod[t]) + 1 for t in out.timesteps[2:]]
    assert seen == pytest.approx(expected, abs=1e-3) and any(s != round(s) for s in seen)


@pytest.mark.parametrize("name", [n for n in zoo.names() if n.startswith("uvit/")])
def test_zoo_yaml_instantiates_at_toy_width(name, monkeypatch, tmp_path):
    monkeypatch.setenv("TSTITCH_CKPT_DIR", str(tmp_path))
    e = zoo.entry(name)
    member = zoo.load({**e, "net": {**e["net"], **SHRINK}, "checkpoint": None})
    assert member.schedule == Schedule(**e["schedule"]) and member.space.shape == tuple(e["space"]["shape"])
    assert e["checkpoint"] == f"{tmp_path}/{config_file(name)}.pth"
    x = torch.zeros(1, *member.space.shape)
    with torch.no_grad():
        assert member(x, 999, torch.tensor([7])).eps.shape == x.shape
    if e["codec"] == "pixels":
        assert e["null_class"] is None and load_codec(e["codec"], member.space).scale == 1.0
    else:  # the latent entries decode through a CompVis-layout file, read by the single-file path
        assert e["null_class"] == 1000 and e["codec"]["scaling_factor"] == member.space.scale == 0.18215
        with pytest.raises(ConfigError, match=f"VAE file not found: {tmp_path}/autoencoder_kl"):
            load_codec(e["codec"], member.space)


def config_file(name):
    return next(c for n, c, _, _ in OFFICIAL if n == name)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(CONF) / "stitch").glob("uvit_*.yaml")))
def test_stitch_preset_composes_and_samples_at_toy_width(preset):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[f"stitch={preset}"])
    OmegaConf.resolve(cfg)
    entries = [OmegaConf.to_container(m) for m in cfg.stitch.members.values()]
    assert len(entries) == len(cfg.stitch.fractions) and any(e["family"] == "uvit" for e in entries)
    members = [zoo.load({**e, "net": {**e["net"], **(SHRINK if e["family"] == "uvit" else
                                                      {"hidden_size": 32, "depth": 2, "num_heads": 2})},
                         "checkpoint": None}) for e in entries]
    check_compatible(members)
    guidance = 1.0 if members[0].space.name.endswith("pixels") else 1.4
    noise = torch.zeros(1, *members[0].space.shape)
    out = tstitch.sample(members, noise, torch.tensor([5]), fractions=list(cfg.stitch.fractions), steps=3,
                         guidance=guidance)
    assert sum(out.nfe) == 3 and torch.isfinite(out.x).all()


def test_main_job_on_uvit_latents_decoded_by_a_compvis_file(tmp_path):
    """`tstitch stitch=uvit_l2_h2_256` end to end at toy size: official-format U-ViT files, the cross-schedule
    pair, and the zoo's codec spec pointing at a CompVis-layout autoencoder file (as autoencoder_kl_ema.pth)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, sample_size=16)
    torch.save(to_compvis(vae.state_dict(), levels=2), tmp_path / "autoencoder_kl_ema.pth")
    with initialize_config_dir(config_dir=CONF, version_base=None):
        default = compose(config_name="tstitch", overrides=["stitch=uvit_l2_h2_256"])
        assert (default.solver.name, default.solver.steps) == ("dpm_solver", 50)  # U-ViT's own sampler
        # this run is about the codec and the cross-schedule pair: on the ADM grid, three steps of one call each
        cfg = compose(config_name="tstitch", overrides=["stitch=uvit_l2_h2_256", "solver=ddim", "debug=tiny",
                                                        "metric=none", "guidance.scale=1.4",
                                                        "sweep.first=[0.0,0.4,1.0]"])
    with open_dict(cfg):
        for seed, (name, m) in enumerate(cfg.stitch.members.items()):
            m.net.update(img_size=8, **SHRINK)
            m.space.shape = [4, 8, 8]
            torch.save(tiny(seed, **m.net).state_dict(), tmp_path / f"{name}.pth")
            m.checkpoint = str(tmp_path / f"{name}.pth")
        cfg.stitch.members.large.codec.source = str(tmp_path / "autoencoder_kl_ema.pth")
    rows, grids, members = sweep(cfg)[:3]
    assert [m.schedule.name for m in members] == ["vp_continuous", "scaled_linear"]
    assert [r["nfe"] for r in rows] == [[0, 3], [1, 2], [3, 0]]
    assert all(g.shape == (8, 3, 16, 16) and g.dtype == torch.uint8 for g in grids)
    assert not torch.equal(grids[0], grids[2])
