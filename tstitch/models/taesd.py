"""TAESD (madebyollin, "Tiny AutoEncoder for Stable Diffusion"): diffusers' ``AutoencoderTiny`` as a fast decoder
of Stable Diffusion latents, for previews and grids. ``madebyollin/taesd`` decodes SD 1.x/2.x latents (space
``sd-kl-f8``), ``madebyollin/taesdxl`` SDXL's (``sdxl-vae``); a local directory saved with ``save_pretrained``
works too. It takes the diffusion model's latents as they are (its ``scaling_factor`` is 1) and is a fraction of
the VAE decoder's cost, with softer detail: its images are not the VAE's.

It is a codec like any other (``tstitch.models.codecs.load_codec`` recognises it by its config's class), so it is
used only where a user names it: ``stitch.codec=madebyollin/taesd``, a zoo entry's ``codec`` or
``tstitch.pipeline(..., codec=...)``. The run's identity then holds its spec and content and every record names it
as the decoder (a resume with another decoder is refused), and loading it prints one line saying that FID or CLIP
scores of its images are not those of the model's VAE.
"""
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from tstitch.errors import ConfigError
from tstitch.models.checks import warn
from tstitch.models.hub import is_local, pretrained

KNOWN = {"madebyollin/taesd": "sd-kl-f8", "madebyollin/taesdxl": "sdxl-vae"}  # hub id -> the space it decodes
FIX = ("set codec to madebyollin/taesd (SD 1.x/2.x), madebyollin/taesdxl (SDXL) or a local AutoencoderTiny "
       "directory (save_pretrained)")


def is_tiny(source, subfolder=None) -> bool:
    """Whether a codec source is an ``AutoencoderTiny``: a known hub id, or a directory (or cached hub snapshot)
    whose ``config.json`` names that class."""
    source = str(source)
    if source in KNOWN:
        return True
    config = _config_file(source, subfolder)
    try:
        return config is not None and json.loads(Path(config).read_text()).get("_class_name") == "AutoencoderTiny"
    except (OSError, ValueError):
        return False


def _config_file(source, subfolder):
    if is_local(source):
        path = Path(source).expanduser() / (subfolder or "") / "config.json"
        return path if path.is_file() else None
    if source.count("/") != 1:  # neither a path nor owner/name
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(source, "config.json", subfolder=subfolder)
    except Exception:  # noqa: BLE001 - an invalid repo id: not a hub model, so not a tiny autoencoder
        return None
    return found if isinstance(found, str) else None


class Tiny(torch.nn.Module):
    """An ``AutoencoderTiny`` behind the calls ``codecs.VAECodec`` makes of an ``AutoencoderKL``: ``config``
    (``scaling_factor``, ``latent_channels``), ``decode(z).sample`` (pixels in [-1, 1]) and
    ``encode(x).latent_dist.mean`` (its encoder is deterministic: the latents)."""

    tiny = True

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def decode(self, z):
        return self.model.decode(z)

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=self.model.encode(x).latents))


def load(source, subfolder=None, scaling_factor=None):
    """The ``AutoencoderTiny`` of ``source`` (a hub id or a local directory, through ``tstitch.models.hub``) as a
    ``Tiny``; one warning line says what its images are."""
    if scaling_factor is not None:
        raise ConfigError(f"{source} is a tiny autoencoder (TAESD), which takes the model's latents as they are; "
                          "remove codec.scaling_factor")
    from diffusers import AutoencoderTiny

    model = pretrained(AutoencoderTiny.from_pretrained, str(source), subfolder=subfolder,
                       what="the tiny autoencoder (TAESD)", fix=FIX)
    warn(f"decoding with the tiny autoencoder {source} (TAESD): fast previews, not the model's VAE; FID or CLIP "
         "scores of these images are not comparable with the VAE's (stitch.codec=null for the member's own)")
    return Tiny(model)


def check(source, space):
    """A known TAESD must be the one made for the members' latent space."""
    made_for = KNOWN.get(str(source))
    if made_for is not None and space.name in KNOWN.values() and made_for != space.name:
        other = next(k for k, v in KNOWN.items() if v == space.name)
        raise ConfigError(f"{source} decodes {made_for} latents, but the members' space is {space.name!r}; set codec "
                          f"to {other}")
