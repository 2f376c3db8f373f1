"""Codecs: a tiny random AutoencoderKL saved to disk (a diffusers directory, or one CompVis-layout file) decodes
and encodes exactly as diffusers does by hand; a wrong VAE or an unloadable source is a ConfigError at once;
pixels round-trip through uint8."""
import re
import time

import pytest
import torch
from omegaconf import OmegaConf

from tstitch.errors import ConfigError
from tstitch.models.codecs import PixelCodec, VAECodec, load_codec
from tstitch.models.protocols import Space

SCALE = 0.18215
SPACE = Space("sd-kl-f8", (4, 8, 8), SCALE)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A 2-level AutoencoderKL (one 2x downsampling): latents (4, 8, 8) <-> images (3, 16, 16)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                        norm_num_groups=8, sample_size=16, scaling_factor=SCALE)
    root = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(root / "vae")
    return root, vae.eval()


def test_vae_decode_matches_diffusers(vae_dir):
    root, vae = vae_dir
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.clamp(vae.decode(z / SCALE).sample * 127.5 + 128, 0, 255).to(torch.uint8)
    codec = load_codec(str(root / "vae"), SPACE)
    images = codec.decode(z)
    assert codec.scale == SCALE and images.dtype == torch.uint8 and images.shape == (2, 3, 16, 16)
    assert torch.equal(images, expected)
    assert len(images.unique()) > 10  # a real image, not a constant
    chunked = VAECodec(str(root / "vae"), chunk_size=1).decode(z)
    assert (chunked.int() - expected.int()).abs().max() <= 1


def test_vae_encode_is_scaled_posterior_mean(vae_dir):
    root, vae = vae_dir
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = vae.encode(images.float() / 127.5 - 1).latent_dist.mean * SCALE
    latents = load_codec(OmegaConf.create({"source": str(root), "subfolder": "vae"}), SPACE).encode(images)
    assert latents.shape == (3, 4, 8, 8)
    assert torch.allclose(latents, expected, atol=1e-6)


def test_vae_scale_and_channels_must_match_space(vae_dir):
    root, _ = vae_dir
    with pytest.raises(ConfigError, match=r"scaling_factor 0.18215 .* 'sdxl-kl-f8' declares scale 0.13025"):
        load_codec(str(root / "vae"), Space("sdxl-kl-f8", (4, 8, 8), 0.13025))
    with pytest.raises(ConfigError, match="4 latent channels"):
        load_codec(str(root / "vae"), Space("f8c16", (16, 8, 8), SCALE))


def test_unloadable_local_vae(tmp_path):
    with pytest.raises(ConfigError, match=f"VAE directory not found: {tmp_path / 'missing'}"):
        load_codec(str(tmp_path / "missing"), SPACE)
    with pytest.raises(ConfigError, match=f"cannot load the VAE from {tmp_path}"):  # a directory without config.json
        load_codec(str(tmp_path), SPACE)


def test_uncached_hub_vae_fails_fast_offline(hub_offline):
    start = time.monotonic()
    with pytest.raises(ConfigError, match="hf download tstitch-tests/no-such-vae") as err:
        load_codec("tstitch-tests/no-such-vae", SPACE)
    assert time.monotonic() - start < 5
    assert "\n" not in str(err.value)


def test_pixel_codec_round_trip():
    images = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    codec = load_codec("pixels", Space("fashion-mnist-pixels", (1, 28, 28)))
    x = codec.encode(images)
    assert isinstance(codec, PixelCodec) and x.min() == -1 and x.max() == 1
    assert torch.equal(codec.decode(x), images)
    assert codec.decode(torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ConfigError, match="codec is pixels"):
        load_codec(None, SPACE)


def to_compvis(sd, levels):
    """A diffusers AutoencoderKL state dict in the original CompVis/LDM layout (SD's and U-ViT's .pth/.ckpt):
    the inverse of diffusers' single-file conversion, written out here so that the test does not trust it."""
    out = {}
    for key, value in sd.items():
        k = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        k = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", k)
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
        for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            k = k.replace(f"attn_1.{new}.", f"attn_1.{old}.")
        k = re.sub(r"down_blocks\.(\d+)\.resnets", r"down.\1.block", k)
        k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample", k)
        k = re.sub(r"up_blocks\.(\d+)\.resnets", lambda m: f"up.{levels - 1 - int(m[1])}.block", k)
        k = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{levels - 1 - int(m[1])}.upsample", k)
        out[k] = value[:, :, None, None] if ".attn_1." in k and value.ndim == 2 else value  # 1x1 convs there
    return out


@pytest.fixture(scope="module")
def compvis_vae(tmp_path_factory):
    """A 2-level AutoencoderKL with CompVis' 32-group norms, saved as U-ViT's plain ``autoencoder_kl.pth`` and as
    an SD-style ``.ckpt`` (the VAE under ``state_dict`` / ``first_stage_model.``, beside other weights)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                        sample_size=16, scaling_factor=SCALE).eval()
    sd = to_compvis(vae.state_dict(), levels=2)
    assert "encoder.down.0.block.0.conv1.weight" in sd and sd["decoder.mid.attn_1.q.weight"].ndim == 4
    assert "decoder.up.1.upsample.conv.weight" in sd and "decoder.up.0.block.0.nin_shortcut.weight" in sd
    root = tmp_path_factory.mktemp("compvis")
    torch.save(sd, root / "autoencoder_kl.pth")
    torch.save({"state_dict": {**{f"first_stage_model.{k}": v for k, v in sd.items()},
                               "model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3)}}, root / "sd.ckpt")
    return root, vae, sd


@pytest.mark.parametrize("filename", ["autoencoder_kl.pth", "sd.ckpt"])
def test_compvis_vae_file_decodes_as_the_original(compvis_vae, filename):
    root, vae, _ = compvis_vae
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = torch.clamp(vae.decode(z / SCALE).sample * 127.5 + 128, 0, 255).to(torch.uint8)
        latents = vae.encode(images.float() / 127.5 - 1).latent_dist.mean * SCALE
    codec = load_codec(str(root / filename), SPACE)  # offline: nothing is fetched
    assert codec.scale == SCALE and codec.vae.config.latent_channels == 4
    assert torch.equal(codec.decode(z), expected) and len(expected.unique()) > 10
    assert torch.allclose(codec.encode(images), latents, atol=1e-6)


def test_compvis_vae_scale_and_channels_must_match_space(compvis_vae):
    root, _, _ = compvis_vae
    path = str(root / "autoencoder_kl.pth")
    with pytest.raises(ConfigError, match=r"scaling_factor 0.18215 .* 'sdxl-kl-f8' declares scale 0.13025"):
        load_codec(path, Space("sdxl-kl-f8", (4, 8, 8), 0.13025))  # the file carries no scale: SD's is the default
    assert load_codec({"source": path, "scaling_factor": 0.13025}, Space("sdxl-kl-f8", (4, 8, 8), 0.13025)).scale \
        == 0.13025
    with pytest.raises(ConfigError, match="4 latent channels"):
        load_codec(path, Space("f8c16", (16, 8, 8), SCALE))


def test_bad_compvis_vae_files(compvis_vae, vae_dir, tmp_path):
    root, _, sd = compvis_vae
    with pytest.raises(ConfigError, match=f"VAE file not found: {tmp_path / 'autoencoder_kl.pth'}"):
        load_codec(str(tmp_path / "autoencoder_kl.pth"), SPACE)
    torch.save({k: v for k, v in sd.items() if k != "decoder.up.0.block.1.conv2.weight"}, tmp_path / "cut.pth")
    with pytest.raises(ConfigError, match=r"does not fit .*missing: decoder.up_blocks.1.resnets.1.conv2.weight"):
        load_codec(str(tmp_path / "cut.pth"), SPACE)
    torch.save({"pos_embed": torch.zeros(1, 4, 8)}, tmp_path / "dit.pt")
    with pytest.raises(ConfigError, match="not an AutoencoderKL in CompVis/LDM layout") as err:
        load_codec(str(tmp_path / "dit.pt"), SPACE)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="remove codec.scaling_factor"):
        load_codec({"source": str(vae_dir[0] / "vae"), "scaling_factor": SCALE}, SPACE)
