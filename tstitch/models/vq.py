"""The VQ codec of CompVis latent diffusion (``vq-f8/model.ckpt``, the LDM family's first stage): a CompVis
``VQModel`` checkpoint read into diffusers' ``VQModel`` (``tstitch.models.nets.ldm``), as CompVis's
``VQModelInterface`` runs it under ``LatentDiffusion``:

* ``decode(z)``: each latent vector quantized to its nearest code (taming's lookup), then ``post_quant_conv`` and
  the decoder; the pixels become uint8 as the T-Stitch LDM scripts write them, ``clamp((x + 1) / 2, 0, 1) * 255``
  truncated (not DiT's ``127.5 x + 128``, ``tstitch.models.codecs.to_uint8``), so that samples decoded here are
  byte-identical to theirs.
* ``encode(images)``: the encoder and ``quant_conv``, not quantized (``encode_first_stage`` of a VQ first stage).

The latent scale is 1 (``LatentDiffusion.scale_factor`` of these configs). ``source`` is the VQ checkpoint, or a
LatentDiffusion checkpoint that carries its first stage under ``first_stage_model.``.
"""
import torch

from tstitch.errors import ConfigError
from tstitch.models import checks
from tstitch.models.nets.ldm import FIRST_STAGE, lightning_state_dict, nearest_code, strip, vq_config, vq_weights


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The T-Stitch LDM scripts' rounding: ``clamp((x + 1) / 2, 0, 1) * 255``, truncated to uint8."""
    return (torch.clamp((x.float() + 1.0) / 2.0, min=0.0, max=1.0) * 255.0).to(torch.uint8)


class VQCodec:
    """A CompVis VQ first stage as a codec (see the module docstring); ``chunk_size`` images per decoder call."""

    scale = 1.0

    def __init__(self, source: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 chunk_size: int = 16):
        from diffusers import VQModel

        self.source, self.device, self.dtype, self.chunk_size = str(source), device, dtype, chunk_size
        sd = lightning_state_dict(self.source)
        if any(k.startswith(FIRST_STAGE) for k in sd):
            sd = strip(sd, FIRST_STAGE)
        sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}  # the training loss's networks
        try:
            config = vq_config(sd)
        except KeyError as e:
            raise ConfigError(f"codec {self.source} is not a CompVis VQModel checkpoint (no {e.args[0]}); set codec "
                              "to vq-f8/model.ckpt (see conf/model/ldm/b.yaml)") from None
        vae = VQModel(**config)
        weights, expected = vq_weights(sd, config), vae.state_dict()
        bad = sorted(set(weights) ^ set(expected)) + [k for k in expected if k in weights
                                                      and weights[k].shape != expected[k].shape]
        if bad:
            raise ConfigError(f"codec {self.source} does not fit a CompVis VQModel ({', '.join(bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''}); set codec to the model's own first stage")
        vae.load_state_dict(weights, strict=True)
        self.vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.channels = config["vq_embed_dim"]

    def to(self, device):
        """Decode (and encode) on ``device`` from now on."""
        self.vae.to(device)
        self.device = device
        return self

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 images of latents ``z``; NaN or inf pixels from finite latents are an error."""
        out = []
        for c in z.split(self.chunk_size):
            h = nearest_code(c.to(self.device, self.dtype) / self.scale, self.vae.quantize.embedding.weight)
            pixels = self.vae.decoder(self.vae.post_quant_conv(h))
            broken = checks.bad_rows(pixels)
            if broken:  # the latents' own rows are the sampler's to report
                broken = set(broken) - set(checks.bad_rows(c))
            if broken:
                raise checks.NonFiniteError(f"the decoder {self.source} gave NaN or inf pixels for {len(broken)} of "
                                            f"{len(c)} finite latents; decode in float32")
            out.append(to_uint8(pixels))
        return torch.cat(out).to(z.device)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.vae.quant_conv(self.vae.encoder((c.float() / 127.5 - 1.0).to(self.device, self.dtype)))
               * self.scale for c in images.split(self.chunk_size)]  # CompVis's ImageNet: x / 127.5 - 1
        return torch.cat(out).to(images.device)
