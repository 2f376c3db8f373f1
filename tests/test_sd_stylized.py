"""Stylized members (issue 25 item 4): any SD 1.x fine-tune is a member by a zoo yaml alone. A tiny random SD-1
"fine-tune" saved with ``save_pretrained`` and a smaller BK-SDM-like UNet beside it, each named by a zoo yaml in a
user config folder (``TSTITCH_CONFIG_PATH``): the public API and ``tstitch-generate`` with the shipped
``sd_bk_tiny_inkpunk`` preset stitch them; the fine-tune alone is diffusers' pipeline of that directory; the shipped
Inkpunk and Ghibli entries and their presets."""
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_sd import SHAPE, pipeline, relative, save_sd

import tstitch
from tstitch.cli import CONF, schema
from tstitch.data.seeds import SeedNoise
from tstitch.models import zoo
from tstitch.searchpath import ENV

STYLE = ["a squirrel in the park, nvinkpunk style", "a polar bear on mars, nvinkpunk style"]

pytestmark = pytest.mark.usefixtures("diffusers_quiet")


def save_bk_like(root):
    """A tiny SD-1 pipeline whose UNet is narrower (8/16 channels), as BK-SDM's is a smaller UNet beside SD's text
    encoder and VAE."""
    from diffusers import UNet2DConditionModel

    save_sd(root, 32, seed=0)
    config = {k: v for k, v in UNet2DConditionModel.load_config(root / "unet").items() if not k.startswith("_")}
    torch.manual_seed(8)
    UNet2DConditionModel.from_config({**config, "block_out_channels": [8, 16]}).save_pretrained(root / "unet")
    return root


def zoo_yaml(folder, name, checkpoint):
    """A user's zoo entry, written as conf/model/sd/*.yaml are (the VAE from the checkpoint's vae/)."""
    text = "\n".join([f"name: {name}", "family: sd", f"checkpoint: {checkpoint}",
                      "net: {cross_attention_dim: 32, in_channels: 4}",
                      "schedule: {name: scaled_linear, num_timesteps: 1000}",
                      f"space: {{name: sd-kl-f8, shape: {list(SHAPE)}, scale: 0.18215, clip: false}}",
                      'codec: {source: "${..checkpoint}", subfolder: vae}', ""])
    (folder / "model" / "mine").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "mine" / f"{name}.yaml").write_text(text)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user config folder naming a tiny fine-tune (``mine/tiny-inkpunk``) and a BK-like small model."""
    root = tmp_path_factory.mktemp("stylized")
    style, small = save_sd(root / "inkpunk", 32, seed=7), save_bk_like(root / "bk")
    config = root / "config"
    zoo_yaml(config, "tiny-inkpunk", style)
    zoo_yaml(config, "tiny-bk", small)
    return config, style


def test_a_zoo_yaml_alone_makes_a_fine_tune_a_member(user, monkeypatch):
    """With only the yaml in the user's folder: the zoo lists it, the fine-tune alone is StableDiffusionPipeline of
    its directory (relative L2 <= 1e-5), and the pipeline stitches it behind the small model (half the steps each)
    into PIL images that neither model makes alone."""
    from diffusers import StableDiffusionPipeline

    config, style = user
    monkeypatch.setenv(ENV, str(config))
    assert {"mine/tiny-inkpunk", "mine/tiny-bk"} <= set(zoo.names())
    rng = SeedNoise(range(2))
    expected = pipeline(StableDiffusionPipeline, style)(
        STYLE, num_inference_steps=4, guidance_scale=7.5, latents=rng.randn(SHAPE), generator=rng.generators,
        output_type="latent").images
    pipe = tstitch.pipeline(["mine/tiny-bk", "mine/tiny-inkpunk"], fractions=[0.0, 1.0], steps=4)
    pipe(STYLE, seeds=[0, 1])
    assert relative(pipe.result.x, expected) <= 1e-5 and pipe.result.nfe[0] == 0
    images = pipe(STYLE, seeds=[0, 1], fractions=[0.5, 0.5])
    stitched = pipe.result
    assert len(images) == 2 and images[0].size == (16, 16) and stitched.plan == [0, 0, 1, 1]
    assert min(stitched.nfe) > 0 and sum(stitched.nfe) == len(stitched.timesteps)
    pipe(STYLE, seeds=[0, 1], fractions=[1.0, 0.0])
    assert relative(stitched.x, expected) > 1e-3 and relative(stitched.x, pipe.result.x) > 1e-3


def test_generate_stitches_a_user_fine_tune_with_the_preset(user, tmp_path, in_process):
    """``tstitch-generate stitch=sd_bk_tiny_inkpunk`` with the preset's members swapped for the user's zoo entries
    (model@stitch.members.<key>=...): the yamls alone, no code."""
    config, _ = user
    run = tmp_path / "run"
    r = in_process("tstitch-generate", "stitch=sd_bk_tiny_inkpunk", "model@stitch.members.small=mine/tiny-bk",
                   "model@stitch.members.large=mine/tiny-inkpunk", "prompts=demo", "prompts.limit=2",
                   "solver.steps=4", "metric=none", "logger=none", "trainer=cpu", "num_samples=2", "batch_size=2",
                   "timing.rounds=0", "grid_columns=0", f"hydra.run.dir={run}",
                   env={ENV: str(config), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["members"] == ["tiny-bk", "tiny-inkpunk"] and manifest["num_samples"] == 2
    assert manifest["config"]["stitch"]["fractions"] == [0.4, 0.6]


@pytest.mark.parametrize("name,checkpoint,trigger,preset", [
    ("sd/inkpunk_diffusion", "Envvi/Inkpunk-Diffusion", "nvinkpunk", "sd_bk_tiny_inkpunk"),
    ("sd/ghibli_diffusion", "nitrosocke/Ghibli-Diffusion", "ghibli style", "sd_bk_tiny_ghibli"),
])
def test_shipped_stylized_entries_and_presets(name, checkpoint, trigger, preset):
    """SD 1.x fine-tunes: SD v1's text width, latent space and schedule (so BK-SDM stitches with them); the trigger
    words in the entry's comment; the preset puts BK-SDM-Tiny first and passes the preflight."""
    e = zoo.entry(name)
    assert e["checkpoint"] == checkpoint and e["family"] == "sd"
    assert e["net"]["cross_attention_dim"] == zoo.entry("sd/bk_sdm_tiny")["net"]["cross_attention_dim"] == 768
    assert e["space"] == zoo.entry("sd/v1_5")["space"] and e["schedule"] == zoo.entry("sd/v1_5")["schedule"]
    assert f'"{trigger}"' in (Path(CONF) / "model" / f"{name}.yaml").read_text()
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose("generate", [f"stitch={preset}", "prompts=demo"])
    schema.check(cfg, "generate", machine=False)
    assert [m.name for m in cfg.stitch.members.values()] == ["bk-sdm-tiny", e["name"]]
    assert cfg.solver.name == "scheduler" and list(cfg.stitch.fractions) == [0.4, 0.6]
