"""LDM family (T-Stitch's LDM-S -> LDM, paper Table 1) against the official code, on tiny random models saved as the
official Lightning files: U-Net, class embedding, VQ decode and encode, CompVis's DDIM grid, the official switch rule,
and the whole stitched DDIM loop at LDM-S fractions 0, 0.4 and 1 with eta 0 and with given noise at eta 1.

The references are the official classes from PyPI: ``stable-diffusion-sdkit`` 2.1.5 (Stability's ``ldm`` package)
and ``taming-transformers-rom1504`` 0.0.6. Diffed against CompVis/latent-diffusion a506df5, whose files the
NVlabs/T-Stitch ``ldm/`` fork holds unchanged (``openaimodel.py``, ``attention.py``, ``model.py``, ``util.py``),
they differ only where these configs do not go: per-level ``num_res_blocks``, ``disable_self_attentions``,
``use_linear_in_transformer`` (off: ``SpatialTransformer`` projects with 1x1 convs), xformers attention (not
installed), ``ATTN_PRECISION=fp32`` (casts q and k to float32, a no-op in float32), the legacy head count (equal with
``num_head_channels``), and ``checkpoint``'s autocast (no gradients here). sdkit's ``ClassEmbedder`` adds label
dropout (``ucg_rate``, 0 here); its ``DDIMSampler`` equals T-Stitch's ``ldm/ldm/models/diffusion/ddim.py`` for list
conditions (T-Stitch's adds only a ``progress_bar`` flag; sdkit adds dict conditions and v-prediction, unused).
rom1504's ``VectorQuantizer2`` equals CompVis/taming-transformers 3ba01b2's. Not in these packages, so composed here
as the official files compose them: CompVis's ``VQModelInterface`` (``Encoder``, ``VectorQuantizer2``, 1x1 convs,
``Decoder``; SD 2 removed ``VQModel`` from sdkit), and T-Stitch's ``LatentDiffusion`` around two U-Nets
(``register_schedule``'s buffers, ``DiffusionWrapperMulti`` / ``TStitchProxy``: ``Official`` below), whose module
needs pytorch-lightning 1.x.

Randomness: the official script draws the unconditional inputs (``torch.rand_like``) and the DDIM noise from one
global generator per batch, which no per-sample scheme reproduces; here the draws of ``tstitch.sample`` (uniform
unconditional inputs from normal draws, then the step noise) are recorded and given to the official sampler.
"""
import json
from functools import partial

import numpy as np
import pytest
import torch
from ldm.models.diffusion import ddim as official_ddim
from ldm.modules.diffusionmodules.model import Decoder, Encoder
from ldm.modules.diffusionmodules.openaimodel import UNetModel
from ldm.modules.diffusionmodules.util import make_beta_schedule, make_ddim_sampling_parameters, make_ddim_timesteps
from ldm.modules.encoders.modules import ClassEmbedder as OfficialClassEmbedder
from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint
from taming.modules.vqvae.quantize import VectorQuantizer2

import tstitch
from tstitch.data.seeds import SeedNoise
from tstitch.errors import ConfigError
from tstitch.models import zoo
from tstitch.models.codecs import load_codec
from tstitch.models.nets.ldm import nearest_code, unet_config
from tstitch.models.protocols import Member, MemberBase, Space
from tstitch.models.schedules import Schedule
from tstitch.sampling.solvers.ldm_ddim import ldm_grid
from tstitch.sampling.stitch import plan

pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")  # sdkit on numpy 2
SCHEDULE = Schedule("scaled_linear", 1000, 0.0015, 0.0195)  # CompVis linear_start / linear_end of the T-Stitch yaml
SMALL = dict(image_size=16, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[4, 2, 1],
             num_res_blocks=1, channel_mult=[1, 2], num_head_channels=32, use_spatial_transformer=True,
             transformer_depth=1, context_dim=32)
LARGE = {**SMALL, "num_res_blocks": 2, "channel_mult": [1, 2, 2], "context_dim": 64}
DDCONFIG = dict(double_z=False, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                num_res_blocks=1, attn_resolutions=[16], dropout=0.0)  # attention at the lowest level, as vq-f8's
N_EMBED = 64


def official_unet(net, seed):
    """A CompVis UNetModel with every weight random (its zero-initialised output convs included)."""
    torch.manual_seed(seed)
    unet = UNetModel(**net).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    embedder = OfficialClassEmbedder(net["context_dim"], n_classes=1000, key="class_label", ucg_rate=0.0).eval()
    return unet, embedder


def schedule_buffers():
    """LatentDiffusion.register_schedule's buffers for the T-Stitch yaml (float32)."""
    betas = make_beta_schedule("linear", 1000, linear_start=0.0015, linear_end=0.0195)
    ac = np.cumprod(1.0 - betas, axis=0)
    to_torch = partial(torch.tensor, dtype=torch.float32)
    return {"betas": to_torch(betas), "alphas_cumprod": to_torch(ac), "alphas_cumprod_prev": to_torch(
        np.append(1.0, ac[:-1]))}


def lightning_file(path, unet, embedder, ema_offset=0.0, extra=None):
    """A LatentDiffusion checkpoint as PyTorch Lightning 1.4 wrote ldm_s.ckpt / ldm.ckpt: ``state_dict`` with the
    U-Net under model.diffusion_model, its EMA under model_ema (LitEma: names without dots), the ClassEmbedder under
    cond_stage_model, the schedule buffers; beside it callbacks keyed by the callback class and numpy scalars."""
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    sd |= {f"model_ema.diffusion_model{k.replace('.', '')}": v + ema_offset for k, v in unet.state_dict().items()}
    sd |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7, dtype=torch.int)}
    sd |= {f"cond_stage_model.{k}": v for k, v in embedder.state_dict().items()} | schedule_buffers() | (extra or {})
    torch.save({"state_dict": sd, "epoch": 3, "global_step": np.int64(200000), "pytorch-lightning_version": "1.4.2",
                "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1), "dirpath": "logs"}}}, path)
    return path


def entry(name, net, path, **more):
    """The zoo entry ``name`` at toy width, reading ``path``."""
    e = zoo.entry(name)
    e.update(net=net, embedder={"embed_dim": net["context_dim"], "n_classes": 1000}, checkpoint=str(path), **more)
    e["space"]["shape"] = [4, net["image_size"], net["image_size"]]
    return e


class OfficialVQ(torch.nn.Module):
    """CompVis ldm/models/autoencoder.py ``VQModelInterface``, composed from its parts (encode, decode)."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder, self.decoder = Encoder(**DDCONFIG), Decoder(**DDCONFIG)
        self.quantize = VectorQuantizer2(N_EMBED, 4, beta=0.25, remap=None, sane_index_shape=False)
        self.quant_conv, self.post_quant_conv = torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 4, 1)
        self.eval()

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, h):
        quant, _, _ = self.quantize(h)
        return self.decoder(self.post_quant_conv(quant))


def script_uint8(x):
    """sample_imagenet_ddp_t_stitch.py's pixels: clamp((x + 1) / 2, 0, 1) * 255 as uint8."""
    return (torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0) * 255.0).to(torch.uint8)


class Official:
    """T-Stitch's LatentDiffusion as DDIMSampler sees it: register_schedule's buffers, ``apply_model`` through
    DiffusionWrapperMulti (the condition of the member that runs) and TStitchProxy (its get_cur_idx)."""

    parameterization, device = "eps", torch.device("cpu")

    def __init__(self, unets, ratio):
        for k, v in schedule_buffers().items():
            setattr(self, k, v)
        self.num_timesteps, self.unets, self.ratio, self.calls = 1000, unets, ratio, [0, 0]

    def get_cur_idx(self, timesteps):
        return 0 if self.ratio == 1.0 or timesteps[0].item() / 1000 > (1 - self.ratio) else 1

    def apply_model(self, x, t, cond):
        k = self.get_cur_idx(t)
        self.calls[k] += 1
        return self.unets[k](x, timesteps=t, context=cond[k])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(official modules, our members) of a tiny LDM-S / LDM pair saved as the official files."""
    tmp = tmp_path_factory.mktemp("ldm")
    official = [official_unet(SMALL, 0), official_unet(LARGE, 1)]
    files = [lightning_file(tmp / f"{n}.ckpt", *o, ema_offset=0.01) for n, o in zip(("ldm_s", "ldm"), official)]
    members = [tstitch.load(entry(n, net, f)) for n, net, f in zip(("ldm/s", "ldm/b"), (SMALL, LARGE), files)]
    return official, members, files


@pytest.mark.parametrize("ema", [False, True])
def test_unet_and_class_embedding_are_the_official_ones(pair, ema):
    """The U-Net (diffusers' UNet2DConditionModel from the converted file) equals CompVis's UNetModel; with
    ``ema: true`` it is the LitEma copy. The condition is the official ClassEmbedder's."""
    official, members, files = pair
    (unet, embedder), member = official[1], members[1]
    if ema:
        member = tstitch.load(entry("ldm/b", LARGE, files[1], ema=True))
        unet = UNetModel(**LARGE).eval()
        unet.load_state_dict({k: v + 0.01 for k, v in official[1][0].state_dict().items()})
    y = torch.tensor([3, 999, 0])
    cond = member.condition(y)
    assert torch.equal(cond, embedder({"class_label": y}, disable_dropout=True))
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    for t in (991, 500, 1):
        with torch.no_grad():
            want = unet(x, timesteps=torch.full((3,), t), context=cond)
        assert torch.allclose(member(x, t, cond).eps, want, atol=2e-5), t
    assert sum(p.numel() for p in member.net.parameters()) == sum(p.numel() for p in unet.parameters())


def test_zoo_entries_have_the_official_sizes():
    """LDM-S and LDM as the zoo builds them: the parameter counts of CompVis's UNetModel at the T-Stitch yaml's
    configs (the paper's 25 M and 394 M), and the yaml's schedule."""
    from diffusers import UNet2DConditionModel

    for name, count in (("ldm/s", 25_386_692), ("ldm/b", 394_984_196)):
        net = zoo.entry(name)["net"]
        with torch.device("meta"):
            ours, theirs = UNet2DConditionModel(**unet_config(net)), UNetModel(**net)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == count
        assert Schedule(**zoo.entry(name)["schedule"]) == SCHEDULE
    assert np.allclose(SCHEDULE.alphas_cumprod, schedule_buffers()["alphas_cumprod"].double(), rtol=1e-6)
    assert Schedule("scaled_linear") == Schedule("scaled_linear", 1000, 0.00085, 0.012) != SCHEDULE  # ends filled in


def test_vq_decode_and_encode_are_compvis_vqmodel(tmp_path):
    """The VQ codec on a CompVis VQModel checkpoint (with its loss networks' weights, as vq-f8/model.ckpt): the
    codes are taming's, the decoded pixels CompVis's decoder's, rounded as the T-Stitch script; encode is the
    encoder and quant_conv. A LatentDiffusion file that carries the first stage decodes the same."""
    ref = OfficialVQ(0)
    sd = dict(ref.state_dict()) | {"loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4)}
    torch.save({"state_dict": sd, "callbacks": {ModelCheckpoint: {}}}, tmp_path / "model.ckpt")
    with pytest.raises(Exception, match="Weights only load failed"):  # the Lightning globals need the stand-ins
        torch.load(tmp_path / "model.ckpt", weights_only=True)
    space = Space("ldm-vq-f8", (4, 16, 16), 1.0, False)
    codec = load_codec({"kind": "vq", "source": str(tmp_path / "model.ckpt")}, space)
    z = 2 * torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        quant, _, (_, _, codes) = ref.quantize(z)
        want = ref.decode(z)
    assert torch.equal(nearest_code(z, ref.quantize.embedding.weight), quant) and len(codes.unique()) > N_EMBED // 2
    assert ((want > -1) & (want < 1)).float().mean() > 0.9  # pixels inside the range: the bytes below say something
    with torch.no_grad():  # before rounding: the same floats
        floats = codec.vae.decoder(codec.vae.post_quant_conv(nearest_code(z, codec.vae.quantize.embedding.weight)))
    assert torch.allclose(floats, want, atol=1e-5), (floats - want).abs().max()
    got = codec.decode(z)
    assert got.dtype == torch.uint8 and got.shape == (4, 3, 32, 32)
    assert (got.int() - script_uint8(want).int()).abs().max() <= 1  # float noise at a rounding edge, at most
    assert (got == script_uint8(want)).float().mean() > 0.999
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(codec.encode(images), ref.encode(images.float() / 127.5 - 1.0), atol=1e-5)
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in sd.items()}}, tmp_path / "ldm.ckpt")
    assert torch.equal(load_codec({"kind": "vq", "source": str(tmp_path / "ldm.ckpt")}, space).decode(z), got)
    with pytest.raises(ConfigError, match=r"^codec\.scaling_factor is not a key of a vq codec"):
        load_codec({"kind": "vq", "source": str(tmp_path / "model.ckpt"), "scaling_factor": 0.2}, space)


def test_grid_is_compvis_ddim_and_the_official_rule_is_tstitch_proxy():
    """ldm_ddim's grid: make_ddim_timesteps("uniform") in descending order, alpha-bars of DDIMSampler (ending at
    alpha-bar(0)), more steps than asked where T // steps does not divide T; the official rule is TStitchProxy's."""
    for steps in (100, 30, 7):
        grid = ldm_grid(SCHEDULE, steps)
        official = make_ddim_timesteps("uniform", steps, 1000, verbose=False)
        assert grid.timesteps == official[::-1].tolist() and grid.step == list(range(len(official)))
        _, a, a_prev = make_ddim_sampling_parameters(schedule_buffers()["alphas_cumprod"], official, 1.0, False)
        assert np.allclose(grid.abar[:-1], a.numpy()[::-1], rtol=1e-6)
        assert np.allclose(grid.abar[1:], a_prev[::-1], rtol=1e-6) and grid.abar[-1] == SCHEDULE.alphas_cumprod[0]
        for ratio in [k / 10 for k in range(11)] + [1 - t / 1000 for t in grid.timesteps]:  # and t / T = 1 - r
            model = Official(None, ratio)
            want = [model.get_cur_idx(torch.tensor([t])) for t in grid.timesteps]
            assert plan([ratio, 1 - ratio], grid.timesteps, "official", 1000, strict=True) == want
    assert ldm_grid(SCHEDULE, 100).timesteps[:2] == [991, 981] and len(ldm_grid(SCHEDULE, 30).timesteps) == 31
    with pytest.raises(ConfigError, match=r"give an integer in \[1, 500\]"):
        ldm_grid(SCHEDULE, 501)


class Recorder:
    """``randn_like`` from one generator, keeping every draw in order (the unconditional inputs, then the noise)."""

    def __init__(self, seed):
        self.g, self.draws = torch.Generator().manual_seed(seed), []

    def __call__(self, x):
        self.draws.append(torch.randn(x.shape, generator=self.g))
        return self.draws[-1]


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("fraction", [0.0, 0.4, 1.0])
def test_stitched_sampling_is_the_official_ddim_sampler(pair, monkeypatch, fraction, eta):
    """tstitch.sample with rule=official and ldm_ddim equals DDIMSampler on T-Stitch's two-U-Net LatentDiffusion
    (cfg 3.0, each member's uniform unconditional input), given the same unconditional inputs and noise."""
    (small, large), members, _ = pair
    steps, n = 10, 3
    x = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([5, 640, 999])
    rec = Recorder(4)
    out = tstitch.sample(members, x, y, fractions=[fraction, 1 - fraction], solver="ldm_ddim", steps=steps,
                         guidance=3.0, rule="official", randn_like=rec, eta=eta)
    uc = [torch.special.ndtr(d) for d in rec.draws[:2]]
    assert [u.shape for u in uc] == [(n, 1, 32), (n, 1, 64)] and 0 < min(float(u.min()) for u in uc)
    noise = iter(rec.draws[2:])
    assert len(rec.draws[2:]) == (steps if eta else 0)  # eta 1: every step adds noise, the last one too
    monkeypatch.setattr(official_ddim, "noise_like", lambda shape, device, repeat=False: next(noise, torch.zeros(
        shape)))
    model = Official([small[0], large[0]], fraction)
    c = [small[1]({"class_label": y}, disable_dropout=True), large[1]({"class_label": y}, disable_dropout=True)]
    with torch.no_grad():
        want, _ = official_ddim.DDIMSampler(model).sample(S=steps, batch_size=n, shape=[4, 16, 16], conditioning=c,
                                                           verbose=False, unconditional_guidance_scale=3.0,
                                                           unconditional_conditioning=uc, eta=eta, x_T=x)
    assert out.nfe == model.calls == [round(steps * fraction), steps - round(steps * fraction)]
    assert (out.x - want).abs().max() < 1e-5 * want.abs().max()  # float32 rounding (samples reach ~60 here)


def test_unconditional_input_is_uniform_and_each_samples_own(pair):
    """null(cond, randn_like) is uniform on (0, 1), drawn from each sample's generator: seed 7's input and
    image are the same alone and in a batch."""
    members = pair[1]
    cond = members[0].condition(torch.tensor([1] * 256))
    u = members[0].null(cond, SeedNoise(range(256)).randn_like)
    assert u.shape == cond.shape and 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1 / 12) < 0.002

    def image(seeds):
        rng = SeedNoise(seeds)
        x = rng.randn((4, 16, 16))
        return tstitch.sample(members, x, torch.tensor([9] * len(seeds)), fractions=[0.4, 0.6], solver="ldm_ddim",
                              steps=5, guidance=3.0, randn_like=rng.randn_like).x

    both, alone = image([3, 7]), image([7])[0]
    assert (both[1] - alone).abs().max() < 1e-5 * alone.abs().max() < (both[0] - alone).abs().max()


def test_member_protocol_and_refusals(pair, tmp_path):
    """The LDM member keeps the protocol (its class embedder is its encoder); bad labels, entries and files are
    one ConfigError line each."""
    _, members, files = pair
    m = members[0]
    assert isinstance(m, Member) and isinstance(m, MemberBase) and m.family == "ldm" and m.null_draws
    assert m.encoder is not None and m.num_classes == 1000 and m.space.name == "ldm-vq-f8"
    assert m.sampler == {"solver": "ldm_ddim", "steps": 100, "guidance": 3.0}
    with pytest.raises(ConfigError, match=r"class labels must be in \[0, 1000\)"):
        m.condition(torch.tensor([1000]))
    bad = [({"net": {**SMALL, "use_linear_in_transformer": True}}, "unknown"),
           ({"net": {**SMALL, "use_scale_shift_norm": True}}, "is not supported"),
           ({"embedder": {"embed_dim": 16, "n_classes": 1000}}, "embedder must be"),
           ({"ema": "yes"}, "ema='yes' is not allowed"),
           ({"schedule": {"name": "linear", "num_timesteps": 1000}}, "another noise schedule"),
           ({"schedule": {"name": "cosine", "num_timesteps": 1000, "beta_start": 0.0015}}, "takes no beta_start"),
           ({"net": LARGE, "embedder": {"embed_dim": 64, "n_classes": 1000}}, "does not fit")]
    for change, message in bad:
        e = entry("ldm/s", SMALL, files[0])
        e.update(change)
        with pytest.raises(ConfigError, match=message):
            tstitch.load(e)
    unet, embedder = official_unet(SMALL, 0)
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}},
               tmp_path / "no_ema.ckpt")
    with pytest.raises(ConfigError, match="no EMA copy"):
        tstitch.load(entry("ldm/s", SMALL, tmp_path / "no_ema.ckpt", ema=True))


def test_pipeline_samples_with_the_official_settings(pair, tmp_path):
    """tstitch.pipeline on LDM members defaults to their family's sampler (ldm_ddim, 100 steps, eta 1, cfg 3.0)
    and decodes with the entry's VQ codec into images."""
    torch.save({"state_dict": OfficialVQ(3).state_dict()}, tmp_path / "vq.ckpt")
    codec = {"kind": "vq", "source": str(tmp_path / "vq.ckpt")}
    specs = [entry(n, net, f, codec=codec) for n, net, f in zip(("ldm/s", "ldm/b"), (SMALL, LARGE), pair[2])]
    pipe = tstitch.pipeline(specs, fractions=[0.4, 0.6], steps=5)
    assert {k: pipe.options[k] for k in ("solver", "guidance", "steps")} == {"solver": "ldm_ddim", "guidance": 3.0,
                                                                             "steps": 5}
    images = pipe([207, 1], seeds=[0, 1])
    assert [im.size for im in images] == [(32, 32)] * 2 and pipe.result.nfe == [2, 3]
    assert pipe.result.timesteps == [801, 601, 401, 201, 1]


def test_table_1_runs_on_tiny_official_format_weights(tmp_path, in_process):
    """experiment=ldm_s_ldm end to end on CPU: tiny LDM-S / LDM saved as the official Lightning files, a tiny
    VQ first stage, two allocations of Table 1's sweep; the report puts the paper's FID-5K beside them."""
    tiny = []
    for k, (member, net) in enumerate((("small", SMALL), ("large", LARGE))):
        net = {**net, "image_size": 8}
        lightning_file(tmp_path / f"{member}.ckpt", *official_unet(net, k))
        m = f"stitch.members.{member}"
        tiny += [f"{m}.net.{key}={json.dumps(net[key]).replace(' ', '')}" for key in
                 ("image_size", "model_channels", "num_res_blocks", "channel_mult", "context_dim")]
        tiny += [f"{m}.embedder.embed_dim={net['context_dim']}", f"{m}.checkpoint={tmp_path / member}.ckpt",
                 f"{m}.space.shape=[4,8,8]"]
    torch.save({"state_dict": OfficialVQ(2).state_dict()}, tmp_path / "vq.ckpt")
    r = in_process("tstitch-generate", "-m", "experiment=ldm_s_ldm", *tiny,
                   f"stitch.codec={{kind:vq,source:{tmp_path / 'vq.ckpt'}}}", "trainer=cpu", "metric=none",
                   "logger=none", "num_samples=2", "batch_size=2", "solver.steps=4",
                   "stitch.fractions=[0.0,1.0],[0.5,0.5]", f"hydra.sweep.dir={tmp_path / 'runs'}")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "runs" / "1" / "manifest.json").read_text())
    assert manifest["config"]["guidance"]["scale"] == 3.0 and manifest["decoder"] == str(tmp_path / "vq.ckpt")
    r = in_process("tstitch-report", f"runs={tmp_path / 'runs'}", f"out={tmp_path / 'report'}")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (tmp_path / "report" / "results.md").read_text().splitlines()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert lines[0].endswith("| paper FID-5K (Table 1) |")
    # CompVis's grid at 4 steps is t = 751, 501, 251, 1: LDM-S while t / 1000 > 0.5 runs two
    assert [(row[0], row[1], row[-1]) for row in rows] == [("0 : 1", "0 : 4", "20.11"), ("0.5 : 0.5", "2 : 2", "19.33")]
