"""LDM family adapter: CompVis latent diffusion's class-conditional U-Net (T-Stitch's LDM-S and LDM, ``ldm/``) behind
the member protocol, read from the official Lightning files unchanged (``tstitch.models.nets.ldm``: diffusers'
``UNet2DConditionModel`` and the ``ClassEmbedder``).

* Weights: ``model.diffusion_model.*`` and ``cond_stage_model.*`` of ``ldm_s.ckpt`` / ``ldm.ckpt``. The official FID
  script (``sample_imagenet_ddp_t_stitch.py``) samples without ``ema_scope``, so the U-Net's own weights are the
  default; ``ema: true`` in the zoo entry takes the EMA copy (``model_ema.*``, what the visualisation script uses).
  The class embedding has no EMA copy. The checkpoint's ``alphas_cumprod`` must be the entry's schedule.
* Condition: the class embedding of each label, one cross-attention token ``(N, 1, embed_dim)``; each member has
  its own (LDM-S 256 wide, LDM 512).
* Unconditional input (``null``): LDM has no null class, and the official script guides with uniform noise shaped
  like the class embedding (``torch.rand_like(c)``, one draw per member). Here it is drawn per sample, from each
  sample's generator (``null_draws``: ``tstitch.sampling.guidance``), as the normal CDF of a standard normal draw,
  which is uniform on (0, 1): sample i's input is a function of its seed alone (``tstitch.data.seeds``). The
  official draws come from one global generator per batch, so they cannot be matched sample by sample; given the
  same unconditional input and noise, sampling is the official (``tests/test_ldm.py``).
* Time: the network gets the DDPM timestep t itself (0 ... 999); guidance is eps_u + w (eps_c - eps_u) on every
  channel, w = 3.0 in the paper (``sampler``).
"""
import numpy as np
import torch

from tstitch.errors import ConfigError
from tstitch.models.checkpoints import fit
from tstitch.models.nets.ldm import (
    EMBEDDER,
    ClassEmbedder,
    lightning_state_dict,
    strip,
    unet_config,
    unet_weights,
)
from tstitch.models.protocols import MemberBase, Output

CONDITION = "labels"  # what a member of this family is conditioned on (class labels or prompts), before loading


class LDMMember(MemberBase):
    family = "ldm"
    null_draws = True
    sampler = {"solver": "ldm_ddim", "steps": 100, "guidance": 3.0}  # T-Stitch's Table 1: DDIM-100 (eta 1), cfg 3

    def __init__(self, net, encoder, name, schedule, space):
        self.net, self.encoder, self.name, self.schedule, self.space = net, encoder, name, schedule, space

    @property
    def num_classes(self):
        return self.encoder.embedding.num_embeddings

    def __call__(self, x, t, cond):
        t_in = torch.full((x.shape[0],), t, device=x.device)
        return Output(self.net(x, t_in, encoder_hidden_states=cond).sample)

    def condition(self, labels):
        """User class labels (0 ... num_classes - 1) -> their embeddings, ``(N, 1, embed_dim)``."""
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ConfigError(f"{self.name}: class labels must be in [0, {self.num_classes}); fix the labels")
        return self.encoder(labels)

    def null(self, cond, randn_like):
        """Uniform noise on (0, 1) shaped like ``cond``, from ``randn_like`` (standard normal draws per sample,
        float32) through the normal CDF."""
        return torch.special.ndtr(randn_like(cond.float())).to(cond.dtype)


def load(entry, schedule, space, device="cpu", dtype=torch.float32):
    name = entry["name"]
    config = unet_config(entry["net"], name)
    embedder = dict(entry.get("embedder") or {})
    if set(embedder) - {"embed_dim", "n_classes"} or embedder.get("embed_dim") != entry["net"]["context_dim"]:
        raise ConfigError(f"zoo entry {name!r}: embedder must be {{embed_dim: {entry['net']['context_dim']}, "
                          "n_classes: 1000}} (the ClassEmbedder of cond_stage_config, as wide as net.context_dim)")
    ema = entry.get("ema", False)
    if not isinstance(ema, bool):
        raise ConfigError(f"zoo entry {name!r}: ema={ema!r} is not allowed: give true (the EMA U-Net) or false")
    from diffusers import UNet2DConditionModel

    net, encoder = UNet2DConditionModel(**config), ClassEmbedder(**embedder)
    if entry.get("checkpoint"):
        sd = lightning_state_dict(entry["checkpoint"])
        _check_schedule(sd, schedule, name, entry["checkpoint"])
        try:
            weights = unet_weights(sd, config, ema, name)
        except (KeyError, IndexError) as e:
            raise ConfigError(f"checkpoint {entry['checkpoint']} does not fit {name} (no {e}); it was saved for "
                              "another U-Net: pick the zoo entry that matches it") from None
        fit(net, weights, entry["checkpoint"], name)
        fit(encoder, strip(sd, EMBEDDER), entry["checkpoint"], f"{name}'s class embedding")
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    encoder = encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LDMMember(net, encoder, name, schedule, space)


def _check_schedule(sd, schedule, name, source):
    """A LatentDiffusion checkpoint stores its ``alphas_cumprod`` (float32): it must be the entry's schedule."""
    if "alphas_cumprod" not in sd:
        return
    stored = sd["alphas_cumprod"].double().numpy()
    if stored.shape != (schedule.num_timesteps,) or not np.allclose(stored, schedule.alphas_cumprod, rtol=1e-6,
                                                                    atol=1e-7):
        raise ConfigError(f"{name}: checkpoint {source} was trained with another noise schedule than the zoo "
                          f"entry's {schedule}; fix the entry's schedule (CompVis linear_start / linear_end are "
                          "scaled_linear's beta_start / beta_end)")
