"""ControlNet per member (issue 25 item 3) on tiny random SD-1 and SDXL pipelines with tiny random ControlNets made
by ``ControlNetModel.from_unet`` and saved with ``save_pretrained``: the control image preprocessed as the ControlNet
pipelines do and carried into both halves of a guided batch; one member equals ``StableDiffusionControlNetPipeline``
/ ``StableDiffusionXLControlNetPipeline`` on the same latents; a stitch with a ControlNet on the large member only
equals the loop written out from diffusers' components; misfits are one line before any weights load; the presets,
the prompt sets' control images and the run's identity."""
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from test_sd import PROMPTS, SHAPE, XL_SCALE, entry, noise, pipeline, relative, save_sd, save_sdxl

import tstitch
from tstitch.cli import CONF, schema
from tstitch.data import prompts as prompt_sets
from tstitch.data.seeds import SeedNoise
from tstitch.errors import ConfigError
from tstitch.jobs import identity
from tstitch.models import zoo

OFFLINE = {"HF_HUB_OFFLINE": "1"}
NEGATIVES = ["blurry", "grainy", "dark"]

pytestmark = pytest.mark.usefixtures("diffusers_quiet")


def save_controlnet(model, out, seed, **unet_config):
    """A ControlNet made from ``model``'s UNet (``unet_config``: a UNet of that config instead) as diffusers' training
    script starts one, with its zero convolutions drawn at random so that it acts; ``save_pretrained`` to ``out``."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    torch.manual_seed(seed)
    if unet_config:
        unet = UNet2DConditionModel.from_config({**unet.config, **unet_config})
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))  # 16 px images -> 8 latents
    for layer in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
        torch.nn.init.normal_(layer.weight, std=0.2)
    net.save_pretrained(out)
    return out


def save_image(path, seed, size=(24, 20)):
    """A random RGB PNG, not of the sample size (16 x 16), so that it is resized as the pipelines resize it."""
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnet")
    d = SimpleNamespace(small=save_sd(root / "small", 32, seed=0), large=save_sd(root / "large", 48, seed=1),
                        xl=save_sdxl(root / "xl"), image=save_image(root / "edges.png", 0))
    d.cn = save_controlnet(d.large, root / "cn", seed=3)
    d.cn_small = save_controlnet(d.small, root / "cn-small", seed=4)
    d.cn_xl = save_controlnet(d.xl, root / "cn-xl", seed=5)
    d.cn_more = save_controlnet(d.large, root / "cn-more", seed=6, layers_per_block=2)  # SD's blocks on a BK-like UNet
    return d


def member(path, cn=None, scale=0.7, kind="sd", **extra):
    if cn is not None:
        extra["controlnet"] = {"source": str(cn), "scale": scale}
    if kind == "xl":
        return zoo.load(entry(path, "tiny-xl", space="sdxl-vae", scale=XL_SCALE, **extra))
    return zoo.load(entry(path, "tiny-large", net={"cross_attention_dim": 48}, **extra))


def controlnet_pipeline(kind, path, cn):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    cls = StableDiffusionXLControlNetPipeline if kind == "xl" else StableDiffusionControlNetPipeline
    extra = {} if kind == "xl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(path, controlnet=ControlNetModel.from_pretrained(cn), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ours(members, prompts, steps=6, guidance=7.5, **options):
    rng = SeedNoise(range(3))
    return tstitch.sample(members, rng.randn(SHAPE), prompts, solver="scheduler", steps=steps, guidance=guidance,
                          randn_like=rng.randn_like, **options)


# --- conditions -----------------------------------------------------------------------------------------------------

def test_control_image_is_the_pipelines_and_goes_into_both_halves(tiny):
    """The condition holds the control image as the ControlNet pipeline's ``prepare_image`` makes it (resized to the
    sample size, [0, 1], one per prompt); the null condition, with or without negative prompts, holds the same."""
    from diffusers.image_processor import VaeImageProcessor

    m = member(tiny.large, tiny.cn)
    assert m.controlled and m.net.unet.config.cross_attention_dim == 48 and m.net.scale == 0.7
    pipe = controlnet_pipeline("sd", tiny.large, tiny.cn)
    theirs = pipe.prepare_image(Image.open(tiny.image), 16, 16, 3, 1, "cpu", torch.float32,
                                do_classifier_free_guidance=True)  # (2B, 3, H, W): the unconditional half first
    cond = m.condition(prompt_sets.with_control_images(PROMPTS, tiny.image))
    assert cond["controlnet_cond"].shape == (3, 3, 16, 16) and torch.equal(cond["controlnet_cond"], theirs[3:])
    assert torch.equal(m.null(cond)["controlnet_cond"], theirs[:3])
    normalized = VaeImageProcessor(do_normalize=True).preprocess(Image.open(tiny.image), 16, 16)
    assert theirs.min() >= 0 and not torch.equal(theirs[0], normalized[0])  # [0, 1], not the VAE's [-1, 1]
    both = m.condition(prompt_sets.with_control_images(prompt_sets.with_negatives(PROMPTS, NEGATIVES), tiny.image))
    assert torch.equal(m.null(both)["controlnet_cond"], theirs[:3])
    plain = member(tiny.large).condition(prompt_sets.with_control_images(PROMPTS, tiny.image))
    assert "controlnet_cond" not in plain  # a member without a ControlNet reads no control image


# --- samples equal diffusers' ControlNet pipelines ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sd", "xl"])
def test_one_member_with_a_controlnet_is_the_pipeline(tiny, kind):
    """One member with a ControlNet (scale 0.7) on the scheduler it ships equals the ControlNet pipeline called with
    the same image, ``controlnet_conditioning_scale`` and latents (relative L2 <= 1e-5; SDXL with negative prompts);
    the ControlNet changes the samples."""
    path, cn, guidance = (tiny.xl, tiny.cn_xl, 5.0) if kind == "xl" else (tiny.large, tiny.cn, 7.5)
    negatives = {"negative_prompt": NEGATIVES} if kind == "xl" else {}
    rng = SeedNoise(range(3))
    expected = controlnet_pipeline(kind, path, cn)(
        PROMPTS, image=Image.open(tiny.image), height=16, width=16, num_inference_steps=6, guidance_scale=guidance,
        controlnet_conditioning_scale=0.7, latents=rng.randn(SHAPE), generator=rng.generators, output_type="latent",
        **negatives).images
    prompts = prompt_sets.with_negatives(PROMPTS, NEGATIVES) if kind == "xl" else PROMPTS
    prompts = prompt_sets.with_control_images(prompts, tiny.image)
    assert relative(ours([member(path, cn, kind=kind)], prompts, guidance=guidance).x, expected) <= 1e-5
    assert relative(ours([member(path, kind=kind)], prompts, guidance=guidance).x, expected) > 1e-3


def test_stitch_with_a_controlnet_on_the_large_member_only(tiny):
    """A 32-wide member without a ControlNet, then a 48-wide one with its own (scale 0.7): the loop written out from
    diffusers' components (each member's own prompt encoding; the ControlNet's residuals on the large member's
    steps only; DDIM, half the steps each) equals ours."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    pipes = [pipeline(StableDiffusionPipeline, d, "DDIMScheduler") for d in (tiny.small, tiny.large)]
    controlnet = ControlNetModel.from_pretrained(tiny.cn)
    parts = {k: v for k, v in pipes[1].components.items() if k != "image_encoder"}
    prepare = StableDiffusionControlNetPipeline(**parts, controlnet=controlnet, requires_safety_checker=False)
    image = prepare.prepare_image(Image.open(tiny.image), 16, 16, 3, 1, "cpu", torch.float32,
                                  do_classifier_free_guidance=True)
    scheduler, w, steps = pipes[1].scheduler, 7.5, 6
    embeds = [p.encode_prompt(PROMPTS, "cpu", 1, True) for p in pipes]
    scheduler.set_timesteps(steps)
    x = noise()
    for i, t in enumerate(scheduler.timesteps):
        k = 0 if i < steps // 2 else 1
        hidden, both = torch.cat([embeds[k][1], embeds[k][0]]), torch.cat([x, x])
        residuals = {}
        with torch.no_grad():
            if k == 1:
                down, mid = controlnet(both, t, encoder_hidden_states=hidden, controlnet_cond=image,
                                       conditioning_scale=0.7, return_dict=False)
                residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            out = pipes[k].unet(both, t, encoder_hidden_states=hidden, **residuals).sample
        eps_u, eps_c = out.chunk(2)
        x = scheduler.step(eps_u + w * (eps_c - eps_u), t, x).prev_sample
    small = zoo.load(entry(tiny.small, "tiny-small", net={"cross_attention_dim": 32}))
    got = tstitch.sample([small, member(tiny.large, tiny.cn)], noise(),
                         prompt_sets.with_control_images(PROMPTS, tiny.image), fractions=[0.5, 0.5],
                         solver="scheduler", steps=steps, guidance=w, scheduler="DDIMScheduler")
    assert got.plan == [0, 0, 0, 1, 1, 1] and relative(got.x, x) <= 1e-5


def test_members_with_the_same_controlnet_share_one_copy(tiny):
    """The SDXL presets give both members one ControlNet: loaded once, each member its own scale; offloading
    (members take turns on the device, the shared ControlNet with each) and channels_last change no sample."""
    from tstitch.models import fast

    a, b = member(tiny.large, tiny.cn, scale=0.5), member(tiny.large, tiny.cn, scale=1.0)
    assert a.net.controlnet is b.net.controlnet and (a.net.scale, b.net.scale) == (0.5, 1.0)
    prompts = prompt_sets.with_control_images(PROMPTS, tiny.image)
    plain = ours([a, b], prompts, steps=4, fractions=[0.5, 0.5])
    assert plain.plan == [0, 0, 1, 1]
    fast_members = fast.speed_up([a, b], "cpu", offload=True, channels_last=True)
    assert relative(ours(fast_members, prompts, steps=4, fractions=[0.5, 0.5]).x, plain.x) <= 1e-5


# --- the pipeline API -----------------------------------------------------------------------------------------------

def test_pipeline_control_image(tiny, tmp_path):
    """``pipe(prompts, control_image=...)``: one image for all, or one per prompt (a path or a PIL image); refused
    where no member reads it, and a member with a ControlNet refuses prompts without one."""
    pipe = tstitch.pipeline([entry(tiny.large, "tiny-large", net={"cross_attention_dim": 48},
                                   controlnet={"source": str(tiny.cn), "scale": 0.7})], steps=6)
    one = pipe(PROMPTS, seeds=[0, 1, 2], control_image=tiny.image)
    assert len(one) == 3 and one[0].size == (16, 16)
    x = pipe.result.x
    pipe(PROMPTS, seeds=[0, 1, 2], control_image=[Image.open(tiny.image), tiny.image, str(tiny.image)])
    assert torch.equal(pipe.result.x, x)
    other = save_image(tmp_path / "other.png", 1)
    pipe(PROMPTS, seeds=[0, 1, 2], control_image=[tiny.image, other, tiny.image])
    assert torch.equal(pipe.result.x[[0, 2]], x[[0, 2]]) and not torch.allclose(pipe.result.x[1], x[1], atol=1e-3)
    with pytest.raises(ConfigError, match="tiny-large has a ControlNet but 3 of 3 prompts have no control image"):
        pipe(PROMPTS)
    with pytest.raises(ConfigError, match="give one control image per prompt"):
        pipe(PROMPTS, control_image=[tiny.image])
    plain = tstitch.pipeline([entry(tiny.large, "tiny-large", net={"cross_attention_dim": 48})], steps=2)
    with pytest.raises(ConfigError, match="control_image is for members with a ControlNet, and none of these"):
        plain(PROMPTS, control_image=tiny.image)


# --- refusals: one line, before any weights load --------------------------------------------------------------------

@pytest.fixture
def no_weights(monkeypatch):
    """Loading any UNet or ControlNet weights fails the test: a refusal must come from the configs alone."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    def refuse(*args, **kwargs):
        raise AssertionError("weights loaded before the ControlNet was checked")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", refuse)
    monkeypatch.setattr(ControlNetModel, "from_pretrained", refuse)


def test_controlnet_that_does_not_fit_is_one_line(tiny, tmp_path, no_weights):
    """Another cross-attention width, other skip connections (a ControlNet of two resnets per block on a UNet of
    one, as SD's ControlNets on BK-SDM's UNets), a UNet given as a ControlNet, a missing directory: one line each,
    from the configs."""
    cases = [(tiny.cn_small, r"the ControlNet .*cn-small does not fit tiny-large's UNet \(cross_attention_dim 32 vs "
              r"48; ControlNet vs UNet\): it was made for another model"),
             (tiny.cn_more, r"does not fit tiny-large's UNet \(skip connections \[16, 16, 16, 16, 32, 32\] \+ middle "
              r"32 vs \[16, 16, 16, 32\] \+ middle 32"),
             (tiny.large / "unet", "holds a UNet2DConditionModel, not a ControlNetModel"),
             (tmp_path / "gone", r"tiny-large.controlnet.source: no such ControlNet directory: .*gone")]
    for cn, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            member(tiny.large, cn)
        assert "\n" not in str(err.value)


def test_controlnet_on_another_family_or_bad_values_is_one_line(tiny):
    with pytest.raises(ConfigError, match=r"^toy-dit-small.controlnet: a dit member takes no controlnet, only sd "
                                          "members do; remove toy-dit-small.controlnet, or pick a zoo entry of the sd "
                                          "family$"):
        zoo.load({**zoo.entry("toy/small"), "controlnet": {"source": str(tiny.cn)}})
    with pytest.raises(ConfigError, match=r"^toy-dit-small.lora: a dit member takes no lora"):
        zoo.load({**zoo.entry("toy/small"), "lora": {"path": str(tiny.cn)}})
    for spec, match in [({"scale": 0.5}, "controlnet has no source"),
                        ({"source": str(tiny.cn), "scale": -1}, r"controlnet.scale=-1 is not allowed"),
                        ({"source": str(tiny.cn), "strength": 1}, r"unknown key tiny-large.controlnet.strength"),
                        ("a/b", "controlnet='a/b' is not allowed: give {source:")]:
        with pytest.raises(ConfigError, match=match):
            zoo.load(entry(tiny.large, "tiny-large", controlnet=spec))


def compose_generate(*overrides):
    with initialize_config_dir(CONF, version_base=None):
        return compose("generate", ["prompts=demo", *overrides])


@pytest.mark.parametrize("overrides,match", [
    (["stitch=toy", "+stitch.members.small.controlnet={source: diffusers/controlnet-canny-sdxl-1.0}"],
     r"^stitch.members.small.controlnet: a dit member takes no controlnet"),
    (["stitch=controlnet_canny_ssd1b_sdxl"], r"^stitch.members.small has a ControlNet but the prompts carry no "
                                             r"control image; set prompts.control_image=<image file>"),
    (["stitch=controlnet_canny_ssd1b_sdxl", "prompts.control_image=/no/such/edges.png"],
     r"^prompts.control_image: no such image file: /no/such/edges.png"),
    (["stitch=sd_ssd1b_sdxl", "prompts.control_image={image}"],
     r"^prompts.control_image is set but no member has a ControlNet to read it"),
])
def test_preflight_refuses_controlnet_slips(tiny, overrides, match):
    """The commands' preflight (``schema.check``): before any model loads or any file is written."""
    cfg = compose_generate(*[o.replace("{image}", str(tiny.image)) for o in overrides])
    with pytest.raises(ConfigError, match=match) as err:
        schema.check(cfg, "generate", machine=False)
    assert "\n" not in str(err.value)


# --- presets --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,controlnets,scale,variant", [
    ("controlnet_canny_ssd1b_sdxl", ["diffusers/controlnet-canny-sdxl-1.0"] * 2, 0.5, None),
    ("controlnet_depth_ssd1b_sdxl", ["diffusers/controlnet-depth-sdxl-1.0"] * 2, 0.5, "fp16"),
    ("controlnet_pose_ssd1b_sdxl", ["thibaud/controlnet-openpose-sdxl-1.0"] * 2, 0.5, None),
    ("controlnet_canny_bk_tiny_v1_5", [None, "lllyasviel/control_v11p_sd15_canny"], 1.0, None),
])
def test_controlnet_presets(tiny, name, controlnets, scale, variant):
    """The ControlNets of T-Stitch's SDXL demos (sdxl_canny/depth/pose.py: scale 0.5, the depth one's fp16 files) on
    both SSD-1B and SDXL; SD 1.5's canny ControlNet on the large member only. They pass the preflight with a control
    image."""
    cfg = compose_generate(f"stitch={name}", f"prompts.control_image={tiny.image}")
    schema.check(cfg, "generate", machine=False)
    members = list(cfg.stitch.members.values())
    assert [m.controlnet.source if m.get("controlnet") else None for m in members] == controlnets
    assert all((m.controlnet.scale, m.controlnet.variant) == (scale, variant) for m in members if m.get("controlnet"))
    assert cfg.solver.name == "scheduler" and cfg.prompts.control_image == str(tiny.image)


# --- prompt sets and the run's identity -----------------------------------------------------------------------------

def test_prompt_sets_carry_control_images(tmp_path):
    """``control_image_column`` (paths relative to the prompt file) and ``control_image`` (every other prompt's);
    pickled with the prompt; recorded in a run's identity by content, not path."""
    (tmp_path / "img").mkdir()
    a, b = save_image(tmp_path / "img" / "a.png", 0), save_image(tmp_path / "b.png", 1)
    (tmp_path / "p.csv").write_text("prompt,neg,control\na cat,dark,img/a.png\ntwo boats,,\n")
    loaded = prompt_sets.load(tmp_path / "p.csv", negative_column="neg", control_image_column="control",
                              control_image=str(b))
    assert [(p, p.negative, p.control) for p in loaded] == [("a cat", "dark", str(a)), ("two boats", None, str(b))]
    again = pickle.loads(pickle.dumps(loaded[0]))
    assert (again, again.negative, again.control) == ("a cat", "dark", str(a))
    recorded = prompt_sets.recorded(loaded)
    assert recorded[0][:2] == ["a cat", "dark"] and recorded[1][:2] == ["two boats", None]
    assert recorded[0][2].startswith("sha256:") and recorded[0][2] != recorded[1][2]
    save_image(a, 2)  # another image at the same path: another record
    assert prompt_sets.recorded(loaded)[0][2] != recorded[0][2]
    assert prompt_sets.recorded(prompt_sets.with_negatives(loaded, "x"))[1][2] == recorded[1][2]  # images kept
    (tmp_path / "q.json").write_text(json.dumps([{"prompt": "a cat", "control": "missing.png"}]))
    with pytest.raises(ConfigError, match=r"control image not found: .*missing.png named in .*q.json"):
        prompt_sets.load(tmp_path / "q.json", control_image_column="control")
    with pytest.raises(ConfigError, match="names a column, but .* is a .txt file"):
        (tmp_path / "p.txt").write_text("a cat\n")
        prompt_sets.load(tmp_path / "p.txt", control_image_column="control")


def test_controlnet_run_identity(tiny, tmp_path, in_process):
    """tstitch-generate with a ControlNet on the large member and ``prompts.control_image``: the ControlNet's content
    is one of the member's checkpoints and the image's content is in the prompt list, so a resume with another image
    at the same path is refused before any sample is made."""
    image = save_image(tmp_path / "edges.png", 0)
    overrides = ["stitch=sd_bk_tiny_v1_4", "prompts=demo", "prompts.limit=2", "guidance.scale=7.5", "solver.steps=2",
                 "metric=none", "logger=none", "trainer=cpu", "num_samples=2", "batch_size=2", "timing.rounds=0",
                 "grid_columns=0", f"+stitch.members.large.controlnet={{source: {tiny.cn}, scale: 0.7}}",
                 f"prompts.control_image={image}"]
    for name, width, path in (("small", 32, tiny.small), ("large", 48, tiny.large)):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={path}", f"{m}.net.cross_attention_dim={width}", f"{m}.space.shape=[4,8,8]"]
    run = tmp_path / "run"
    r = in_process("tstitch-generate", *overrides, f"hydra.run.dir={run}", env=OFFLINE)
    assert r.returncode == 0, r.stderr[-2000:]
    stored = json.loads((run / "identity.json").read_text())
    assert stored["checkpoints"]["large"] == [identity.fingerprint(tiny.large), identity.fingerprint(tiny.cn)]
    assert stored["config"]["members"]["large"]["controlnet"] == {"source": str(tiny.cn), "scale": 0.7}
    assert [p[2] for p in stored["prompts"]] == [prompt_sets.content(image)] * 2
    save_image(image, 1)
    r = in_process("tstitch-generate", *overrides, f"hydra.run.dir={run}", env=OFFLINE)
    assert r.returncode == 2 and "differs in: prompts (the prompt list)" in r.stderr, r.stderr[-2000:]


def test_a_missing_control_image_in_the_prompt_file_fails_before_any_model_loads(tiny, tmp_path, in_process,
                                                                                 monkeypatch):
    """A prompt file's column naming a missing image: one line, and no member is loaded first."""
    from tstitch.jobs import build

    def load(*args, **kwargs):
        raise RuntimeError("a member was loaded before the prompts were checked")

    monkeypatch.setattr(build, "stitch", load)
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "a cat", "control": "missing.png"}]))
    overrides = ["stitch=sd_bk_tiny_v1_4", "prompts=file", f"prompts.path={tmp_path / 'p.json'}",
                 "prompts.control_image_column=control", "metric=none", "logger=none", "trainer=cpu", "num_samples=1",
                 f"+stitch.members.large.controlnet={{source: {tiny.cn}, scale: 0.7}}"]
    for name, width, path in (("small", 32, tiny.small), ("large", 48, tiny.large)):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={path}", f"{m}.net.cross_attention_dim={width}", f"{m}.space.shape=[4,8,8]"]
    r = in_process("tstitch-generate", *overrides, f"hydra.run.dir={tmp_path / 'run'}", env=OFFLINE)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and "a member was loaded" not in r.stderr, r.stderr[-2000:]
    assert "control image not found" in lines[-1] and "missing.png" in lines[-1], lines[-1]
