"""Accelerators on top of stitching for Stable Diffusion (issue 25, items 5 and 6), on tiny random SD models saved
with ``save_pretrained``: DeepCache equal to the ``DeepCache`` package's helper call by call, ToMe the ``tomesd``
package's patch with its draws seeded per trajectory, both only on the members named and starting afresh for each
batch and allocation; one-line refusals; the switches in a run's identity; TAESD decoding exactly as diffusers'
``AutoencoderTiny`` through the codec path, from a local directory and from a hub id."""
import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_sd import PROMPTS, SHAPE, entry, noise, save_sd

import tstitch
from tstitch.errors import ConfigError
from tstitch.models import accelerators, fast, taesd, zoo
from tstitch.models.codecs import load_codec, to_uint8
from tstitch.models.protocols import MemberBase, Output, Space

pytestmark = pytest.mark.usefixtures("diffusers_quiet")
OPTIONS = dict(solver="ddim", steps=5, guidance=3.0)  # 0.4 : 0.6 gives the large member 3 of the 5 steps


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_sd")
    return SimpleNamespace(small=save_sd(root / "small", 32, seed=0), large=save_sd(root / "large", 48, seed=1))


def pair(dirs):
    """A fresh small, large pair (the accelerators patch a member's UNet in place)."""
    return [zoo.load(entry(dirs.small, "tiny-small", net={"cross_attention_dim": 32})),
            zoo.load(entry(dirs.large, "tiny-large", net={"cross_attention_dim": 48}))]


def run(members, fractions=(0.4, 0.6)):
    return tstitch.sample(members, noise(), PROMPTS, fractions=list(fractions), **OPTIONS).x


def relative(a, b):
    return float((a - b).norm() / b.norm())


# --- DeepCache ------------------------------------------------------------------------------------------------------

class Bare(MemberBase):
    """A UNet called as the SD adapter calls it (the timestep second, positionally)."""
    family = "sd"

    def __init__(self, net):
        self.net, self.name = net, "bare"

    def __call__(self, x, t, cond):
        return Output(self.net(x, torch.as_tensor(t), encoder_hidden_states=cond, return_dict=False)[0])

    def condition(self, labels):
        return labels


def sd_like_unet():
    """SD 1.x's layout at toy width: three levels, two layers per block (three per up block), a mid block."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, block_out_channels=(8, 16, 16), layers_per_block=2,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=4,
                                norm_num_groups=8).eval().requires_grad_(False)


@pytest.mark.parametrize("interval", [2, 3])
def test_deepcache_matches_the_deepcache_package_call_by_call(interval):
    """Every branch of an SD-like UNet: each call equals the package's ``DeepCacheSDHelper`` on a pipeline stand-in
    whose scheduler has these timesteps; whole calls equal the plain UNet, the others do not."""
    from DeepCache import DeepCacheSDHelper

    net = sd_like_unet()
    ts = [901, 801, 701, 601, 501, 401, 301]
    g = torch.Generator().manual_seed(1)
    xs, cond = [torch.randn(2, 4, 8, 8, generator=g) for _ in ts], torch.randn(2, 16, 32, generator=g)
    plain = [Bare(net)(x, t, cond).eps for x, t in zip(xs, ts)]
    for branch in range(9):
        theirs, ours = copy.deepcopy(net), copy.deepcopy(net)
        helper = DeepCacheSDHelper(pipe=SimpleNamespace(unet=theirs, scheduler=SimpleNamespace(timesteps=ts)))
        helper.set_params(cache_interval=interval, cache_branch_id=branch)
        helper.enable()
        expected = [Bare(theirs)(x, t, cond).eps for x, t in zip(xs, ts)]
        member = accelerators.DeepCached(Bare(ours), interval, branch)
        got = [member(x, t, member.condition(cond) if c == 0 else cond).eps for c, (x, t) in enumerate(zip(xs, ts))]
        assert all(torch.equal(a, b) for a, b in zip(got, expected)), branch
        for c, (a, b) in enumerate(zip(got, plain)):
            assert torch.equal(a, b) if c % interval == 0 else relative(a, b) > 1e-3, (branch, c)


def counted(member):
    """Calls of a module inside the mid block (run only on whole calls), counted."""
    calls = []
    accelerators.unet_of(member).mid_block.resnets[0].register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_deepcache_runs_its_member_whole_every_interval_calls_per_batch_and_allocation(dirs):
    """On the large member only: of its 3 calls at 0.4 : 0.6, calls 0 and 2 run whole; a second batch and another
    allocation start afresh (the same samples again); the small member's UNet is untouched."""
    members = pair(dirs)
    plain = run(members)
    fast_members = fast.speed_up(members, deepcache={"interval": 2, "branch": 0, "members": ["large"]},
                                 names=["small", "large"])
    whole = counted(fast_members[1])
    first = run(fast_members)
    assert len(whole) == 2 and relative(first, plain) > 1e-3
    assert not any("forward" in vars(m) for m in accelerators.unet_of(members[0]).modules())
    alone = run(fast_members, (0.0, 1.0))
    assert len(whole) == 2 + 3  # 5 steps alone: calls 0, 2, 4
    again = run(fast_members)
    assert len(whole) == 7 and torch.equal(again, first)
    assert relative(alone, first) > 1e-3


def test_deepcache_starts_afresh_on_a_new_trajectory_without_a_new_condition(dirs):
    """A caller that conditions once and runs two trajectories gets the same outputs twice (the cache restarts at a
    timestep above the last call's), and a batch of another size runs whole."""
    member = fast.speed_up(pair(dirs)[1:], deepcache={"interval": 3, "members": [0]})[0]
    cond = member.condition(PROMPTS)
    x = noise()

    def trajectory(x):
        return [member(x, t, cond).eps for t in (900, 700, 500, 300)]

    first, second = trajectory(x), trajectory(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    whole = counted(member)
    member(x[:2], 100, {k: v[:2] for k, v in cond.items()})  # call 4 of this trajectory, a smaller batch
    assert whole == [1]


# --- ToMe -----------------------------------------------------------------------------------------------------------

def test_tome_is_tomesds_patch_on_the_named_member_with_draws_seeded_per_trajectory(dirs):
    """The large member's transformer blocks are tomesd's, the small member's not; the samples equal tomesd's patch
    with its generator seeded once, and a second batch gives them again (tomesd's own generator would go on)."""
    import tomesd

    members = pair(dirs)
    plain = run(members)
    merged = fast.speed_up(members, tome={"ratio": 0.5, "max_downsample": 1, "members": ["tiny-large"]})
    kinds = [{type(b).__name__ for b in accelerators.unet_of(m).modules() if "TransformerBlock" in type(b).__name__
              or "ToMe" in type(b).__name__} for m in members]
    assert kinds == [{"BasicTransformerBlock"}, {"ToMeBlock"}]
    first = run(merged)
    assert torch.equal(run(merged), first) and relative(first, plain) > 1e-5  # float32 round-off: ~1e-7
    reference = pair(dirs)
    unet = reference[1].net
    tomesd.apply_patch(unet, ratio=0.5, max_downsample=1)
    unet._tome_info["args"]["generator"] = torch.Generator().manual_seed(accelerators.TOME_SEED)
    assert torch.equal(run(reference), first)
    assert relative(run(reference), first) > 0  # its generator went on: another draw


# --- refusals -------------------------------------------------------------------------------------------------------

def test_accelerators_on_other_members_are_refused_in_one_line(dirs, tmp_path, in_process):
    toy = [zoo.load("toy/small"), zoo.load("toy/large")]
    with pytest.raises(ConfigError, match=r"fast.tome.members: toy-dit-large \(toy-dit-large\) is a dit model, but "
                                          r"ToMe for SD acts on Stable Diffusion UNets; set fast.tome.members to sd"):
        fast.speed_up(toy, tome={"ratio": 0.5, "members": [-1]})
    assert len(fast.speed_up(toy, tome={"ratio": 0.0}, deepcache={"interval": 1})) == 2  # off: anything goes
    sd = pair(dirs)
    with pytest.raises(ConfigError, match="'big' is no member of this stitch; name members by stitch key or zoo name "
                                          r"\(small \(tiny-small\), large \(tiny-large\)\) or position"):
        fast.speed_up(sd, deepcache={"interval": 3, "members": ["big"]}, names=["small", "large"])
    with pytest.raises(ConfigError, match="fast.deepcache and fast.graphs cannot be combined"):
        fast.speed_up(sd, graphs=True, deepcache={"interval": 3, "members": [1]})
    with pytest.raises(ConfigError, match=r"fast.deepcache.branch=6 is beyond tiny-large's UNet: its 2 down blocks"):
        fast.speed_up(sd, deepcache={"interval": 3, "branch": 6, "members": [1]})
    with pytest.raises(ConfigError, match=r"fast.tome.ratio=0.9 is not allowed: give a number in \[0, 0.75\]"):
        fast.speed_up(sd, tome={"ratio": 0.9})
    r = in_process("tstitch", "+debug=tiny", "fast=deepcache", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "tstitch: error: fast.deepcache.members: large (toy-dit-large) is a dit model"), r.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # refused before anything was written


# --- TAESD ----------------------------------------------------------------------------------------------------------

def tiny_autoencoder(seed=0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4).eval()


SD_SPACE = Space("sd-kl-f8", SHAPE, 0.18215)


def test_taesd_decodes_as_diffusers_autoencoder_tiny_from_a_directory(tmp_path, capsys):
    """A directory saved with ``save_pretrained`` is recognised by its config and decodes the members' latents as
    they are: the same pixels as ``AutoencoderTiny.decode`` (uint8 as every codec rounds), one warning line."""
    model = tiny_autoencoder()
    model.save_pretrained(tmp_path / "taesd")
    codec = load_codec(str(tmp_path / "taesd"), SD_SPACE)
    assert capsys.readouterr().err.count("warning: decoding with the tiny autoencoder") == 1
    z = noise() * 2
    with torch.no_grad():
        assert torch.equal(codec.decode(z), to_uint8(model.decode(z).sample))
        images = codec.decode(z)
        assert torch.equal(codec.encode(images), model.encode(images.float() / 127.5 - 1).latents)
    assert codec.source == str(tmp_path / "taesd") and codec.decode(z).shape == (3, 3, 16, 16)
    assert not taesd.is_tiny(tmp_path / "nothing")


def test_taesd_from_a_hub_id_in_the_cache_and_its_space(tmp_path, monkeypatch):
    """madebyollin/taesd from the hub cache (offline), checked against the members' space; an SD VAE stays an
    AutoencoderKL codec."""
    import huggingface_hub

    model = tiny_autoencoder(seed=1)
    repo, revision = tmp_path / "hub" / "models--madebyollin--taesd", "0" * 40
    model.save_pretrained(repo / "snapshots" / revision)  # the hub cache's layout, as a download leaves it
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    codec = load_codec("madebyollin/taesd", SD_SPACE)
    z = noise()
    with torch.no_grad():
        assert torch.equal(codec.decode(z), to_uint8(model.decode(z).sample))
    with pytest.raises(ConfigError, match="madebyollin/taesd decodes sd-kl-f8 latents, but the members' space is "
                                          "'sdxl-vae'; set codec to madebyollin/taesdxl"):
        load_codec("madebyollin/taesd", Space("sdxl-vae", SHAPE, 0.13025))


def test_an_sd_vae_is_not_taken_for_taesd(dirs):
    codec = load_codec({"source": str(dirs.large), "subfolder": "vae"}, SD_SPACE)
    assert type(codec.vae).__name__ == "AutoencoderKL" and not taesd.is_tiny(dirs.large, "vae")


# --- the run's identity ---------------------------------------------------------------------------------------------

def test_switches_and_taesd_are_part_of_a_runs_identity(tmp_path, in_process):
    """tstitch-generate with fast=deepcache and TAESD as the decoder: identity.json and the manifest name them, a
    resume with another DeepCache interval or with ToMe on is refused before any sample is made."""
    save_sd(tmp_path / "small", 32, seed=0)
    save_sd(tmp_path / "large", 48, seed=1)
    tiny_autoencoder().save_pretrained(tmp_path / "taesd")
    overrides = ["stitch=sd_bk_tiny_v1_4", "prompts=demo", "prompts.limit=2", "guidance.scale=7.5", "solver.steps=3",
                 "metric=none", "logger=none", "trainer=cpu", "num_samples=2", "batch_size=2", "timing.rounds=0",
                 "grid_columns=0", f"stitch.codec={tmp_path / 'taesd'}"]
    for name, width in (("small", 32), ("large", 48)):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={tmp_path / name}", f"{m}.net.cross_attention_dim={width}",
                      f"{m}.space.shape=[4,8,8]"]
    out = tmp_path / "run"
    r = in_process("tstitch-generate", *overrides, "fast=deepcache", f"hydra.run.dir={out}",
                   env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: decoding with the tiny autoencoder" in r.stderr
    record = json.loads((out / "identity.json").read_text())
    assert record["config"]["fast"]["deepcache"] == {"interval": 3, "branch": 0, "members": ["large"]}
    assert "tome" not in record["config"]["fast"]  # off: left out, so sets made before the switch existed resume
    assert record["decoder"]["spec"] == str(tmp_path / "taesd") and record["decoder"]["content"]
    assert json.loads((out / "manifest.json").read_text())["decoder"] == str(tmp_path / "taesd")
    with np.load(out / "samples.npz") as z:
        assert z["arr_0"].shape == (2, 16, 16, 3)
    for other, key in (("fast.deepcache.interval=2", "fast.deepcache.interval"), ("fast.tome.ratio=0.5",
                                                                                 "fast.tome")):
        r = in_process("tstitch-generate", *overrides, "fast=deepcache", other, f"hydra.run.dir={out}",
                       env={"HF_HUB_OFFLINE": "1"})
        assert r.returncode == 2 and f"differs in: {key}" in r.stderr, r.stderr[-2000:]
    r = in_process("tstitch-generate", *overrides, "fast=deepcache", "fast.tome.max_downsample=2",  # tome still off
                   "num_samples=3", f"hydra.run.dir={out}", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow  # dynamo's tracing: about 15 s each
@pytest.mark.parametrize("switch", ["deepcache", "tome"])
def test_accelerators_trace_the_same_under_torch_compile(switch):
    """torch.compile's tracing (dynamo, eager backend: no code generation) of a patched UNet gives every call of two
    trajectories exactly as the uncompiled one: the cached features and ToMe's draws survive its graphs."""
    net = sd_like_unet()
    ts, g = [901, 801, 701, 601, 501], torch.Generator().manual_seed(1)
    xs, cond = [torch.randn(2, 4, 8, 8, generator=g) for _ in ts], torch.randn(2, 16, 32, generator=g)
    compiled = Bare(copy.deepcopy(net))
    compiled.net = torch.compile(compiled.net, backend="eager", dynamic=False)
    made = {"deepcache": lambda m: accelerators.DeepCached(m, 2, 0), "tome": lambda m: accelerators.TokenMerged(m, 0.5)}
    eager, traced = made[switch](Bare(copy.deepcopy(net))), made[switch](compiled)
    for _ in range(2):
        eager.condition(cond), traced.condition(cond)
        assert all(torch.equal(eager(x, t, cond).eps, traced(x, t, cond).eps) for x, t in zip(xs, ts))
