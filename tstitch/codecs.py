"""Codecs between a model's data space and uint8 images (edm2 ``Encoder`` role): raw pixels, or a
diffusers ``AutoencoderKL`` whose ``scaling_factor`` is read from its config, never written as a literal.

Images are uint8 NCHW. The float -> uint8 rounding is DiT's, ``clamp(127.5 x + 128, 0, 255)`` truncated,
so that samples decoded here are byte-identical to the official scripts'.
"""
import importlib.util
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from tstitch.errors import ConfigError


def to_uint8(x):
    return torch.clamp(x.float() * 127.5 + 128.0, 0, 255).to(torch.uint8)


def from_uint8(images):
    return images.float() / 127.5 - 1.0


class PixelCodec:
    """Pixel-space models: the data space is the image in [-1, 1]."""

    scale = 1.0

    def decode(self, x):
        return to_uint8(x)

    def encode(self, images):
        return from_uint8(images)


class VAECodec:
    """A latent space: ``decode(z)`` is ``vae.decode(z / scale)``, ``encode(images)`` the posterior mean times
    ``scale``, in chunks of ``chunk_size`` so that a large batch does not hold every activation at once."""

    def __init__(self, source, subfolder=None, device="cpu", dtype=torch.float32, chunk_size=16):
        self.source, self.device, self.dtype, self.chunk_size = str(source), device, dtype, chunk_size
        self.vae = _load_vae(self.source, subfolder).to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.scale = float(self.vae.config.scaling_factor)

    @torch.inference_mode()
    def decode(self, z):
        out = [to_uint8(self.vae.decode(c.to(self.device, self.dtype) / self.scale).sample)
               for c in z.split(self.chunk_size)]
        return torch.cat(out).to(z.device)

    @torch.inference_mode()
    def encode(self, images):
        out = [self.vae.encode(from_uint8(c).to(self.device, self.dtype)).latent_dist.mean * self.scale
               for c in images.split(self.chunk_size)]
        return torch.cat(out).to(images.device)


def load_codec(spec, space, device="cpu", dtype=torch.float32):
    """The codec named by a zoo entry's ``codec`` (``"pixels"``, a hub id, a local directory, or a dict of
    ``VAECodec`` arguments), checked against the entry's data ``space``."""
    if spec in (None, "pixels"):
        if space.scale != 1.0:
            raise ConfigError(f"space {space.name!r} declares scale {space.scale} but codec is pixels (scale 1); "
                              "set the zoo entry's codec to the VAE the model was trained with")
        return PixelCodec()
    kwargs = {"source": spec} if isinstance(spec, (str, os.PathLike)) else dict(spec)  # dict or DictConfig
    codec = VAECodec(device=device, dtype=dtype, **kwargs)
    if abs(codec.scale - space.scale) > 1e-6:
        raise ConfigError(f"VAE {codec.source} has scaling_factor {codec.scale} but space {space.name!r} declares "
                          f"scale {space.scale}; pick the VAE the model was trained with or fix space.scale")
    channels = codec.vae.config.latent_channels
    if channels != space.shape[0]:
        raise ConfigError(f"VAE {codec.source} has {channels} latent channels but space {space.name!r} has shape "
                          f"{tuple(space.shape)}; pick the VAE the model was trained with")
    return codec


def _load_vae(source, subfolder=None):
    """``AutoencoderKL`` from a local directory or the hub cache; the network is tried only when it answers,
    so an offline machine gets a one-line error at once instead of after the hub's retries."""
    path = Path(source).expanduser()
    if path.exists() or source.startswith(("/", ".", "~")) or source.count("/") > 1:
        if not path.is_dir():
            raise ConfigError(f"VAE directory not found: {path}; set codec to a directory holding config.json and "
                              "the weights (AutoencoderKL.save_pretrained), or to a hub id")
        return _from_pretrained(str(path), subfolder)
    try:
        return _from_pretrained(source, subfolder, local_files_only=True)
    except ConfigError:  # not in the hub cache: download it if the hub can be reached
        pass
    if _offline():
        raise ConfigError(f"VAE {source} is not in the Hugging Face cache and the hub cannot be reached (offline or "
                          f"HF_HUB_OFFLINE); run `hf download {source}` (`huggingface-cli download` in older "
                          "huggingface_hub) on a connected machine and copy the cache, or set codec to a local "
                          "directory")
    return _from_pretrained(source, subfolder)


def _from_pretrained(source, subfolder, **kwargs):
    from diffusers import AutoencoderKL

    try:
        with warnings.catch_warnings():  # diffusers passes a deprecated argument to the hub on every load
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks")
            return AutoencoderKL.from_pretrained(source, subfolder=subfolder, **kwargs,
                                                 low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
    except Exception as e:  # noqa: BLE001 - diffusers and the hub raise many types for a bad source
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"cannot load VAE {source} ({type(e).__name__}: {first}); set codec to a hub id such as "
                          "stabilityai/sd-vae-ft-ema or to a local AutoencoderKL directory") from None


def _offline(timeout=3.0):
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # only the proxy can tell; let the hub try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return False
    except OSError:
        return True
