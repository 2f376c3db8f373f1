"""CompVis latent diffusion (Rombach et al., 2022) as diffusers modules, read from the official Lightning files.

* The class-conditional U-Net, CompVis ``openaimodel.UNetModel`` with a spatial transformer, is diffusers'
  ``UNet2DConditionModel``: ``unet_config`` turns the official ``unet_config.params`` (a zoo entry's ``net``) into
  diffusers' config (a cross-attention block at each level whose downsampling factor is in
  ``attention_resolutions`` and always in the middle, ``channels / num_head_channels`` heads per level, 1x1-conv
  projections) and diffusers' ``convert_ldm_unet_checkpoint`` renames the weights (``model.diffusion_model.*``, or
  the EMA copy ``model_ema.*`` that ``LitEma`` stores with the dots removed).
* The class embedding, CompVis ``ClassEmbedder`` (``cond_stage_model.embedding.weight``): one token of
  cross-attention context per label, ``(N, 1, embed_dim)``.
* The VQ first stage, CompVis ``VQModel`` (``vq-f8/model.ckpt``), is diffusers' ``VQModel``: its ``ddconfig`` is read
  off the weights, including the levels with attention blocks (vq-f8 has them at 32x32), which become diffusers'
  ``AttnDownEncoderBlock2D`` / ``AttnUpDecoderBlock2D``. ``nearest_code`` is taming's ``VectorQuantizer2`` lookup,
  its distance expanded as taming writes it, ``|z|^2 + |e|^2 - 2 z.e`` (diffusers' quantizer takes ``cdist``, whose
  rounding may resolve a near tie otherwise).
* ``lightning_state_dict``: the ``state_dict`` of a PyTorch Lightning 1.x checkpoint (these files were written by
  it), read with ``torch.load(weights_only=True)`` and stand-ins for the few non-tensor classes those files name.
"""
import re

import numpy as np
import torch
from torch import nn

from tstitch.errors import ConfigError
from tstitch.models.checkpoints import load_state_dict

UNET = "model.diffusion_model."
EMBEDDER = "cond_stage_model."
FIRST_STAGE = "first_stage_model."

# CompVis UNetModel keywords (the official yaml's unet_config.params): required, and the optional ones with the only
# value diffusers' UNet2DConditionModel reproduces
UNET_REQUIRED = ("in_channels", "out_channels", "model_channels", "attention_resolutions", "num_res_blocks",
                 "channel_mult", "context_dim")
UNET_FIXED = {"use_spatial_transformer": True, "transformer_depth": 1, "dims": 2, "conv_resample": True,
              "use_scale_shift_norm": False, "resblock_updown": False, "num_classes": None, "n_embed": None,
              "use_fp16": False}
UNET_FREE = ("image_size", "num_head_channels", "num_heads", "legacy", "use_checkpoint", "use_new_attention_order",
             "dropout")  # no effect on the outputs in evaluation (the heads: checked in unet_config)


class _LightningCallback:
    """Stand-in for a class a Lightning 1.x checkpoint names (``callbacks`` is keyed by the callback's class)."""


_SCALAR = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar  # numpy 2 / numpy 1
LIGHTNING_GLOBALS = [(_LightningCallback, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
                     (_SCALAR, "numpy.core.multiarray.scalar"), _SCALAR, np.dtype,  # numpy 1 wrote numpy.core
                     *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)}]


def lightning_state_dict(source):
    """The state dict of a CompVis / PyTorch Lightning checkpoint (``{"state_dict": ...}``), a plain state dict
    or safetensors file at ``source``; ``ConfigError`` naming the fix for a missing or unreadable file."""
    with torch.serialization.safe_globals(LIGHTNING_GLOBALS):
        return load_state_dict(source)


def strip(sd, prefix):
    """The entries of ``sd`` under ``prefix``, without it."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


class ClassEmbedder(nn.Module):
    """CompVis ``ClassEmbedder``: class labels -> one context token each, ``(N, 1, embed_dim)``."""

    def __init__(self, embed_dim, n_classes=1000):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, embed_dim)

    def forward(self, labels):
        return self.embedding(labels[:, None])


# ------------------------------------------------------------------------------------------------ U-Net


def unet_config(net, name="ldm"):
    """diffusers ``UNet2DConditionModel`` keyword arguments of the CompVis ``UNetModel`` keywords ``net``."""
    net = dict(net)
    missing = [k for k in UNET_REQUIRED if k not in net]
    unknown = [k for k in net if k not in (*UNET_REQUIRED, *UNET_FIXED, *UNET_FREE)]
    if missing or unknown:
        raise ConfigError(f"zoo entry {name!r}: net needs the CompVis UNetModel keys {list(UNET_REQUIRED)}"
                          + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    wrong = [f"{k}={net[k]!r}" for k, v in UNET_FIXED.items() if k in net and net[k] != v]
    if wrong:
        raise ConfigError(f"zoo entry {name!r}: net.{', net.'.join(wrong)} is not supported; the ldm family runs "
                          f"CompVis UNetModels with {', '.join(f'{k}={v}' for k, v in UNET_FIXED.items())}")
    channels = [net["model_channels"] * m for m in net["channel_mult"]]
    heads = [_heads(c, net, name) for c in channels]
    attention = [2 ** level in net["attention_resolutions"] for level in range(len(channels))]
    return dict(sample_size=net.get("image_size", 32), in_channels=net["in_channels"],
                out_channels=net["out_channels"], block_out_channels=channels,
                layers_per_block=net["num_res_blocks"], cross_attention_dim=net["context_dim"],
                attention_head_dim=heads,  # diffusers' historical name: the number of heads per level
                down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
                up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attention][::-1])


def _heads(channels, net, name):
    """Attention heads at a level of ``channels``, as CompVis: ``channels / num_head_channels``, else ``num_heads``
    (heads of ``channels / heads`` each)."""
    per_head = net.get("num_head_channels", -1)
    heads = channels // per_head if per_head != -1 else net.get("num_heads", -1)
    if heads < 1 or channels % heads:
        raise ConfigError(f"zoo entry {name!r}: {channels} channels do not split into heads of "
                          f"num_head_channels={per_head} / num_heads={net.get('num_heads')}; fix net")
    return heads


def unet_weights(sd, config, ema=False, name="ldm"):
    """diffusers-named U-Net weights of a CompVis LatentDiffusion state dict: ``model.diffusion_model.*``, or with
    ``ema`` their EMA copies (``model_ema.<the same name without dots>``)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    keys = [k for k in sd if k.startswith(UNET)]
    if not keys:
        raise ConfigError(f"the checkpoint of {name!r} holds no {UNET}* weights: it is not a CompVis "
                          "LatentDiffusion checkpoint (ldm_s.ckpt, ldm.ckpt); fix the zoo entry's checkpoint")
    if ema:
        flat = {k: "model_ema." + k[len("model."):].replace(".", "") for k in keys}
        absent = [k for k in keys if flat[k] not in sd]
        if absent:
            raise ConfigError(f"the checkpoint of {name!r} has no EMA copy of {absent[0]} ({flat[absent[0]]}); "
                              "set the zoo entry's ema: false")
        sd = {k: sd[flat[k]] for k in keys}
    return convert_ldm_unet_checkpoint({k: sd[k] for k in keys}, config)


# ------------------------------------------------------------------------------------------------ VQ first stage


def vq_config(sd):
    """diffusers ``VQModel`` keyword arguments of a CompVis VQModel state dict (no prefix), read off its shapes:
    ``ch``, ``ch_mult``, ``num_res_blocks``, the levels with attention blocks, ``z_channels``, the codebook.
    GroupNorm has 32 groups there. A ``KeyError`` for any other layout."""
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    blocks = {k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")}
    attention = [any(k.startswith(f"encoder.down.{i}.attn.") for k in sd) for i in levels]
    n_embed, embed_dim = sd["quantize.embedding.weight"].shape
    return dict(in_channels=sd["encoder.conv_in.weight"].shape[1], out_channels=sd["decoder.conv_out.weight"].shape[0],
                block_out_channels=[sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels],
                layers_per_block=len(blocks), latent_channels=sd["decoder.conv_in.weight"].shape[1],
                down_block_types=["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attention],
                up_block_types=["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in attention][::-1],
                num_vq_embeddings=n_embed, vq_embed_dim=embed_dim, norm_num_groups=32, scaling_factor=1.0)


LEVEL_ATTENTION = re.compile(r"^(encoder\.down|decoder\.up)\.(\d+)\.attn\.(\d+)\.")


def vq_weights(sd, config):
    """diffusers-named ``VQModel`` weights of a CompVis VQModel state dict (no prefix): diffusers' own VAE
    conversion for the encoder, decoder and middle attention, the level attention blocks renamed here as diffusers
    renames the middle one (1x1 convs to linear layers), the codebook and the 1x1 convs around it as they are."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, update_vae_attentions_ldm_to_diffusers

    levels = len(config["down_block_types"])
    attention = {k: v for k, v in sd.items() if LEVEL_ATTENTION.match(k)}
    out = convert_ldm_vae_checkpoint({k: v for k, v in sd.items() if k not in attention}, config)
    for key in attention:
        part, level, block = LEVEL_ATTENTION.match(key).groups()
        new = (f"encoder.down_blocks.{level}" if part == "encoder.down"
               else f"decoder.up_blocks.{levels - 1 - int(level)}") + f".attentions.{block}."
        update_vae_attentions_ldm_to_diffusers([key], out, attention, {"old": LEVEL_ATTENTION.match(key).group(0),
                                                                        "new": new})
    for key in ("quantize.embedding.weight", "quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight",
                "post_quant_conv.bias"):
        out[key] = sd[key]
    return out


def nearest_code(z, codebook):
    """taming ``VectorQuantizer2`` (CompVis VQModel's quantizer) in evaluation: each latent vector of ``z``
    ``(N, C, H, W)`` replaced by its nearest codebook row, through the same straight-through sum
    ``z + (e - z)`` (which need not round to ``e`` exactly)."""
    zf = z.permute(0, 2, 3, 1).contiguous()
    flat = zf.view(-1, codebook.shape[1])
    d = (torch.sum(flat ** 2, dim=1, keepdim=True) + torch.sum(codebook ** 2, dim=1)
         - 2 * torch.einsum("bd,dn->bn", flat, codebook.t()))
    e = codebook[torch.argmin(d, dim=1)].view(zf.shape)
    return (zf + (e - zf)).permute(0, 3, 1, 2).contiguous()
