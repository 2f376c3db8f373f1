"""LoRA per member and LCM (issue 25 item 2) on tiny random SD-1 and SDXL pipelines: tiny random LoRAs made with
peft on the UNet and saved in diffusers' format (``save_lora_weights``), loaded on a member through diffusers'
``load_lora_weights``; one member equals diffusers' pipeline with the LoRA at scale 1 and 0.5 and with
``LCMScheduler``; a stitch with a LoRA on the large member only equals the loop built by hand from diffusers'
components; bad LoRAs are one line before any model loads; the LCM presets and experiments compose and run."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_sd import GUIDANCE, PIPELINES, PROMPTS, SHAPE, XL_SCALE, entry, noise, pipeline, relative, save_sd, save_sdxl

import tstitch
from tstitch.cli import CONF, schema
from tstitch.data.seeds import SeedNoise
from tstitch.errors import ConfigError
from tstitch.models import zoo

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
OFFLINE = {"HF_HUB_OFFLINE": "1"}


pytestmark = pytest.mark.usefixtures("diffusers_quiet")


def save_lora(model, out, seed, kind="sd", rank=4, alpha=8, text=False):
    """A random LoRA (peft, non-zero up weights) on the attention layers of ``model``'s UNet (``text``: and of its
    SD 1.x text encoder), saved as diffusers' training scripts save one: ``<out>/pytorch_lora_weights.safetensors``."""
    import diffusers
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=TARGETS))
    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))}
    if text:
        encoder = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                                                     target_modules=["q_proj", "v_proj"]),
                                          CLIPTextModel.from_pretrained(model, subfolder="text_encoder"))
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(encoder))
    getattr(diffusers, PIPELINES[kind]).save_lora_weights(out, **layers)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    d = SimpleNamespace(small=save_sd(root / "small", 32, seed=0), large=save_sd(root / "large", 48, seed=1),
                        xl=save_sdxl(root / "xl"))
    d.lora = save_lora(d.large, root / "lora-large", seed=10)
    d.lora_small = save_lora(d.small, root / "lora-small", seed=11)
    d.lora_xl = save_lora(d.xl, root / "lora-xl", seed=12, kind="xl")
    return d


def member(path, lora=None, kind="sd", **extra):
    if lora is not None:
        extra["lora"] = lora
    if kind == "xl":
        return zoo.load(entry(path, "tiny-xl", space="sdxl-vae", scale=XL_SCALE, **extra))
    return zoo.load(entry(path, "tiny", **extra))


def ours(members, steps=6, guidance=7.5, **options):
    rng = SeedNoise(range(3))
    return tstitch.sample(members, rng.randn(SHAPE), PROMPTS, solver="scheduler", steps=steps, guidance=guidance,
                          randn_like=rng.randn_like, **options)


def theirs(pipe, kind="sd", steps=6, guidance=7.5, scale=1.0):
    rng = SeedNoise(range(3))
    size = {"height": 16, "width": 16} if kind == "xl" else {}
    return pipe(PROMPTS, num_inference_steps=steps, guidance_scale=guidance, latents=rng.randn(SHAPE),
                generator=rng.generators, output_type="latent", cross_attention_kwargs={"scale": scale},
                **size).images


# --- one member = the pipeline with the LoRA loaded -----------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_one_member_with_a_lora_is_the_pipeline(tiny, scale):
    """The member's LoRA at ``scale`` equals StableDiffusionPipeline after ``load_lora_weights`` called with
    ``cross_attention_kwargs={"scale": scale}`` (relative L2 <= 1e-5; ours is fused into the UNet, theirs is not);
    the LoRA changes the samples, and by less at half the scale."""
    from diffusers import StableDiffusionPipeline

    m = member(tiny.large, {"path": str(tiny.lora), "scale": scale})
    assert not any("lora" in name for name, _ in m.net.named_modules())  # fused, no LoRA layers left
    pipe = pipeline(StableDiffusionPipeline, tiny.large)
    base = theirs(pipe)
    pipe.load_lora_weights(tiny.lora)
    expected = theirs(pipe, scale=scale)
    assert relative(ours([m]).x, expected) <= 1e-5
    moved = relative(expected, base)
    assert moved > (0.1 if scale == 1 else 0.05)
    if scale < 1:
        assert relative(theirs(pipe, scale=1.0), base) > moved


def test_text_encoder_lora_goes_to_the_members_encoder(tiny, tmp_path):
    """A LoRA with text-encoder layers too: they load into the member's own encoder (its prompt embeddings change)
    with the LoRA's scale, as the pipeline's ``lora_scale``; the samples equal the pipeline's at scale 0.5."""
    from diffusers import StableDiffusionPipeline

    lora = save_lora(tiny.large, tmp_path / "lora", seed=15, text=True)
    m, base = member(tiny.large, {"path": str(lora), "scale": 0.5}), member(tiny.large)
    pipe = pipeline(StableDiffusionPipeline, tiny.large)
    pipe.load_lora_weights(lora)
    cond = pipe.encode_prompt(PROMPTS, "cpu", 1, False, lora_scale=0.5)[0]
    ours_cond = m.condition(PROMPTS)["encoder_hidden_states"]
    assert torch.allclose(ours_cond, cond, atol=1e-5)
    assert (ours_cond - base.condition(PROMPTS)["encoder_hidden_states"]).abs().max() > 1e-2
    assert relative(ours([m]).x, theirs(pipe, scale=0.5)) <= 1e-5


@pytest.mark.parametrize("kind", ["sd", "xl"])
def test_lora_with_lcm_scheduler_is_the_pipeline(tiny, kind):
    """An LCM-LoRA's use: LCMScheduler on the model's scheduler config, 4 steps, guidance 1, equal to the pipeline
    (SD 1.x and SDXL); naming LCMScheduler in the entry (``scheduler``) runs the same."""
    import diffusers

    path, lora = (tiny.xl, tiny.lora_xl) if kind == "xl" else (tiny.large, tiny.lora)
    pipe = pipeline(getattr(diffusers, PIPELINES[kind]), path, "LCMScheduler")
    pipe.load_lora_weights(lora)
    expected = theirs(pipe, kind, steps=4, guidance=1.0)
    m = member(path, {"path": str(lora)}, kind)
    got = ours([m], steps=4, guidance=1.0, scheduler="LCMScheduler")
    assert relative(got.x, expected) <= 1e-5 and got.nfe == [4]
    named = member(path, {"path": str(lora)}, kind, scheduler="LCMScheduler")
    assert torch.equal(ours([named], steps=4, guidance=1.0).x, got.x)
    assert relative(ours([member(path, kind=kind)], steps=4, guidance=1.0, scheduler="LCMScheduler").x,
                    expected) > 1e-2  # without the LoRA: another sample


def test_weight_name_and_several_loras(tiny, tmp_path):
    """``weight_name`` picks the file of a folder; two LoRAs on one member add up with their scales, as diffusers'
    ``set_adapters([...], adapter_weights=[...])``."""
    from diffusers import StableDiffusionPipeline

    (tmp_path / "mine.safetensors").write_bytes((tiny.lora / "pytorch_lora_weights.safetensors").read_bytes())
    second = save_lora(tiny.large, tmp_path / "second", seed=13)
    m = member(tiny.large, [{"path": str(tmp_path), "weight_name": "mine.safetensors", "scale": 0.5},
                            {"path": str(second), "scale": 0.25}])
    pipe = pipeline(StableDiffusionPipeline, tiny.large)
    pipe.load_lora_weights(tiny.lora, adapter_name="a")
    pipe.load_lora_weights(second, adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.5, 0.25])
    assert relative(ours([m]).x, theirs(pipe)) <= 1e-5


# --- stitched: a LoRA on the large member only ----------------------------------------------------------------------

def test_stitch_with_a_lora_on_the_large_member_only(tiny):
    """Two UNets from diffusers (the large one with the LoRA loaded at 0.5, unfused), each member's own prompt
    encoding, DDIM, the first half of the steps on the small one (``stitch.plan`` at [0.5, 0.5]): equal to ours."""
    from diffusers import StableDiffusionPipeline

    small = member(tiny.small, net={"cross_attention_dim": 32})
    large = member(tiny.large, {"path": str(tiny.lora), "scale": 0.5}, net={"cross_attention_dim": 48})
    got = ours([small, large], fractions=[0.5, 0.5], scheduler="DDIMScheduler")
    pipes = [pipeline(StableDiffusionPipeline, d, "DDIMScheduler") for d in (tiny.small, tiny.large)]
    pipes[1].load_lora_weights(tiny.lora)
    embeds = [torch.cat(p.encode_prompt(PROMPTS, "cpu", 1, True)[::-1]) for p in pipes]  # (uncond, cond)
    scheduler, x = pipes[1].scheduler, noise()
    scheduler.set_timesteps(6)
    for i, t in enumerate(scheduler.timesteps):
        k = got.plan[i]
        with torch.no_grad():
            out = pipes[k].unet(torch.cat([x, x]), t, encoder_hidden_states=embeds[k],
                                cross_attention_kwargs={"scale": 0.5} if k else None).sample
        eps_u, eps_c = out.chunk(2)
        x = scheduler.step(eps_u + 7.5 * (eps_c - eps_u), t, x).prev_sample
    assert got.plan == [0, 0, 0, 1, 1, 1] and got.nfe == [3, 3]
    assert relative(got.x, x) <= 1e-5
    plain = ours([small, member(tiny.large, net={"cross_attention_dim": 48})], fractions=[0.5, 0.5],
                 scheduler="DDIMScheduler")
    assert relative(plain.x, got.x) > 1e-2  # the large member's LoRA is in the stitched samples


# --- errors: one line, before any model loads -----------------------------------------------------------------------

@pytest.mark.parametrize("lora,match", [
    ({"path": "/nowhere/lcm.safetensors"}, r"lora.path: no such LoRA file or folder: /nowhere/lcm.safetensors"),
    ([{"path": "lcm.safetensors"}], r"lora\[0\].path: no such LoRA file or folder: lcm.safetensors"),
    ({"scale": 0.5}, "lora has no path"),
    ({"path": "latent-consistency/lcm-lora-sdxl", "scale": "high"}, "lora.scale='high' is not allowed"),
    ({"path": "latent-consistency/lcm-lora-sdxl", "weights": "x"}, "unknown key .*lora.weights"),
    ([], "lora=\\[\\] is not allowed: give {path:"),
])
def test_bad_lora_is_one_line_before_any_weights_load(tiny, tmp_path, lora, match):
    """Checked with the entry, before its checkpoint (here missing too) is read."""
    spec = {**entry(tmp_path / "no-model", "tiny"), "lora": lora}
    with pytest.raises(ConfigError, match=match) as err:
        zoo.load(spec)
    assert "\n" not in str(err.value) and "checkpoint directory" not in str(err.value)


def test_bad_lora_on_the_large_member_fails_the_preflight(tiny, tmp_path):
    """tstitch-generate's preflight (``schema.check``) refuses the large member's missing LoRA before the small
    member loads."""
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose("generate", ["stitch=sd_bk_tiny_v1_4", "prompts=demo",
                                   f"+stitch.members.large.lora={{path: {tmp_path / 'gone.safetensors'}, scale: 0.5}}"])
    with pytest.raises(ConfigError, match=r"^stitch.members.large.lora.path: no such LoRA file or folder: .*gone"):
        schema.check(cfg, "generate", machine=False)


def test_lora_of_another_model_is_one_line(tiny, tmp_path):
    """A LoRA of other shapes names the first layer that differs; one whose layers this model lacks, or whose keys
    name none of its parts (SDXL's second text encoder on an SD 1.x model), is refused, not loaded as nothing."""
    from safetensors.torch import save_file

    def refusal(spec):
        with pytest.raises(ConfigError) as err:
            member(tiny.small, spec)
        line = str(err.value)
        assert "\n" not in line and "set tiny's lora.path to LoRA weights in diffusers' format" in line
        return line

    line = refusal({"path": str(tiny.lora)})  # made for the 48-wide cross-attention
    assert "a LoRA of another model: " in line
    assert "attn2.to_k.lora_A.lora0.weight is [4, 48] there, [4, 32] in tiny" in line
    (tmp_path / "other").mkdir()
    save_file({"unet.mid_block.nothing.lora.down.weight": torch.zeros(4, 8),
               "unet.mid_block.nothing.lora.up.weight": torch.zeros(8, 4)},
              tmp_path / "other" / "pytorch_lora_weights.safetensors")
    assert "Target modules {'mid_block.nothing'} not found" in refusal({"path": str(tmp_path / "other")})
    layer = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"
    save_file({f"{layer}.lora_A.weight": torch.zeros(4, 32), f"{layer}.lora_B.weight": torch.zeros(32, 4)},
              tmp_path / "other" / "te2.safetensors")
    assert "holds no LoRA weights for tiny's UNet or text encoders" in refusal(
        {"path": str(tmp_path / "other"), "weight_name": "te2.safetensors"})


def test_uncached_lora_hub_id_fails_fast_offline(tiny, hub_offline):
    with pytest.raises(ConfigError, match="LoRA weights of tstitch-tests/no-such-lora is not in the Hugging Face"):
        member(tiny.small, {"path": "tstitch-tests/no-such-lora"})


# --- presets and experiments ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,loras", [("lcm_ssd1b_sdxl", {"small": "latent-consistency/lcm-lora-ssd-1b"}),
                                        ("lcm_lora_ssd1b_sdxl", {"small": "latent-consistency/lcm-lora-ssd-1b",
                                                                 "large": "latent-consistency/lcm-lora-sdxl"})])
def test_lcm_presets(name, loras):
    """The LCM pairs: LoRAs where the preset puts them (hub repos, their default weight file), LCMScheduler on
    every member, SDXL's space; they pass the commands' preflight."""
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose("generate", [f"stitch={name}", "prompts=demo"])
    schema.check(cfg, "generate", machine=False)
    members = cfg.stitch.members
    assert {k: m.lora[0].path for k, m in members.items() if m.get("lora")} == loras
    assert all(m.lora[0].scale == 1.0 and m.lora[0].weight_name is None for m in members.values() if m.get("lora"))
    assert [m.scheduler for m in members.values()] == ["LCMScheduler"] * 2 and cfg.solver.name == "scheduler"
    assert {m.space.name for m in members.values()} == {"sdxl-vae"}
    if name == "lcm_ssd1b_sdxl":  # the paper's code: the fully distilled LCM-SDXL as the large member
        assert members.large.unet.source == "latent-consistency/lcm-sdxl"
        assert members.small.checkpoint == "segmind/SSD-1B"


def save_lcm_sdxl(root):
    """A tiny SDXL-like pipeline whose UNet is an LCM's (``time_cond_proj_dim``), as lcm-sdxl beside SDXL base."""
    from diffusers import UNet2DConditionModel

    save_sdxl(root, seed=6)
    config = {k: v for k, v in UNet2DConditionModel.load_config(root / "unet").items() if not k.startswith("_")}
    torch.manual_seed(7)
    UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 8}).save_pretrained(root / "unet")
    return root


def test_lcm_experiment_runs_on_tiny_sdxl_members(tmp_path, in_process):
    """+experiment=sd_lcm_4 end to end: a tiny SDXL with a tiny LoRA as SSD-1B + LCM-LoRA and a tiny LCM SDXL UNet as
    LCM-SDXL, LCMScheduler 4 steps, two allocations; the report puts Table 11's FID beside them."""
    save_sdxl(tmp_path / "small", seed=5)
    lora = save_lora(tmp_path / "small", tmp_path / "lora", seed=14, kind="xl")
    save_lcm_sdxl(tmp_path / "large")
    overrides = [f"stitch.members.small.lora=[{{path: {lora}, scale: 1.0}}]",
                 f"stitch.members.large.unet.source={tmp_path / 'large'}", "stitch.members.large.unet.subfolder=unet",
                 "stitch.members.large.net.time_cond_proj_dim=8"]
    for name in ("small", "large"):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={tmp_path / name}", f"{m}.net.cross_attention_dim=48",
                      f"{m}.space.shape=[4,8,8]"]
    r = in_process("tstitch-generate", "-m", "+experiment=sd_lcm_4", *overrides, "prompts=demo", "prompts.limit=null",
                   "metric=none", "trainer=cpu", "logger=none", "fast=default", "num_samples=2", "batch_size=2",
                   "timing.rounds=0",
                   "stitch.fractions=[0.0,1.0],[0.5,0.5]", f"hydra.sweep.dir={tmp_path / 'runs'}", env=OFFLINE)
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((tmp_path / "runs" / "1" / "manifest.json").read_text())["config"]
    assert config["solver"]["options"]["scheduler"] == "LCMScheduler" and config["guidance"]["scale"] == 1.0
    r = in_process("tstitch-report", tmp_path / "runs", "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = Path(tmp_path / "report" / "results.md").read_text().splitlines()
    assert lines[0].endswith("| paper FID (Table 11, 4 steps) |")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert [(row[0], row[1], row[-1]) for row in rows] == [("0 : 1", "0 : 4", "17.05"), ("0.5 : 0.5", "2 : 2", "21.28")]


def test_sd_members_guidance_defaults_unchanged_by_lora(tiny):
    """A LoRA changes the weights only: the member keeps its family's sampler defaults and shipped scheduler."""
    m = member(tiny.large, {"path": str(tiny.lora)})
    assert m.sampler == {"solver": "scheduler", "steps": 50, "guidance": GUIDANCE["sd"]}
    assert m.scheduler_config["_class_name"] == "PNDMScheduler"
