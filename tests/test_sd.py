"""Stable Diffusion family: tiny random SD-1, SD-2-style (v-prediction), SDXL and LCM models saved as diffusers
pipelines with ``save_pretrained`` and loaded through ``tstitch.load`` as users do; each member encodes prompts
with its own text encoder, conditions, null conditions and whole samples match diffusers' own pipelines, stitching
(two widths, three members, [0, 1]), refusals and one-line errors; every sd yaml composes."""
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tstitch
from tstitch.cli import CONF
from tstitch.data.seeds import SeedNoise
from tstitch.errors import ConfigError
from tstitch.models import fast, zoo
from tstitch.models.protocols import Space
from tstitch.models.schedules import Schedule
from tstitch.sampling.stitch import check_compatible

PROMPTS = ["a cat", "two red boats", "a tree"]
SD_SCALE, XL_SCALE = 0.18215, 0.13025
SHAPE = (4, 8, 8)  # latents; the tiny VAE downsamples 2x, so images are 16x16
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


pytestmark = pytest.mark.usefixtures("diffusers_quiet")


def vocab():
    """A byte-level CLIP vocabulary without merges: every character is a token (514 ids)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    v = {c: i for i, c in enumerate(chars)}
    v.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    v["<|startoftext|>"], v["<|endoftext|>"] = len(v), len(v) + 1
    return v


def tokenizer(max_length=16):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=vocab(), merges=[], model_max_length=max_length)


def write_hub_tokenizer(folder, max_length=16):
    """The files a hub SD repo's tokenizer/ holds (vocab.json, merges.txt, tokenizer_config.json)."""
    for f in Path(folder).iterdir():
        f.unlink()
    (folder / "vocab.json").write_text(json.dumps(vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length,
                                                              "tokenizer_class": "CLIPTokenizer"}))


def text_encoder(width, projection=None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=514, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=16, bos_token_id=512, eos_token_id=513,
                            pad_token_id=513, projection_dim=projection or width)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def vae(scale):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                         norm_num_groups=8, sample_size=16, scaling_factor=scale)


def unet(cross, **kwargs):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross,
                                attention_head_dim=4, norm_num_groups=8, **kwargs)


def save_sd(root, width, seed, prediction_type="epsilon", hub_tokenizer=False, **unet_kwargs):
    """A tiny SD-1/2-like StableDiffusionPipeline (scheduler config as SD's: PNDM, leading, steps_offset 1)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(vae=vae(SD_SCALE), text_encoder=text_encoder(width), tokenizer=tokenizer(),
                                   unet=unet(width, **unet_kwargs), safety_checker=None, feature_extractor=None,
                                   scheduler=PNDMScheduler(**BETAS, prediction_type=prediction_type, steps_offset=1,
                                                           skip_prk_steps=True),
                                   requires_safety_checker=False)
    pipe.save_pretrained(root)
    if hub_tokenizer:
        write_hub_tokenizer(root / "tokenizer")
    return root


def save_sdxl(root, seed=5):
    """A tiny SDXL-like pipeline: text encoders 16 + 32 wide (the second projects to 16), text_time conditioning;
    the scheduler config as SDXL base ships it (Euler, "leading" spacing, steps_offset 1)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    net = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                               layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                               use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=4,
                               projection_class_embeddings_input_dim=6 * 4 + 16, cross_attention_dim=48,
                               norm_num_groups=8)
    pipe = StableDiffusionXLPipeline(vae=vae(XL_SCALE), text_encoder=text_encoder(16), tokenizer=tokenizer(),
                                     text_encoder_2=text_encoder(32, projection=16), tokenizer_2=tokenizer(), unet=net,
                                     scheduler=EulerDiscreteScheduler(**BETAS, steps_offset=1,
                                                                      timestep_spacing="leading"))
    pipe.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    return SimpleNamespace(
        small=save_sd(root / "small", 32, seed=0),
        large=save_sd(root / "large", 48, seed=1, hub_tokenizer=True),  # wider text encoder, hub tokenizer files
        v=save_sd(root / "v", 32, seed=2, prediction_type="v_prediction"),
        lcm=save_sd(root / "lcm", 32, seed=3, time_cond_proj_dim=8),
        xl=save_sdxl(root / "xl"),
        xl2=save_sdxl(root / "xl2", seed=6),
    )


def entry(path, name="tiny-sd", space="sd-kl-f8", scale=SD_SCALE, **extra):
    return {"name": name, "family": "sd", "checkpoint": str(path), "net": extra.pop("net", {"in_channels": 4}),
            "schedule": {"name": "scaled_linear", "num_timesteps": 1000},
            "space": {"name": space, "shape": list(SHAPE), "scale": scale},
            "codec": {"source": str(path), "subfolder": "vae"}, **extra}


@pytest.fixture(scope="module")
def members(dirs):
    return SimpleNamespace(
        small=zoo.load(entry(dirs.small, "tiny-small", net={"cross_attention_dim": 32})),
        large=zoo.load(entry(dirs.large, "tiny-large", net={"cross_attention_dim": 48})),
        v=zoo.load(entry(dirs.v, "tiny-v")),
        lcm=zoo.load(entry(dirs.lcm, "tiny-lcm", embedded_guidance=8.0, net={"time_cond_proj_dim": 8})),
        xl=zoo.load(entry(dirs.xl, "tiny-xl", space="sdxl-vae", scale=XL_SCALE,
                          net={"addition_embed_type": "text_time"})),
    )


def noise(n=None):
    n = len(PROMPTS) if n is None else n
    return SeedNoise(range(n)).randn(SHAPE)


def pipeline(cls, path, scheduler=None, **config):
    """The diffusers pipeline of ``path`` as a user loads it (``from_pretrained``: the scheduler it ships, as the
    pipeline fixes it); ``scheduler`` swaps the class the model-card way, ``XScheduler.from_pretrained(path,
    subfolder="scheduler")``, and ``config`` then changes keys of the pipeline's scheduler config. (Not
    ``from_config(pipe.scheduler.config, **config)``: that drops the keys the file left at their defaults, so it
    would undo the pipeline's ``clip_sample`` fix of a DDIM made from SD's PNDM config.)"""
    import diffusers

    swap = {} if not scheduler else {"scheduler": getattr(diffusers, scheduler).from_pretrained(path,
                                                                                                subfolder="scheduler")}
    pipe = cls.from_pretrained(path, **swap)
    if config:
        current = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}
        pipe.scheduler = type(pipe.scheduler).from_config({**current, **config})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def relative(a, b):
    return float((a - b).norm() / b.norm())


# --- members: conditions and predictions as diffusers computes them ------------------------------------------------

def test_sd_member_conditions_are_the_pipelines(dirs, members):
    """Conditions equal StableDiffusionPipeline.encode_prompt (each member its own encoder); the member carries the
    scheduler its checkpoint ships, with the pipeline that loads it."""
    from diffusers import StableDiffusionPipeline

    m = members.large
    cond, uncond = pipeline(StableDiffusionPipeline, dirs.large).encode_prompt(PROMPTS, "cpu", 1, True)
    ours = m.condition(PROMPTS)
    assert set(ours) == {"encoder_hidden_states"} and ours["encoder_hidden_states"].shape == (3, 16, 48)
    assert torch.equal(ours["encoder_hidden_states"], cond)
    assert torch.allclose(m.null(ours)["encoder_hidden_states"], uncond, atol=1e-6)
    assert m.family == "sd" and m.cfg_channels is None and m.num_classes is None and m.prediction_type == "epsilon"
    assert len(m.encoder) == 1 and len(members.xl.encoder) == 2
    shipped = m.scheduler_config
    assert (shipped["_class_name"], shipped["_pipeline"], shipped["skip_prk_steps"], shipped["steps_offset"]) == (
        "PNDMScheduler", "StableDiffusionPipeline", True, 1)
    assert members.xl.scheduler_config["_pipeline"] == "StableDiffusionXLPipeline"


def test_sdxl_member_conditions_are_the_pipelines(dirs, members):
    """Both encoders' penultimate states, the pooled embedding, time ids for 16x16 images, zeros as null condition."""
    from diffusers import StableDiffusionXLPipeline

    m = members.xl
    cond, uncond, pooled, uncond_pooled = pipeline(StableDiffusionXLPipeline, dirs.xl).encode_prompt(
        PROMPTS, device="cpu", do_classifier_free_guidance=True)
    ours, null = m.condition(PROMPTS), m.null(m.condition(PROMPTS))
    assert torch.equal(ours["encoder_hidden_states"], cond) and ours["encoder_hidden_states"].shape == (3, 16, 48)
    assert torch.equal(ours["added_cond_kwargs"]["text_embeds"], pooled) and pooled.shape == (3, 16)
    assert ours["added_cond_kwargs"]["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 3
    assert torch.equal(null["encoder_hidden_states"], uncond) and not uncond.any()  # force_zeros_for_empty_prompt
    assert torch.equal(null["added_cond_kwargs"]["text_embeds"], uncond_pooled)
    assert m.space == Space("sdxl-vae", SHAPE, XL_SCALE)


# --- one member alone = the diffusers pipeline, on the scheduler's own grid -----------------------------------------

# every deterministic scheduler diffusers ships for these models; each test directory ships it with its DEFAULT
# config (the models' betas aside), which the pipeline fixes as it loads it (StableDiffusionPipeline: steps_offset 1,
# clip_sample off; DDIM's default is steps_offset 0, PNDM's is Runge-Kutta warm-up steps)
SCHEDULERS = ["DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
              "UniPCMultistepScheduler", "DEISMultistepScheduler", "HeunDiscreteScheduler", "LCMScheduler",
              "LMSDiscreteScheduler"]
STEPS = 6  # PNDM's Runge-Kutta warm-up needs 4 or more


@pytest.fixture(scope="module")
def shipping(dirs, tmp_path_factory):
    """``shipping(kind, name)``: the tiny ``kind`` ("sd" or "xl") model re-saved with ``name``'s default config."""
    import diffusers

    root, made = tmp_path_factory.mktemp("shipping"), {}

    def get(kind, name):
        if (kind, name) not in made:
            cls = diffusers.StableDiffusionXLPipeline if kind == "xl" else diffusers.StableDiffusionPipeline
            pipe = cls.from_pretrained(dirs.xl if kind == "xl" else dirs.large)
            pipe.scheduler = getattr(diffusers, name)(**BETAS)  # assigned, so not fixed before saving
            pipe.save_pretrained(root / f"{kind}-{name}")
            made[kind, name] = root / f"{kind}-{name}"
        return made[kind, name]

    return get


def alone(kind, path, **options):
    """One member alone on solver=scheduler, from the per-seed noise of seeds 0, 1, 2; returns the result."""
    e = entry(path, "tiny-xl", space="sdxl-vae", scale=XL_SCALE) if kind == "xl" else entry(path, "tiny")
    rng = SeedNoise(range(3))
    return tstitch.sample([zoo.load(e)], rng.randn(SHAPE), PROMPTS, solver="scheduler", steps=STEPS,
                          guidance=GUIDANCE[kind], randn_like=rng.randn_like, **options)


def pipeline_latents(pipe, kind, steps=STEPS, **call):
    rng = SeedNoise(range(3))  # the same per-seed noise; its generators continue as ours do
    size = {"height": 16, "width": 16} if kind == "xl" else {}
    return pipe(PROMPTS, num_inference_steps=steps, guidance_scale=GUIDANCE[kind], latents=rng.randn(SHAPE),
                generator=rng.generators, output_type="latent", **size, **call).images


GUIDANCE = {"sd": 7.5, "xl": 5.0}
PIPELINES = {"sd": "StableDiffusionPipeline", "xl": "StableDiffusionXLPipeline"}


@pytest.mark.parametrize("kind", ["sd", "xl"])
@pytest.mark.parametrize("name", SCHEDULERS)
def test_one_member_is_the_pipeline_with_the_scheduler_it_ships(shipping, kind, name):
    """solver=scheduler, no options: the shipped scheduler as the pipeline loads it, on its own grid; the latents
    equal the pipeline's (float32, relative L2 <= 1e-5) and the member runs one model call per pipeline iteration."""
    import diffusers

    path = shipping(kind, name)
    pipe = pipeline(getattr(diffusers, PIPELINES[kind]), path)
    assert type(pipe.scheduler).__name__ == name
    if name == "DDIMScheduler":  # DDIM's default steps_offset 0: StableDiffusionPipeline makes it 1, SDXL's keeps it
        assert json.loads((path / "scheduler" / "scheduler_config.json").read_text())["steps_offset"] == 0
        assert pipe.scheduler.config.steps_offset == (1 if kind == "sd" else 0)
    expected = pipeline_latents(pipe, kind)
    got = alone(kind, path)
    assert relative(got.x, expected) <= 1e-5
    assert got.nfe == [len(pipe.scheduler.timesteps)] and got.timesteps == [
        int(t) if float(t).is_integer() else float(t) for t in pipe.scheduler.timesteps.tolist()]


@pytest.mark.parametrize("kind", ["sd", "xl"])
@pytest.mark.parametrize("name,config", [
    ("EulerDiscreteScheduler", {}),  # the model card's way to swap: EulerDiscreteScheduler.from_pretrained(...)
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),  # Karras sigmas, timesteps rounded
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),  # Karras sigmas at fractional timesteps
    ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    ("HeunDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("PNDMScheduler", {"skip_prk_steps": False}),
])
def test_scheduler_name_and_config_overrides_are_the_pipelines(dirs, kind, name, config):
    """solver.options.scheduler swaps the class keeping the shipped config; solver.options.config overrides keys,
    as ``from_config(pipe.scheduler.config, **config)``."""
    import diffusers

    path = dirs.xl if kind == "xl" else dirs.large
    pipe = pipeline(getattr(diffusers, PIPELINES[kind]), path, name, **config)
    got = alone(kind, path, scheduler=name, config=config)
    assert relative(got.x, pipeline_latents(pipe, kind)) <= 1e-5 and got.nfe == [len(pipe.scheduler.timesteps)]
    if name == "EulerDiscreteScheduler" and config:
        assert not all(float(t).is_integer() for t in got.timesteps)


@pytest.mark.parametrize("name,call", [("EulerAncestralDiscreteScheduler", {}), ("DDPMScheduler", {}),
                                       ("TCDScheduler", {"eta": 0.3}), ("LCMScheduler", {})])
def test_stochastic_schedulers_draw_each_images_noise_from_its_seed(dirs, name, call):
    """The scheduler's noise comes from each image's generator (diffusers' generator list, as a pipeline given one
    generator per image): equal to the pipeline, and an image is the same batched or alone."""
    from diffusers import StableDiffusionPipeline

    pipe = pipeline(StableDiffusionPipeline, dirs.large, name)
    got = alone("sd", dirs.large, scheduler=name, **call)
    assert relative(got.x, pipeline_latents(pipe, "sd", **call)) <= 1e-5
    rng = SeedNoise([1])
    one = tstitch.sample([zoo.load(entry(dirs.large))], rng.randn(SHAPE), PROMPTS[1:2], solver="scheduler",
                         steps=STEPS, guidance=7.5, randn_like=rng.randn_like, scheduler=name, **call).x
    assert relative(one, got.x[1:2]) <= 1e-5
    rng = SeedNoise(range(3))  # other draws from the same seeds: another image
    other = tstitch.sample([zoo.load(entry(dirs.large))], rng.randn(SHAPE), PROMPTS, solver="scheduler",
                           steps=STEPS, guidance=7.5, scheduler=name, **call).x
    assert relative(other, got.x) > 1e-3


def test_lcm_member_with_its_scheduler_is_the_pipeline(dirs, members):
    """An LCM UNet (guidance embedded, no CFG) on LCMScheduler, 4 steps, equals StableDiffusionPipeline's."""
    from diffusers import StableDiffusionPipeline

    pipe = pipeline(StableDiffusionPipeline, dirs.lcm, "LCMScheduler")
    rng = SeedNoise(range(3))
    got = tstitch.sample([members.lcm], rng.randn(SHAPE), PROMPTS, solver="scheduler", steps=4, guidance=8.0,
                         randn_like=rng.randn_like, scheduler="LCMScheduler")
    rng = SeedNoise(range(3))
    expected = pipe(PROMPTS, num_inference_steps=4, guidance_scale=8.0, latents=rng.randn(SHAPE),
                    generator=rng.generators, output_type="latent").images
    assert relative(got.x, expected) <= 1e-5 and got.nfe == [4]
    # an entry's scheduler names the class to run on its checkpoint's config (LCM-SDXL: LCMScheduler on SDXL's)
    named = zoo.load(entry(dirs.lcm, "tiny-lcm", embedded_guidance=8.0, net={"time_cond_proj_dim": 8},
                           scheduler="LCMScheduler"))
    assert named.scheduler_config["_class_name"] == "LCMScheduler" and named.scheduler_config["skip_prk_steps"]
    rng = SeedNoise(range(3))
    by_entry = tstitch.sample([named], rng.randn(SHAPE), PROMPTS, solver="scheduler", steps=4, guidance=8.0,
                              randn_like=rng.randn_like)
    assert torch.equal(by_entry.x, got.x) and by_entry.timesteps == [999, 759, 499, 259]


def test_lcm_member_gets_its_timestep_cond(dirs, members):
    """An LCM UNet gets diffusers' guidance embedding of w - 1 as timestep_cond, and is not CFG-guided."""
    from diffusers import LatentConsistencyModelPipeline

    m = members.lcm
    cond = m.condition(PROMPTS)
    w_embedding = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.tensor([7.0] * 3), 8)
    assert torch.equal(cond["timestep_cond"], w_embedding) and cond["timestep_cond"].shape == (3, 8)
    x = noise()
    with torch.no_grad():
        raw = m.net(x, 500, encoder_hidden_states=cond["encoder_hidden_states"], timestep_cond=w_embedding).sample
        without = m.net(x, 500, encoder_hidden_states=cond["encoder_hidden_states"]).sample
        assert torch.equal(m(x, 500, cond).eps, raw) and not torch.allclose(raw, without)
    assert m.null(cond) is cond  # its guidance is embedded: CFG leaves its prediction unchanged
    guided = tstitch.sample([m], x, PROMPTS, steps=4, guidance=7.5).x
    assert torch.allclose(guided, tstitch.sample([m], x, PROMPTS, steps=4).x, atol=1e-5)
    with pytest.raises(ConfigError, match="LCM UNet .* set the zoo entry's embedded_guidance"):
        zoo.load(entry(dirs.lcm))
    with pytest.raises(ConfigError, match="not an LCM"):
        zoo.load(entry(dirs.small, embedded_guidance=8.0))


def test_v_prediction_and_float_timesteps(members):
    """v-prediction (read from the scheduler config) becomes eps = sqrt(a) v + sqrt(1 - a) x; a float t is passed
    to the UNet as is, and an integral float gives the int's prediction exactly."""
    m, x = members.v, noise()
    cond = m.condition(PROMPTS)
    assert m.prediction_type == "v_prediction"
    a = float(m.schedule.alphas_cumprod[500])
    with torch.no_grad():
        v = m.net(x, torch.tensor(500), encoder_hidden_states=cond["encoder_hidden_states"]).sample
        assert torch.allclose(m(x, 500, cond).eps, a ** 0.5 * v + (1 - a) ** 0.5 * x, atol=1e-6)
        assert torch.equal(m(x, 500.0, cond).eps, m(x, 500, cond).eps)
        half = m(x, 500.5, cond).eps
    assert torch.isfinite(half).all() and not torch.equal(half, m(x, 500, cond).eps)
    assert m.schedule.abar_at(500) > m.schedule.abar_at(500.5) > m.schedule.abar_at(501)


def test_moving_net_and_encoder_moves_the_whole_member(dirs):
    """The engine hands ``member.net`` and ``member.encoder`` to Lightning, which moves them: conditions and fixed
    tensors follow."""
    m = zoo.load(entry(dirs.xl, "tiny-xl", space="sdxl-vae", scale=XL_SCALE))
    m.net.to(torch.float64)
    m.encoder.to(torch.float64)
    cond = m.condition(PROMPTS)
    assert cond["added_cond_kwargs"]["time_ids"].dtype == torch.float64 == m.null(cond)["encoder_hidden_states"].dtype
    out = tstitch.sample([m], noise(), PROMPTS, steps=2, guidance=5.0).x
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_fast_paths_act_on_the_unet_and_offload_leaves_the_text_encoders(dirs, members):
    """``member.net`` is the UNet that each step runs (what ``fast`` compiles, converts and offloads); with
    ``fast.offload`` the text encoders go to the device and stay there, and samples are unchanged."""
    calls = []
    hook = members.large.net.register_forward_pre_hook(lambda *_: calls.append(1))
    plain = tstitch.sample([members.small, members.large], noise(), PROMPTS, fractions=[0.5, 0.5], steps=4,
                           guidance=7.5).x
    hook.remove()
    assert len(calls) == 2
    offloaded = fast.speed_up([members.small, members.large], "cpu", offload=True)
    out = tstitch.sample(offloaded, noise(), PROMPTS, fractions=[0.5, 0.5], steps=4, guidance=7.5).x
    assert torch.equal(out, plain)
    (m,) = fast.speed_up([zoo.load(entry(dirs.small, "tiny-small"))], "meta", offload=True)
    assert {p.device.type for p in m.encoder.parameters()} == {"meta"}
    assert {p.device.type for p in m.net.parameters()} == {"cpu"}


# --- stitching ------------------------------------------------------------------------------------------------------

def _cat(a, b):
    return {k: _cat(a[k], b[k]) for k in a} if isinstance(a, dict) else torch.cat([a, b])


def plain_loop(members, scheduler, steps, guidance, owner):
    """The official SD pipelines' loop (TStitchSD.__call__) written out: the scheduler's own timesteps, the member
    ``owner(i, scheduler)`` at loop index i (read before its step), guidance on the doubled batch (the unconditional
    half first); each member with its own prompt encoding (TStitchSD fed the large model's to both)."""
    scheduler.set_timesteps(steps)
    x = noise() * scheduler.init_noise_sigma
    conds = [_cat(m.null(c), c) for m, c in ((m, m.condition(PROMPTS)) for m in members)]
    calls = [0] * len(members)
    for i, t in enumerate(scheduler.timesteps):
        k = owner(i, scheduler)
        calls[k] += 1
        eps_u, eps_c = members[k](scheduler.scale_model_input(torch.cat([x, x]), t), t, conds[k]).eps.chunk(2)
        x = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
    return x, calls


def by_steps(first):
    """Member 0 for the first ``first`` steps, where a step starts at each call the scheduler begins one with:
    not Heun's correction call (``state_in_first_order`` false), not PLMS's warm-up second call (``counter`` 1)."""
    state = {"step": -1}

    def owner(i, s):
        starts = getattr(s, "state_in_first_order", True) and not (hasattr(s, "ets") and s.counter == 1)
        state["step"] += bool(starts)
        return 0 if state["step"] < first else 1

    return owner


@pytest.mark.parametrize("r", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("kind,steps", [("sd", 50), ("xl", 6)])
def test_stitched_run_is_the_official_loop(dirs, members, kind, steps, r):
    """rule=official on the shipped scheduler's grid (SD v1.x PNDM at 50 steps: 51 loop iterations; SDXL Euler):
    the small member at loop index i iff (i + 1) / len(timesteps) <= r, as TStitchSD; NFE counts model calls."""
    import diffusers

    pair = [members.small, members.large] if kind == "sd" else [members.xl, zoo.load(entry(
        dirs.xl2, "tiny-xl2", space="sdxl-vae", scale=XL_SCALE))]
    pipe = pipeline(getattr(diffusers, PIPELINES[kind]), dirs.large if kind == "sd" else dirs.xl2)
    expected, calls = plain_loop(pair, pipe.scheduler, steps, GUIDANCE[kind],
                                 lambda i, s: 0 if (i + 1) / len(s.timesteps) <= r else 1)
    got = tstitch.sample(pair, noise(), PROMPTS, fractions=[r, 1 - r], solver="scheduler", steps=steps,
                         guidance=GUIDANCE[kind], rule="official")
    assert relative(got.x, expected) <= 1e-5 and got.nfe == calls
    small = {0.0: 0, 0.4: 20 if kind == "sd" else 2, 1.0: sum(calls)}[r]  # at 0.4: 20 of 51, 2 of 6 iterations
    assert sum(calls) == steps + (kind == "sd") and calls[0] == small


@pytest.mark.parametrize("name,steps,nfe", [("HeunDiscreteScheduler", 6, [4, 7]), ("PNDMScheduler", 10, [5, 6]),
                                            ("DPMSolverMultistepScheduler", 10, [4, 6])])
def test_stitched_multi_call_steps_stay_with_one_member(dirs, members, name, steps, nfe):
    """rule=steps at r = 0.4: floor(N r + 1/2) steps to the small member, a Heun step (a call and its correction)
    or PLMS's warm-up (two calls) whole; equal to the loop that follows the scheduler's own step state, and the
    NFE per member counts model calls (Heun alone: 2N - 1)."""
    from diffusers import StableDiffusionPipeline

    pair = [members.small, members.large]
    pipe = pipeline(StableDiffusionPipeline, dirs.large, name)
    expected, calls = plain_loop(pair, pipe.scheduler, steps, 7.5, by_steps(round(0.4 * steps)))
    got = tstitch.sample(pair, noise(), PROMPTS, fractions=[0.4, 0.6], solver="scheduler", steps=steps,
                         guidance=7.5, scheduler=name)
    assert relative(got.x, expected) <= 1e-5 and got.nfe == calls == nfe
    assert got.plan == [0] * round(0.4 * steps) + [1] * (steps - round(0.4 * steps))
    if name == "HeunDiscreteScheduler":
        solo = tstitch.sample([members.large], noise(), PROMPTS, solver="scheduler", steps=steps, guidance=7.5,
                              scheduler=name)
        assert solo.nfe == [2 * steps - 1]



def test_members_with_different_text_widths_stitch(members):
    """768- vs 1024-wide text encoders at tiny size (32 vs 48): each member encodes the prompts itself."""
    small, large = members.small, members.large
    assert small.condition(PROMPTS)["encoder_hidden_states"].shape[-1] == 32
    out = tstitch.sample([small, large], noise(), PROMPTS, fractions=[0.5, 0.5], solver="ddim", steps=4, guidance=7.5)
    assert out.nfe == [2, 2] and out.plan == [0, 0, 1, 1] and torch.isfinite(out.x).all()
    alone = tstitch.sample([large], noise(), PROMPTS, solver="ddim", steps=4, guidance=7.5).x
    assert not torch.allclose(out.x, alone)


@pytest.mark.parametrize("solver", ["ddim", "ddpm", "dpmpp_2m"])
def test_fractions_0_1_and_1_0_reproduce_one_member(members, solver):
    small, large = members.small, members.large
    options = dict(solver=solver, steps=4, guidance=7.5)
    if solver == "ddpm":
        options["variance"] = "small"

    def run(ms, fractions=None):
        rng = SeedNoise(range(3))
        return tstitch.sample(ms, rng.randn(SHAPE), PROMPTS, fractions=fractions, randn_like=rng.randn_like,
                              **options).x

    assert torch.equal(run([small, large], [0, 1]), run([large]))
    assert torch.equal(run([small, large], [1, 0]), run([small]))


def test_three_members(members):
    out = tstitch.sample([members.small, members.v, members.large], noise(), PROMPTS, fractions=[0.25, 0.25, 0.5],
                         solver="dpmpp_2m", steps=4, guidance=7.5)
    assert out.nfe == [1, 1, 2] and torch.isfinite(out.x).all()


def test_different_latent_spaces_are_refused(members):
    with pytest.raises(ConfigError, match="cannot stitch tiny-small with tiny-xl: different space") as err:
        tstitch.sample([members.small, members.xl], noise(), PROMPTS, fractions=[0.5, 0.5], steps=4)
    assert "sd-kl-f8" in str(err.value) and "sdxl-vae" in str(err.value) and "\n" not in str(err.value)


# --- errors ---------------------------------------------------------------------------------------------------------

def one_line(match, spec, **kwargs):
    with pytest.raises(ConfigError, match=match) as err:
        zoo.load(spec, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("options,match", [
    ({"scheduler": "NoSuchScheduler"}, "unknown diffusers scheduler 'NoSuchScheduler'; use a class name such as"),
    ({"scheduler": "DPMSolverSDEScheduler"},
     "draws one noise stream for the whole batch, so an image would depend on its batch.*use DPMSolverMultistep"),
    ({"scheduler": "LCMScheduler", "steps": 60}, r"LCMScheduler cannot make 60 steps \(.*\); choose another"),
    ({"steps": "ddim50"}, "takes a positive int step count, not 'ddim50' \\(solver.steps=50\\)"),
    ({"steps": 3, "config": {"skip_prk_steps": False}}, "PNDMScheduler cannot make 3 steps"),
    ({"steps": 2000}, r"PNDMScheduler at 2000 steps gives the timesteps \[1, 1, .*not a descending grid"),
    ({"config": {"karras": True}}, "PNDMScheduler has no config key 'karras'; its keys:"),
    ({"config": {"beta_schedule": "linear"}}, "does not run the models' noise schedule scaled_linear"),
])
def test_bad_scheduler_options_are_one_line(members, options, match):
    """Refused before any model runs, in one line that names the fix."""
    options = {"steps": 4, **options}
    with pytest.raises(ConfigError, match=match) as err:
        tstitch.sample([members.small], noise(), PROMPTS, solver="scheduler", guidance=7.5, **options)
    assert "\n" not in str(err.value)


def test_models_without_a_shipped_scheduler_name_one():
    """A DiT ships no diffusers scheduler: solver=scheduler needs one named, and then runs on the DiT's betas."""
    from test_stitch import tiny_dit

    dit = tiny_dit(1, "tiny-dit")
    x, y = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2])
    with pytest.raises(ConfigError, match="ships no diffusers scheduler .* solver.options.scheduler=DDIMScheduler"):
        tstitch.sample([dit], x, y, solver="scheduler", steps=5)
    out = tstitch.sample([dit], x, y, solver="scheduler", steps=5, scheduler="DDIMScheduler")
    assert out.nfe == [5] and out.timesteps == [800, 600, 400, 200, 0] and torch.isfinite(out.x).all()  # DDIM defaults


def test_wrong_family_and_missing_checkpoints(dirs, tmp_path):
    torch.save({"pos_embed": torch.zeros(1, 4, 8)}, tmp_path / "dit_s_256.pt")
    one_line("is a file, but the sd family loads diffusers model directories", entry(tmp_path / "dit_s_256.pt"))
    one_line("checkpoint directory not found", entry(tmp_path / "missing"))
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "DiTTransformer2DModel"}))
    one_line(r"holds no diffusers UNet \(unet/config.json missing\)", entry(tmp_path))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    one_line("holds a UNet2DModel, not a UNet2DConditionModel", entry(tmp_path))
    with pytest.raises(ConfigError, match="condition it on a list of prompts"):
        zoo.load(entry(dirs.small)).condition(torch.tensor([1, 2]))


def test_entry_must_fit_the_checkpoint(dirs):
    # the real zoo entry pointed at the tiny directory: its net says 768-wide cross-attention
    msg = one_line("does not fit sd-v1-4", "sd/v1_4", checkpoint=str(dirs.small))
    assert "cross_attention_dim 32 vs 768" in msg
    one_line("VAE has scaling_factor 0.18215 but space 'sdxl-vae' declares scale 0.13025",
             entry(dirs.small, space="sdxl-vae", scale=XL_SCALE))
    one_line(r"VAE latent channels 4, UNet in/out channels 4/4 and space shape \(8, 8, 8\) disagree",
             {**entry(dirs.small), "space": {"name": "sd-kl-f8", "shape": [8, 8, 8], "scale": SD_SCALE}})
    one_line("is not the zoo entry's schedule", {**entry(dirs.small), "schedule": {"name": "linear"}})
    one_line("net.cross_dim is not a UNet2DConditionModel config key", entry(dirs.small, net={"cross_dim": 32}))


def test_directory_without_vae_uses_the_codec_directory(dirs, tmp_path):
    shutil.copytree(dirs.small, tmp_path / "m", ignore=shutil.ignore_patterns("vae"))
    with_codec = {**entry(tmp_path / "m"), "codec": {"source": str(dirs.small), "subfolder": "vae"}}
    assert zoo.load(with_codec).space == Space("sd-kl-f8", SHAPE, SD_SCALE)
    one_line("has no vae/config.json and its codec names no diffusers VAE directory",
             {**entry(tmp_path / "m"), "codec": "pixels"})


def test_uncached_hub_id_fails_fast_offline(hub_offline):
    start = time.monotonic()
    msg = one_line("the UNet config of tstitch-tests/no-such-sd is not in the Hugging Face cache",
                   entry("tstitch-tests/no-such-sd"))
    assert "hf download tstitch-tests/no-such-sd" in msg and time.monotonic() - start < 5


# --- configs --------------------------------------------------------------------------------------------------------

SD_ENTRIES = [n for n in zoo.names() if n.startswith("sd/")]
SD_STITCHES = sorted(p.stem for p in (Path(CONF) / "stitch").glob("sd_*.yaml"))
KEYS = {"name", "family", "checkpoint", "net", "schedule", "space", "codec", "unet", "variant", "embedded_guidance",
        "scheduler"}
WIDTH = {"sd-kl-f8": (768, 1024), "sdxl-vae": (2048,)}


def test_zoo_has_the_issue_checkpoints():
    ids = {zoo.entry(n)["checkpoint"] for n in SD_ENTRIES} | {(zoo.entry(n).get("unet") or {}).get("source")
                                                            for n in SD_ENTRIES}
    assert {"CompVis/stable-diffusion-v1-4", "stable-diffusion-v1-5/stable-diffusion-v1-5", "nota-ai/bk-sdm-tiny",
            "nota-ai/bk-sdm-small", "nota-ai/bk-sdm-base", "stabilityai/stable-diffusion-xl-base-1.0",
            "segmind/SSD-1B", "latent-consistency/lcm-sdxl", "stabilityai/stable-diffusion-2-1-base",
            "nota-ai/bk-sdm-v2-tiny"} <= ids
    assert {"sd_bk_tiny_v1_4", "sd_bk_tiny_v1_5", "sd_ssd1b_sdxl", "sd_bk_v2_tiny_v2_1_base",
            "sd_bk_tiny_small_v1_4"} <= set(SD_STITCHES)


@pytest.mark.parametrize("name", SD_ENTRIES)
def test_sd_zoo_entry(name):
    """Known keys only; the VAE is the checkpoint's (or its base's); space and text width agree with the family;
    LCM UNets carry their embedded guidance."""
    import inspect

    from diffusers import UNet2DConditionModel

    e = zoo.entry(name)
    assert set(e) <= KEYS and e["family"] == "sd" and e["schedule"] == {"name": "scaled_linear", "num_timesteps": 1000}
    assert e["codec"] == {"source": e["checkpoint"], "subfolder": "vae"}
    assert set(e["net"]) <= set(inspect.signature(UNet2DConditionModel.__init__).parameters)
    space = e["space"]
    assert space["scale"] == {"sd-kl-f8": SD_SCALE, "sdxl-vae": XL_SCALE}[space["name"]] and space["shape"][0] == 4
    assert e["net"]["cross_attention_dim"] in WIDTH[space["name"]]
    assert ("time_cond_proj_dim" in e["net"]) == ("embedded_guidance" in e)


@pytest.mark.parametrize("name", SD_STITCHES)
def test_sd_stitch_preset_composes(name):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[f"stitch={name}", "prompts=demo"])
    OmegaConf.resolve(cfg)
    members = cfg.stitch.members
    assert len(cfg.stitch.fractions) == len(members) >= 2 and abs(sum(cfg.stitch.fractions) - 1) < 1e-9
    stand_ins = [SimpleNamespace(name=m.name, schedule=Schedule(**m.schedule),
                                 space=Space(m.space.name, tuple(m.space.shape), m.space.scale, m.space.clip))
                 for m in members.values()]
    check_compatible(stand_ins)  # what the engine checks before loading any weights
    assert all(m.family == "sd" and m.codec.source == m.checkpoint for m in members.values())


@pytest.mark.parametrize("name", SD_ENTRIES)
def test_sd_zoo_entry_composes_as_a_member(name):
    """Each entry swapped into a preset from the command line resolves (its codec follows its checkpoint)."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=["stitch=sd_bk_tiny_v1_4", f"model@stitch.members.large={name}",
                                                        "stitch.members.large.checkpoint=/models/x"])
    OmegaConf.resolve(cfg)
    large = OmegaConf.to_container(cfg.stitch.members.large)
    assert {**large, "checkpoint": None, "codec": None} == {**zoo.entry(name), "checkpoint": None, "codec": None}
    assert large["codec"] == {"source": "/models/x", "subfolder": "vae"}


def test_pipeline_images_are_stable_diffusion_pipelines(dirs):
    """tstitch.pipeline with one SD member and its defaults (its own scheduler, guidance 7.5) gives the images of
    StableDiffusionPipeline on the same seeds' noise, up to the uint8 rounding of ties (at most one grey level)."""
    import diffusers

    pipe = tstitch.pipeline([entry(dirs.large, "tiny-large", net={"cross_attention_dim": 48})], steps=STEPS)
    assert (pipe.options["solver"], pipe.options["guidance"]) == ("scheduler", 7.5)
    ours = np.stack([np.asarray(img) for img in pipe(PROMPTS, seeds=[0, 1, 2])])
    rng = SeedNoise(range(3))
    theirs = pipeline(diffusers.StableDiffusionPipeline, dirs.large)(
        PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, latents=rng.randn(SHAPE), generator=rng.generators,
        output_type="np").images
    theirs = (theirs * 255).round().astype(np.uint8)
    assert ours.shape == theirs.shape == (3, 16, 16, 3)
    assert np.abs(ours.astype(int) - theirs).max() <= 1 and (ours == theirs).mean() > 0.99


def test_sd_members_satisfy_the_member_protocol(members):
    from tstitch.models.protocols import Member

    for m in (members.small, members.xl, members.lcm):
        assert isinstance(m, Member) and m.encoder is not None and m.scheduler_config is not None
    assert members.lcm.guidance_embedded and not members.small.guidance_embedded
    assert members.small.sampler == {"solver": "scheduler", "steps": 50, "guidance": 7.5}
    assert members.xl.sampler["guidance"] == 5.0  # StableDiffusionXLPipeline's default
