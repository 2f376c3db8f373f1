"""Codecs between a model's data space and uint8 images (edm2 ``Encoder`` role): raw pixels, or a
diffusers ``AutoencoderKL`` whose ``scaling_factor`` is read from its config, never written as a literal.
The AutoencoderKL is a diffusers directory or hub id, or one file in the original CompVis/LDM key layout
(``encoder.down.0.block.0...``, as Stable Diffusion's kl-f8 and U-ViT's ``autoencoder_kl.pth``), converted
offline by diffusers' own single-file code; such a file carries no scale, so it is the zoo entry's
``codec.scaling_factor`` (default: diffusers' Stable Diffusion value, 0.18215).

Images are uint8 NCHW. The float -> uint8 rounding is DiT's, ``clamp(127.5 x + 128, 0, 255)`` truncated,
so that samples decoded here are byte-identical to the official scripts'.
"""
import importlib.util
import inspect
import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from tstitch.errors import ConfigError
from tstitch.models import checks, taesd
from tstitch.models.checkpoints import load_state_dict
from tstitch.models.hub import is_local, pretrained
from tstitch.models.protocols import Codec, Space
from tstitch.models.vq import VQCodec

SINGLE_FILE = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")  # a codec source with these suffixes is one file


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x.float() * 127.5 + 128.0, 0, 255).to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


class PixelCodec:
    """Pixel-space models: the data space is the image in [-1, 1]."""

    scale, source = 1.0, "pixels"

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return to_uint8(x)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return from_uint8(images)

    def to(self, device):
        return self


class VAECodec:
    """A latent space: ``decode(z)`` is ``vae.decode(z / scale)``, ``encode(images)`` the posterior mean times
    ``scale``, in chunks of ``chunk_size`` so that a large batch does not hold every activation at once.
    ``scaling_factor`` is for a single-file (CompVis-layout) VAE only."""

    def __init__(self, source: str, subfolder: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, chunk_size: int = 16, scaling_factor: float | None = None):
        self.source, self.device, self.dtype, self.chunk_size = str(source), device, dtype, chunk_size
        vae = _load_vae(self.source, subfolder, scaling_factor)
        self.vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.scale = float(self.vae.config.scaling_factor)

    def to(self, device):
        """Decode (and encode) on ``device`` from now on."""
        self.vae.to(device)
        self.device = device
        return self

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 images of latents ``z``; NaN or inf pixels from finite latents are an error (a VAE overflowing in
        float16 would otherwise give black images)."""
        out = []
        for c in z.split(self.chunk_size):
            pixels = self.vae.decode(c.to(self.device, self.dtype) / self.scale).sample
            broken = checks.bad_rows(pixels)
            if broken:  # the latents' own rows are the sampler's to report; only a failing chunk looks at them
                broken = set(broken) - set(checks.bad_rows(c))
            if broken:
                raise checks.NonFiniteError(
                    f"the decoder {self.source} gave NaN or inf pixels for {len(broken)} of {len(c)} finite latents; "
                    "decode in float32 (e.g. the SDXL VAE overflows in float16)")
            out.append(to_uint8(pixels))
        return torch.cat(out).to(z.device)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.vae.encode(from_uint8(c).to(self.device, self.dtype)).latent_dist.mean * self.scale
               for c in images.split(self.chunk_size)]
        return torch.cat(out).to(images.device)


def load_codec(spec: str | dict | None, space: Space, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> Codec:
    """The codec named by a zoo entry's ``codec`` (``"pixels"``, a hub id, a local directory, or a dict of
    ``VAECodec`` arguments, or with ``kind: vq`` of ``tstitch.models.vq.VQCodec``'s), checked against the entry's
    data ``space``."""
    if spec in (None, "pixels"):
        if space.scale != 1.0:
            raise ConfigError(f"space {space.name!r} declares scale {space.scale} but codec is pixels (scale 1); "
                              "set the zoo entry's codec to the VAE the model was trained with")
        return PixelCodec()
    kwargs = {"source": spec} if isinstance(spec, (str, os.PathLike)) else dict(spec)  # dict or DictConfig
    kind = kwargs.pop("kind", "kl")
    if kind not in CODECS:
        raise ConfigError(f"codec.kind={kind!r} is not allowed: give one of {sorted(CODECS)} (kl: an AutoencoderKL, "
                          "vq: a CompVis VQ first stage)")
    keys = [k for k in inspect.signature(CODECS[kind]).parameters if k not in ("self", "device", "dtype")]
    unknown = [k for k in kwargs if k not in keys]
    if unknown:
        raise ConfigError(f"codec.{unknown[0]} is not a key of a {kind} codec; give {', '.join(keys)} (and kind)")
    codec = CODECS[kind](device=device, dtype=dtype, **kwargs)
    if getattr(getattr(codec, "vae", None), "tiny", False):  # TAESD takes the model's latents as they are
        taesd.check(codec.source, space)
    elif abs(codec.scale - space.scale) > 1e-6:
        raise ConfigError(f"VAE {codec.source} has scaling_factor {codec.scale} but space {space.name!r} declares "
                          f"scale {space.scale}; pick the VAE the model was trained with or fix space.scale")
    channels = codec.channels if kind == "vq" else codec.vae.config.latent_channels
    if channels != space.shape[0]:
        raise ConfigError(f"VAE {codec.source} has {channels} latent channels but space {space.name!r} has shape "
                          f"{tuple(space.shape)}; pick the VAE the model was trained with")
    return codec


CODECS = {"kl": VAECodec, "vq": VQCodec}  # a zoo entry's codec.kind (default kl)


def _load_vae(source, subfolder=None, scaling_factor=None):
    """``AutoencoderKL`` from one CompVis-layout file, a local directory or the hub cache; the network is tried
    only when it answers, so an offline machine gets a one-line error at once instead of after the hub's retries."""
    if Path(urlparse(source).path).suffix in SINGLE_FILE:
        return _from_single_file(source, scaling_factor)
    if taesd.is_tiny(source, subfolder):  # an AutoencoderTiny (tstitch.models.taesd)
        return taesd.load(source, subfolder, scaling_factor)
    if scaling_factor is not None:
        raise ConfigError(f"VAE {source} has its scaling_factor in its config.json; remove codec.scaling_factor "
                          "(it is for a single .pth/.ckpt/.safetensors file)")
    if is_local(source) and not Path(source).expanduser().is_dir():
        raise ConfigError(f"VAE directory not found: {Path(source).expanduser()}; set codec to a directory holding "
                          "config.json and the weights (AutoencoderKL.save_pretrained), or to a hub id")
    from diffusers import AutoencoderKL

    return pretrained(AutoencoderKL.from_pretrained, source, subfolder=subfolder, what="the VAE",
                      fix="set codec to a hub id such as stabilityai/sd-vae-ft-ema or to a local AutoencoderKL "
                      "directory", low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)


def _from_single_file(source, scaling_factor=None):
    """``AutoencoderKL`` from one CompVis/LDM-layout file (a bare VAE, or a whole LDM checkpoint whose VAE is
    under ``first_stage_model.``), converted by diffusers' single-file code with the architecture read off the
    weights, so nothing is fetched; every diffusers parameter must be filled (a mismatch names its keys)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import (
        LDM_VAE_DEFAULT_SCALING_FACTOR,
        LDM_VAE_KEYS,
        convert_ldm_vae_checkpoint,
        create_vae_diffusers_config_from_ldm,
    )

    if urlparse(source).scheme not in ("http", "https") and not Path(source).expanduser().exists():
        raise ConfigError(f"VAE file not found: {Path(source).expanduser()}; put the autoencoder there (the zoo "
                          "entry's comment says where to get it) or fix codec")
    sd = load_state_dict(source)
    prefix = next((p for p in LDM_VAE_KEYS if any(k.startswith(p) for k in sd)), "")
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    try:
        ddconfig = _ldm_ddconfig(sd)
    except KeyError as e:
        raise ConfigError(f"VAE file {source} is not an AutoencoderKL in CompVis/LDM layout (no {e.args[0]}); set "
                          "codec to such a file, a diffusers directory or a hub id") from None
    original = {"model": {"params": {"first_stage_config": {"params": {"ddconfig": ddconfig}}}}}
    config = create_vae_diffusers_config_from_ldm(original, sd, scaling_factor=scaling_factor or
                                                  LDM_VAE_DEFAULT_SCALING_FACTOR)
    vae = AutoencoderKL(**config)
    weights, expected = convert_ldm_vae_checkpoint(sd, config), vae.state_dict()
    missing = [k for k in expected if k not in weights]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in weights and weights[k].shape != v.shape]
    unexpected = [k for k in weights if k not in expected]
    if missing or shapes or unexpected:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
        raise ConfigError(f"VAE file {source} does not fit a kl AutoencoderKL ({'; '.join(parts)}); set codec to "
                          "the autoencoder the model was trained with")
    vae.load_state_dict(weights, strict=True)
    return vae


def _ldm_ddconfig(sd):
    """The CompVis ``ddconfig`` of a VAE state dict, from its shapes (GroupNorm is always 32 groups there)."""
    ch = sd["encoder.down.0.block.0.conv1.weight"].shape[1]  # a KeyError for any other layout
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    blocks = {k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")}
    return dict(ch=ch, ch_mult=[sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in levels],
                num_res_blocks=len(blocks), in_channels=sd["encoder.conv_in.weight"].shape[1],
                out_ch=sd["decoder.conv_out.weight"].shape[0], z_channels=sd["decoder.conv_in.weight"].shape[1])
