"""Negative prompts (issue 25 item 1) on tiny random SD-1 and SDXL pipelines saved with ``save_pretrained``: each
member encodes them with its own text encoder(s) and uses them as the unconditional branch of classifier-free
guidance, equal to diffusers' pipelines with ``negative_prompt``; stitched, each member its own encoding; the
pipeline API, prompt sets with negatives, and the run's identity."""
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_sd import (
    GUIDANCE,
    PIPELINES,
    PROMPTS,
    SHAPE,
    XL_SCALE,
    entry,
    noise,
    pipeline,
    pipeline_latents,
    relative,
    save_sd,
    save_sdxl,
)

import tstitch
from tstitch.data import prompts as prompt_sets
from tstitch.data.seeds import SeedNoise
from tstitch.errors import ConfigError
from tstitch.models import zoo

NEGATIVES = ["blurry", "low quality, grainy", "a dog"]


pytestmark = pytest.mark.usefixtures("diffusers_quiet")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("negative")
    dirs = SimpleNamespace(small=save_sd(root / "small", 32, seed=0), large=save_sd(root / "large", 48, seed=1),
                           lcm=save_sd(root / "lcm", 32, seed=3, time_cond_proj_dim=8), xl=save_sdxl(root / "xl"))
    members = SimpleNamespace(
        small=zoo.load(entry(dirs.small, "tiny-small", net={"cross_attention_dim": 32})),
        large=zoo.load(entry(dirs.large, "tiny-large", net={"cross_attention_dim": 48})),
        lcm=zoo.load(entry(dirs.lcm, "tiny-lcm", embedded_guidance=8.0, net={"time_cond_proj_dim": 8})),
        xl=zoo.load(entry(dirs.xl, "tiny-xl", space="sdxl-vae", scale=XL_SCALE)))
    return dirs, members


def with_negatives(negatives=NEGATIVES):
    return prompt_sets.with_negatives(PROMPTS, negatives)


# --- conditions -----------------------------------------------------------------------------------------------------

def test_sd_null_condition_is_the_negative_prompts_embedding(tiny):
    """SD 1.x: the null condition of prompts with negatives is StableDiffusionPipeline.encode_prompt's negative
    embedding; without negatives it stays the empty prompt's."""
    from diffusers import StableDiffusionPipeline

    dirs, m = tiny
    cond, uncond = pipeline(StableDiffusionPipeline, dirs.large).encode_prompt(PROMPTS, "cpu", 1, True,
                                                                              negative_prompt=NEGATIVES)
    ours = m.large.condition(with_negatives())
    assert torch.equal(ours["encoder_hidden_states"], cond)
    null = m.large.null(ours)["encoder_hidden_states"]
    assert null.shape == (3, 16, 48) and torch.allclose(null, uncond, atol=1e-6)
    empty = m.large.null(m.large.condition(PROMPTS))["encoder_hidden_states"]
    assert (null - empty).abs().amax(dim=(1, 2)).min() > 1e-3  # every row is its negative prompt's, not ""


def test_sdxl_null_condition_is_the_negative_prompts_embedding(tiny):
    """SDXL: both encoders' penultimate states and the pooled embedding of the negative prompts (not zeros), the
    same time ids; a prompt without a negative keeps the zeros of force_zeros_for_empty_prompt."""
    from diffusers import StableDiffusionXLPipeline

    dirs, m = tiny
    _, uncond, _, uncond_pooled = pipeline(StableDiffusionXLPipeline, dirs.xl).encode_prompt(
        PROMPTS, device="cpu", do_classifier_free_guidance=True, negative_prompt=NEGATIVES)
    null = m.xl.null(m.xl.condition(with_negatives()))
    assert torch.allclose(null["encoder_hidden_states"], uncond, atol=1e-6) and uncond.abs().amax() > 0
    assert torch.allclose(null["added_cond_kwargs"]["text_embeds"], uncond_pooled, atol=1e-6)
    assert null["added_cond_kwargs"]["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 3
    mixed = m.xl.null(m.xl.condition(with_negatives([NEGATIVES[0], None, NEGATIVES[2]])))
    for key, ours, theirs in (("encoder_hidden_states", mixed["encoder_hidden_states"], uncond),
                              ("text_embeds", mixed["added_cond_kwargs"]["text_embeds"], uncond_pooled)):
        assert torch.allclose(ours[[0, 2]], theirs[[0, 2]], atol=1e-6), key
        assert not ours[1].any(), key  # no negative prompt: zeros, as SDXL's pipeline without one


def test_lcm_members_take_no_negative_prompt(tiny):
    """An LCM UNet's guidance is embedded: no unconditional branch, so its null condition is its condition."""
    _, m = tiny
    cond = m.lcm.condition(with_negatives())
    assert m.lcm.null(cond) is cond


# --- samples equal diffusers' with negative_prompt ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sd", "xl"])
def test_one_member_with_negative_prompts_is_the_pipeline(tiny, kind):
    """One member on the scheduler it ships equals the pipeline called with negative_prompt (relative L2 <= 1e-5),
    and the negatives change the samples."""
    import diffusers

    dirs, m = tiny
    path, member = (dirs.xl, m.xl) if kind == "xl" else (dirs.large, m.large)
    pipe = pipeline(getattr(diffusers, PIPELINES[kind]), path)
    expected = pipeline_latents(pipe, kind, 6, negative_prompt=NEGATIVES)

    def ours(prompts):
        rng = SeedNoise(range(3))
        return tstitch.sample([member], rng.randn(SHAPE), prompts, solver="scheduler", steps=6,
                              guidance=GUIDANCE[kind], randn_like=rng.randn_like).x

    got = ours(with_negatives())
    assert relative(got, expected) <= 1e-5
    assert relative(ours(PROMPTS), expected) > 1e-3


def test_stitched_members_each_encode_the_negative_prompts(tiny):
    """A 32-wide and a 48-wide text encoder stitched: the loop written out with each member's own pipeline encoding
    (``encode_prompt(..., negative_prompt=...)``), DDIM, half the steps each, equals ours."""
    from diffusers import StableDiffusionPipeline

    dirs, m = tiny
    pipes = [pipeline(StableDiffusionPipeline, d, "DDIMScheduler") for d in (dirs.small, dirs.large)]
    scheduler, w, steps = pipes[1].scheduler, 7.5, 6
    embeds = [p.encode_prompt(PROMPTS, "cpu", 1, True, negative_prompt=NEGATIVES) for p in pipes]
    assert embeds[0][1].shape[-1] == 32 and embeds[1][1].shape[-1] == 48
    scheduler.set_timesteps(steps)
    x = noise()
    for i, t in enumerate(scheduler.timesteps):
        k = 0 if i < steps // 2 else 1
        cond, uncond = embeds[k]
        with torch.no_grad():
            out = pipes[k].unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = out.chunk(2)
        x = scheduler.step(eps_u + w * (eps_c - eps_u), t, x).prev_sample
    got = tstitch.sample([m.small, m.large], noise(), with_negatives(), fractions=[0.5, 0.5], solver="scheduler",
                         steps=steps, guidance=w, scheduler="DDIMScheduler")
    assert got.plan == [0, 0, 0, 1, 1, 1] and relative(got.x, x) <= 1e-5


# --- the pipeline API -----------------------------------------------------------------------------------------------

def test_pipeline_negative_prompts_are_diffusers_negative_prompt(tiny):
    """``pipe(prompts, seeds, negative_prompts=...)`` gives StableDiffusionPipeline's images with negative_prompt
    (up to the uint8 rounding of ties); one string is every prompt's negative."""
    import diffusers

    dirs, _ = tiny
    pipe = tstitch.pipeline([entry(dirs.large, "tiny-large", net={"cross_attention_dim": 48})], steps=6)
    ours = np.stack([np.asarray(img) for img in pipe(PROMPTS, seeds=[0, 1, 2], negative_prompts=NEGATIVES)])
    rng = SeedNoise(range(3))
    theirs = pipeline(diffusers.StableDiffusionPipeline, dirs.large)(
        PROMPTS, negative_prompt=NEGATIVES, num_inference_steps=6, guidance_scale=7.5, latents=rng.randn(SHAPE),
        generator=rng.generators, output_type="np").images
    theirs = (theirs * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs).max() <= 1 and (ours == theirs).mean() > 0.99
    plain = np.stack([np.asarray(img) for img in pipe(PROMPTS, seeds=[0, 1, 2])])
    assert np.abs(plain.astype(int) - ours).max() > 5
    one = pipe(PROMPTS[:2], seeds=[0, 1], negative_prompts="blurry")
    assert np.array_equal(np.asarray(one[0]), ours[0])  # the same negative, the same image


def test_pipeline_refuses_negative_prompts_nothing_reads(tiny):
    dirs, m = tiny
    pipe = tstitch.pipeline([entry(dirs.large, "tiny-large", net={"cross_attention_dim": 48})], steps=2)
    for call, match in [(dict(negative_prompts=NEGATIVES, guidance=1.0), "act through classifier-free guidance"),
                        (dict(negative_prompts=NEGATIVES[:2]), "one negative prompt per prompt \\(3"),
                        (dict(negative_prompts=[1, 2, 3]), "one negative prompt per prompt")]:
        with pytest.raises(ConfigError, match=match) as err:
            pipe(PROMPTS, **call)
        assert "\n" not in str(err.value)
    lcm = tstitch.Pipeline([m.lcm], codec=str(dirs.lcm / "vae"), steps=2, guidance=8.0)
    with pytest.raises(ConfigError, match="only LCM members"):
        lcm(PROMPTS, negative_prompts=NEGATIVES)


# --- prompt sets ----------------------------------------------------------------------------------------------------

def test_prompt_sets_carry_negative_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\ntwo boats\n")
    assert prompt_sets.load(tmp_path / "p.txt") == ["a cat", "two boats"]
    loaded = prompt_sets.load(tmp_path / "p.txt", negative=" blurry ")
    assert [(p, p.negative) for p in loaded] == [("a cat", "blurry"), ("two boats", "blurry")]
    (tmp_path / "p.csv").write_text("prompt,neg\na cat,dark\ntwo boats,\na tree,\n")
    loaded = prompt_sets.load(tmp_path / "p.csv", negative_column="neg", negative="blurry")
    assert [p.negative for p in loaded] == ["dark", "blurry", "blurry"]  # a row's own first, else the default one
    assert [prompt_sets.negative_of(p) for p in prompt_sets.load(tmp_path / "p.csv", negative_column="neg")] == [
        "dark", None, None]
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "a cat", "negative": "dark"}, {"prompt": "a tree"}]))
    loaded = prompt_sets.load(tmp_path / "p.json", negative_column="negative")
    assert prompt_sets.recorded(loaded) == [["a cat", "dark"], "a tree"]
    assert prompt_sets.recorded(["a cat"]) == ["a cat"] and prompt_sets.recorded(None) is None
    kept = prompt_sets.load(tmp_path / "p.csv", negative_column="neg", limit=2, seed=3)
    assert [(str(p), p.negative) for p in kept] == [(str(p), {"a cat": "dark"}.get(p)) for p in kept]
    assert [p.negative for p in prompt_sets.assign([0, 1, 2], loaded)] == ["dark", None, "dark"]
    again = pickle.loads(pickle.dumps(loaded[0]))
    assert (again, again.negative, type(again)) == ("a cat", "dark", prompt_sets.Prompt)


@pytest.mark.parametrize("name,content,kwargs,match", [
    ("p.txt", "a cat\n", {"negative_column": "neg"}, "names a column, but .* is a .txt file"),
    ("p.csv", "prompt\na cat\n", {"negative_column": "neg"}, "has no neg field for the negative prompts"),
    ("p.json", '["a cat"]', {"negative_column": "neg"}, "is a list of strings, with no neg field"),
])
def test_bad_negative_prompt_sources_are_one_line(tmp_path, name, content, kwargs, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=match) as err:
        prompt_sets.load(tmp_path / name, **kwargs)
    assert "\n" not in str(err.value)


def test_negative_prompt_config_key_and_run_identity(tmp_path, in_process):
    """``prompts.negative`` reaches every sample of a tstitch-generate run (the tiny pair, its own encoders) and
    is part of the run's identity: a resume with another negative prompt is refused before any sample is made."""
    save_sd(tmp_path / "small", 32, seed=0)
    save_sd(tmp_path / "large", 48, seed=1)
    overrides = ["stitch=sd_bk_tiny_v1_4", "prompts=demo", "prompts.limit=2", "guidance.scale=7.5", "solver.steps=2",
                 "metric=none", "logger=none", "trainer=cpu", "num_samples=2", "batch_size=2", "timing.rounds=0",
                 "grid_columns=0"]
    for name, width in (("small", 32), ("large", 48)):
        m = f"stitch.members.{name}"
        overrides += [f"{m}.checkpoint={tmp_path / name}", f"{m}.net.cross_attention_dim={width}",
                      f"{m}.space.shape=[4,8,8]"]
    run = tmp_path / "run"
    r = in_process("tstitch-generate", *overrides, "prompts.negative=blurry", f"hydra.run.dir={run}",
                   env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    recorded = json.loads((run / "identity.json").read_text())["prompts"]
    assert len(recorded) == 2 and all(p[1] == "blurry" for p in recorded)
    with np.load(run / "samples.npz") as z:
        with_negative = z["arr_0"]
    r = in_process("tstitch-generate", *overrides, "prompts.negative=grainy", f"hydra.run.dir={run}",
                   env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "differs in: prompts (the prompt list)" in r.stderr, r.stderr[-2000:]
    r = in_process("tstitch-generate", *overrides, f"hydra.run.dir={tmp_path / 'plain'}", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "plain" / "identity.json").read_text())["prompts"] == [str(p) for p, _ in recorded]
    with np.load(tmp_path / "plain" / "samples.npz") as z:
        assert np.abs(z["arr_0"].astype(int) - with_negative).max() > 5
