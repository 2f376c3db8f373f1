"""ControlNet (Zhang et al., 2023) on a Stable Diffusion member (a zoo entry's ``controlnet``), run as diffusers'
``StableDiffusionControlNetPipeline`` / ``StableDiffusionXLControlNetPipeline`` run it: the ControlNet sees the
member's input, timestep and condition (its own text embeddings; SDXL: pooled embedding and time ids) and the
control image, and its residuals, times the entry's ``scale`` (``controlnet_conditioning_scale``), are added to
the UNet's skip connections and middle block. Guess mode off, active on every step (``control_guidance_start`` 0,
``control_guidance_end`` 1). The control image comes with each prompt (``tstitch.data.prompts.Prompt``) and goes
into both halves of a guided batch, as the pipelines do under classifier-free guidance.

Checked from the configs, before any of the member's weights load: the ControlNet must cross-attend to the
member's text width, take its latent channels and added conditioning (SDXL's), and return one residual per skip
connection of the member's UNet, with its channels (BK-SDM's UNets, with blocks removed, take none of SD's)."""
import functools
import inspect
import os
import weakref
from pathlib import Path

import torch

from tstitch.errors import ConfigError
from tstitch.models.hub import is_local, pretrained


def spec(entry):
    """The entry's ``controlnet`` (checked with the member's config: ``tstitch.config.ControlNetConfig``) as
    ``{source, scale, subfolder, variant}``, or None."""
    cn = entry.get("controlnet")
    if cn is None:
        return None
    return {"source": str(cn["source"]), "scale": float(cn.get("scale", 1.0)), "subfolder": cn.get("subfolder"),
            "variant": cn.get("variant")}


def fix(name):
    return (f"set {name}'s controlnet.source to a diffusers ControlNetModel made for this model (a hub id such as "
            "diffusers/controlnet-canny-sdxl-1.0, or a directory saved with save_pretrained)")


def config(cn, name):
    """The ControlNet's config (``config.json``), read without its weights."""
    from diffusers import ControlNetModel

    if is_local(cn["source"]) and not Path(cn["source"]).expanduser().exists():
        raise ConfigError(f"{name}: controlnet.source not found: {cn['source']}; {fix(name)}")
    found = pretrained(ControlNetModel.load_config, cn["source"], subfolder=cn["subfolder"],
                       what=f"{name}'s ControlNet config", fix=fix(name))
    if found.get("_class_name") != "ControlNetModel":
        raise ConfigError(f"{name}: {cn['source']} holds a {found.get('_class_name')}, not a ControlNetModel; "
                          f"{fix(name)}")
    return found


def _value(config, cls, key):
    return config.get(key, inspect.signature(cls.__init__).parameters[key].default)


def residuals(config, cls):
    """The channels of the skip connections a UNet (or ControlNet) config's down path makes: the input convolution,
    each block's resnets, and each downsampler (every block but the last), then the middle block's."""
    channels = list(_value(config, cls, "block_out_channels"))
    layers = _value(config, cls, "layers_per_block")
    layers = [layers] * len(channels) if isinstance(layers, int) else list(layers)
    down = [channels[0]]
    for i, (c, n) in enumerate(zip(channels, layers)):
        down += [c] * (n + (i < len(channels) - 1))
    return down, channels[-1]


def check(cn_config, unet_config, name, source):
    """The ControlNet fits the member's UNet: its cross-attention width, latent channels, added conditioning and
    residuals (count and channels); one ConfigError line naming what differs."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    def both(key):
        return _value(cn_config, ControlNetModel, key), _value(unet_config, UNet2DConditionModel, key)

    wrong = [f"{key} {theirs} vs {ours}" for key in ("cross_attention_dim", "in_channels", "addition_embed_type",
                                                     "addition_time_embed_dim", "projection_class_embeddings_input_dim")
             for theirs, ours in [both(key)] if theirs != ours]
    (down, mid), (unet_down, unet_mid) = residuals(cn_config, ControlNetModel), residuals(unet_config,
                                                                                          UNet2DConditionModel)
    if (down, mid) != (unet_down, unet_mid):
        wrong.append(f"skip connections {down} + middle {mid} vs {unet_down} + middle {unet_mid}")
    if wrong:
        raise ConfigError(f"the ControlNet {source} does not fit {name}'s UNet ({'; '.join(wrong)}; ControlNet vs "
                          f"UNet): it was made for another model; {fix(name)}, or remove {name}'s controlnet")
    if _value(cn_config, ControlNetModel, "conditioning_channels") != 3:
        raise ConfigError(f"{name}: the ControlNet {source} takes {cn_config['conditioning_channels']}-channel control "
                          "images; tstitch feeds RGB control images (3 channels): pick an RGB ControlNet")
    if cn_config.get("global_pool_conditions"):
        raise ConfigError(f"{name}: the ControlNet {source} pools its conditions (global_pool_conditions, e.g. "
                          "shuffle), which diffusers runs in guess mode; tstitch runs ControlNets without guess mode: "
                          "pick another ControlNet")


_LOADED = weakref.WeakValueDictionary()  # members with the same ControlNet share one copy while any holds it


def load(cn, name, device, dtype):
    """The ControlNet of ``cn`` on ``device`` in ``dtype``: the copy another member already holds, if one does
    (the SDXL presets give SSD-1B and SDXL the same one), else loaded."""
    from diffusers import ControlNetModel

    key = (cn["source"], cn["subfolder"], cn["variant"], str(device), dtype, _stamp(cn))
    found = _LOADED.get(key)
    if found is None:
        extra = {k: cn[k] for k in ("subfolder", "variant") if cn[k]}
        found = pretrained(ControlNetModel.from_pretrained, cn["source"], what=f"{name}'s ControlNet", fix=fix(name),
                           torch_dtype=dtype, **extra).to(device).eval().requires_grad_(False)
        _LOADED[key] = found
    return found


def _stamp(cn):
    """A local ControlNet's files by name, size and time (another ControlNet saved there is another key)."""
    if not is_local(cn["source"]):
        return None
    folder = Path(cn["source"]).expanduser() / (cn["subfolder"] or "")
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())


class Controlled(torch.nn.Module):
    """A UNet with a ControlNet: one network per step (what ``tstitch.models.fast`` casts, compiles and offloads)
    called as the UNet is, plus ``controlnet_cond``, the control images (B, 3, H, W) in [0, 1]."""

    def __init__(self, unet, controlnet, scale):
        super().__init__()
        self.unet, self.controlnet, self.scale = unet, controlnet, scale
        self.config = unet.config

    def forward(self, x, t, *, encoder_hidden_states, controlnet_cond, timestep_cond=None, added_cond_kwargs=None,
                return_dict=False):
        down, mid = self.controlnet(x, t, encoder_hidden_states=encoder_hidden_states, controlnet_cond=controlnet_cond,
                                    conditioning_scale=self.scale, guess_mode=False,
                                    added_cond_kwargs=added_cond_kwargs, return_dict=False)
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                         added_cond_kwargs=added_cond_kwargs, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)


def images(given, height, width, factor, name):
    """The control images of a batch (one per prompt: a path or a PIL image, None for none) preprocessed as the
    ControlNet pipelines' ``control_image_processor``: RGB, resized to the sample size (``height`` x ``width``
    pixels), in [0, 1], not normalized. (B, 3, height, width) float32 on the CPU."""
    if any(g is None for g in given):
        missing = sum(g is None for g in given)
        raise ConfigError(f"{name} has a ControlNet but {missing} of {len(given)} prompts have no control image; "
                          "give one (pipe(..., control_image=...), prompts.control_image=... or "
                          "prompts.control_image_column=...), or remove its controlnet")
    keys = [_file_key(g) if isinstance(g, (str, os.PathLike)) else id(g) for g in given]
    done = {}
    for key, g in zip(keys, given):
        if key not in done:  # a file by its path, size and time; an image in memory by identity
            done[key] = (_from_file(*key, height, width, factor, name) if isinstance(key, tuple)
                         else _preprocess(g, height, width, factor))
    return torch.cat([done[key] for key in keys])

def _file_key(path):
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        raise ConfigError(f"control image not found: {path}; fix the path (prompts.control_image=..., or the prompt "
                          "file's control image column)") from None
    return str(path), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _from_file(path, size, mtime, height, width, factor, name):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(f"{name}: cannot read the control image {path} ({type(e).__name__}); give a PNG or JPEG "
                          "image") from None
    return _preprocess(image, height, width, factor)


def _preprocess(image, height, width, factor):
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=factor, do_convert_rgb=True, do_normalize=False)
    return processor.preprocess(image, height=height, width=width).to(torch.float32)  # (1, 3, H, W)
