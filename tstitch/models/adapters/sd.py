"""Stable Diffusion family: diffusers' ``UNet2DConditionModel`` and the model's own CLIP text encoder(s) behind the
member protocol. No pipeline is subclassed or copied: the pieces are loaded with ``from_pretrained`` from a hub id
or a local diffusers directory (``unet/``, ``text_encoder/``, ``tokenizer/``, for SDXL/SSD-1B also
``text_encoder_2/``, ``tokenizer_2/``; ``scheduler/`` and ``vae/`` for their configs).

* Each member encodes prompts with its OWN text encoder(s), so models with different text widths stitch (the
  official T-Stitch pipelines fed the large model's embeddings to both UNets: BK-SDM-v1 on SD-2 crashed with
  ``mat1 and mat2 shapes cannot be multiplied``).
* The prediction type (``epsilon``, ``v_prediction``, ``sample``) is read from the model's scheduler config and
  converted to eps; the config's betas must be the zoo entry's schedule.
* SDXL/SSD-1B (``addition_embed_type: text_time``): penultimate hidden states of both encoders, the pooled
  embedding and the size/crop ``time_ids`` of the image size the latent shape implies. Their null condition is
  zeros when the model's ``force_zeros_for_empty_prompt`` says so (SDXL's default), else the empty prompt.
* LCM UNets (``time_cond_proj_dim``) get the guidance-scale embedding of the zoo entry's ``embedded_guidance``
  as ``timestep_cond`` (the official code gave none to its large LCM UNet). Their guidance is embedded, so, as
  in diffusers' pipelines, classifier-free guidance does not apply to them: their null condition is their
  condition, which makes the CFG combination return their conditional prediction.

* Negative prompts (a prompt's ``negative``, ``tstitch.data.prompts.Prompt``): each member encodes them with its
  own encoder(s), and its null condition is theirs instead of the empty prompt's, as ``negative_prompt`` in
  diffusers' pipelines (SDXL: pooled embedding and time ids too). LCM UNets take none (guidance embedded).
* LoRA (``lora`` in the entry: diffusers-format weights, a scale each) per member, loaded by diffusers'
  ``load_lora_weights`` and fused into that member's UNet and text encoders (``tstitch.models.adapters._lora``).
* ControlNet (``controlnet`` in the entry: ``{source, scale}``) per member, run as diffusers' ControlNet pipelines
  run it, on the control image each prompt carries (``tstitch.models.adapters._control``); its ``net`` is then the
  UNet with its ControlNet.

* ``scheduler_config``: the scheduler the checkpoint ships (``scheduler/scheduler_config.json``; the class named
  by the entry's ``scheduler`` where it names one, e.g. LCM-SDXL's ``LCMScheduler`` on SDXL base's config) and
  ``_pipeline``, the diffusers pipeline that loads the model (``model_index.json``): ``solver=scheduler`` runs
  it as that pipeline does (``StableDiffusionPipeline`` sets ``steps_offset: 1`` and ``clip_sample: false``).

Timesteps: ``solver=scheduler`` runs the scheduler's own grid (SD v1.x: PNDM, "leading" spacing with
``steps_offset: 1``: t = 981, 961, 961, 941, ..., 1 at 50 steps), which is how a diffusers pipeline samples. The
ADM-grid solvers use ADM respacing (``steps=50``: t = round(i * 999 / 49), 0 ... 999; ``steps="ddim50"``: 0, 20,
..., 980, the last step to abar = 1): neither is a diffusers grid.
"""
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import torch

from tstitch.errors import ConfigError
from tstitch.models.adapters import _control as control
from tstitch.models.adapters import _lora as lora
from tstitch.models.adapters._text import load_text_encoders
from tstitch.models.hub import is_local, pretrained
from tstitch.models.protocols import MemberBase, Output
from tstitch.models.schedules import BETAS

CONDITION = "prompts"  # what a member of this family is conditioned on (class labels or prompts), before loading


class SDMember(MemberBase):
    family = "sd"
    cfg_channels = None  # guide every latent channel
    num_classes = None   # conditioned on prompts

    def __init__(self, unet, text, name, schedule, space, *, prediction_type="epsilon", time_ids=None,
                 w_embedding=None, zeros_for_empty=False, scheduler_config=None, control_size=None):
        self.net, self.text, self.name, self.schedule, self.space = unet, text, name, schedule, space
        self.prediction_type, self.time_ids, self.w_embedding = prediction_type, time_ids, w_embedding
        self.zeros_for_empty = zeros_for_empty
        self.scheduler_config = scheduler_config  # what solver=scheduler runs by default (see load)
        self.control_size = control_size  # with a ControlNet: (height, width, VAE factor) of its control images
        self._empty = None
        # the text encoders: moved with the UNet (Lightning) but never offloaded (``fast.offload``), as prompts are
        # encoded once per batch, not per step
        self.encoder = torch.nn.ModuleList([enc for _, enc in text.pairs])

    @property
    def device(self):
        """Where prompts are encoded (the UNet itself may wait in host memory: ``fast.offload``)."""
        return next(self.encoder.parameters()).device

    @property
    def sampler(self):
        """Its pipeline's defaults: the scheduler the checkpoint ships, 50 steps, guidance 7.5 (SDXL: 5.0)."""
        return {"solver": "scheduler", "steps": 50, "guidance": 5.0 if self.time_ids is not None else 7.5}

    @property
    def dtype(self):
        return next(self.net.parameters()).dtype

    @property
    def controlled(self):
        """Whether it runs a ControlNet, which reads each prompt's control image."""
        return self.control_size is not None

    def __call__(self, x, t, cond):
        """eps at timestep ``t`` (a Python int, or a float when stitching across schedules) of this schedule."""
        timestep = torch.as_tensor(t, device=x.device)  # 0-d; the UNet broadcasts it over the batch
        extra = {"controlnet_cond": cond["controlnet_cond"]} if self.controlled else {}
        out = self.net(x.to(self.dtype), timestep, encoder_hidden_states=cond["encoder_hidden_states"],
                        timestep_cond=cond.get("timestep_cond"), added_cond_kwargs=cond.get("added_cond_kwargs"),
                        return_dict=False, **extra)[0].to(x.dtype)
        if self.prediction_type == "epsilon":
            return Output(out)
        a = self.schedule.abar_at(t)  # between timesteps: linear in log-SNR (= log sigma, as k-diffusion)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho, 2022)
            return Output(a ** 0.5 * out + (1 - a) ** 0.5 * x)
        return Output((x - a ** 0.5 * out) / (1 - a) ** 0.5)  # "sample": out is x0

    @property
    def guidance_embedded(self):
        """LCM UNets take the guidance scale as an input (``timestep_cond``): no unconditional half to run."""
        return self.w_embedding is not None

    def condition(self, prompts):
        """A list of prompts -> this member's condition, encoded by its own text encoder(s). Prompts that carry a
        negative prompt (``negative``: ``tstitch.data.prompts.Prompt``) make it a ``Condition`` that keeps them for
        ``null``; with a ControlNet, it holds each prompt's control image (``control``), preprocessed."""
        prompts = _prompt_list(prompts, self.name)
        images = None
        if self.controlled:
            images = control.images([getattr(p, "control", None) for p in prompts], *self.control_size, self.name)
        cond = self._cond(*self.text(prompts, self.device), images)
        negatives = [getattr(p, "negative", None) for p in prompts]
        return cond if all(n is None for n in negatives) else Condition(cond, negatives)

    def null(self, cond):
        """The unconditional condition for a batch like ``cond``: the empty prompt's embeddings (zeros for models
        with ``force_zeros_for_empty_prompt``), or for a prompt with a negative prompt that prompt's embeddings, as
        diffusers' pipelines with ``negative_prompt`` (SDXL: both encoders, its pooled embedding, the same time
        ids); ``cond`` itself for LCM UNets, whose guidance is embedded (their pipelines take no negative prompt).
        It keeps ``cond``'s control images: both halves of a guided batch see them, as in diffusers' pipelines."""
        if self.w_embedding is not None:
            return cond
        null = self._null(cond)
        negatives = getattr(cond, "negatives", None)
        if negatives is None:
            return null
        hidden, pooled = self.text(["" if n is None else n for n in negatives], self.device)
        given = torch.tensor([n is not None for n in negatives], device=hidden.device)  # (B,)
        negative = self._cond(hidden, pooled, cond.get("controlnet_cond"))
        return _rows(given, negative, null)  # no negative prompt: the usual null condition

    def _null(self, cond):
        n, images = cond["encoder_hidden_states"].shape[0], cond.get("controlnet_cond")
        if self.zeros_for_empty:
            pooled = cond.get("added_cond_kwargs", {}).get("text_embeds")
            return self._cond(torch.zeros_like(cond["encoder_hidden_states"]),
                              None if pooled is None else torch.zeros_like(pooled), images)
        if self._empty is None or self._empty[0].device != self.device:
            self._empty = self.text([""], self.device)
        hidden, pooled = self._empty
        return self._cond(hidden.repeat(n, 1, 1), None if pooled is None else pooled.repeat(n, 1), images)

    def _cond(self, hidden, pooled, images=None):
        n, like = hidden.shape[0], dict(device=hidden.device, dtype=self.dtype)
        cond = {"encoder_hidden_states": hidden.to(**like)}  # (B, L, cross_attention_dim)
        if images is not None:
            cond["controlnet_cond"] = images.to(**like)  # (B, 3, H, W) in [0, 1]
        if self.time_ids is not None:
            time_ids = self.time_ids.to(**like).repeat(n, 1)  # (B, 6)
            cond["added_cond_kwargs"] = {"text_embeds": pooled.to(**like), "time_ids": time_ids}
        if self.w_embedding is not None:
            cond["timestep_cond"] = self.w_embedding.to(**like).repeat(n, 1)  # (B, time_cond_proj_dim)
        return cond


def load(entry, schedule, space, device="cpu", dtype=torch.float32):
    """A member from a zoo entry: ``checkpoint`` (hub id or diffusers directory), ``net`` (UNet config values the
    checkpoint must have), optional ``unet: {source, subfolder}`` (a UNet stored elsewhere, e.g. LCM-SDXL),
    ``variant`` (e.g. fp16 weight files), ``embedded_guidance`` (LCM), ``scheduler`` (the diffusers scheduler class
    the model runs with its checkpoint's scheduler config, where it is not the shipped one), ``lora`` (LoRA weights
    in diffusers' format, ``{path, scale, weight_name}`` or a list of them: ``adapters._lora``), ``controlnet``
    (``{source, scale, subfolder, variant}``: ``adapters._control``, checked against the UNet's config before any
    weights load). ``space`` is checked against the model's VAE config (``<checkpoint>/vae``; the ``codec``
    directory for a checkpoint without one)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    name, source = entry["name"], entry.get("checkpoint")
    fix = (f"set {name}'s checkpoint to a hub id such as CompVis/stable-diffusion-v1-4 or to a diffusers model "
           "directory (pipe.save_pretrained)")
    if not source:
        raise ConfigError(f"zoo entry {name!r} has no checkpoint; {fix}")
    source = str(source)
    unet_source, unet_sub = _unet_location(entry, source)
    _check_local_dir(name, unet_source, unet_sub, fix)
    extra = {"variant": entry["variant"]} if entry.get("variant") else {}
    loras = lora.specs(entry)  # checked with the entry before any weights load
    controlnet = control.spec(entry)

    unet_config = pretrained(UNet2DConditionModel.load_config, unet_source, subfolder=unet_sub,
                             what="the UNet config", fix=fix)
    if unet_config.get("_class_name") != "UNet2DConditionModel":
        raise ConfigError(f"{unet_source} holds a {unet_config.get('_class_name')}, not a UNet2DConditionModel; "
                          "the sd family is Stable Diffusion UNets: pick the zoo entry of that model's family")
    _check_net(unet_config, entry["net"], name, unet_source)
    if controlnet is not None:
        control.check(control.config(controlnet, name), unet_config, name, controlnet["source"])
    scheduler_config = pretrained(DDIMScheduler.load_config, source, subfolder="scheduler",
                                  what="the scheduler config", fix=fix)
    prediction_type = _check_schedule(scheduler_config, schedule, name, source)
    factor = _check_space(_vae_config(entry, source, fix), unet_config, space, name)

    unet = pretrained(UNet2DConditionModel.from_pretrained, unet_source, subfolder=unet_sub, what="the UNet",
                      fix=fix, torch_dtype=dtype, low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
                      **extra).to(device).eval().requires_grad_(False)
    text_time = unet.config.addition_embed_type == "text_time"
    text = load_text_encoders(source, ["text_encoder", "text_encoder_2"] if text_time else ["text_encoder"],
                              penultimate=text_time, device=device, dtype=dtype, fix=fix, **extra)
    if text.width != unet.config.cross_attention_dim:
        raise ConfigError(f"{name}: its text encoder(s) are {text.width} wide but its UNet cross-attends to "
                          f"{unet.config.cross_attention_dim}; the checkpoint mixes models: {fix}")
    lora.apply(unet, text, loras, name)
    net, control_size = unet, None
    if controlnet is not None:
        net = control.Controlled(unet, control.load(controlnet, name, device, dtype), controlnet["scale"])
        control_size = (space.shape[1] * factor, space.shape[2] * factor, factor)
    time_ids = _time_ids(unet, text, space, factor, name) if text_time else None
    index = _model_index(source)
    zeros = text_time and bool(index.get("force_zeros_for_empty_prompt", True))  # SDXL pipelines' default: true
    w_embedding = _w_embedding(entry, unet, name)
    pipeline = index.get("_class_name") or ("StableDiffusionXLPipeline" if text_time else "StableDiffusionPipeline")
    shipped = {**scheduler_config, "_class_name": entry.get("scheduler") or scheduler_config.get("_class_name"),
               "_pipeline": pipeline}
    return SDMember(net, text, name, schedule, space, prediction_type=prediction_type, time_ids=time_ids,
                    w_embedding=None if w_embedding is None else w_embedding.to(device=device, dtype=dtype),
                    zeros_for_empty=zeros, scheduler_config=shipped, control_size=control_size)


class Condition(dict):
    """A condition whose prompts carry negative prompts (``negatives``: one per row, None where a prompt has none),
    which ``SDMember.null`` encodes."""

    def __init__(self, cond, negatives):
        super().__init__(cond)
        self.negatives = list(negatives)


def _rows(mask, a, b):
    """The condition ``a`` in the rows where ``mask`` (B,) is true and ``b`` elsewhere, key by key."""
    if isinstance(a, dict):
        return {k: _rows(mask, a[k], b[k]) for k in a}
    return torch.where(mask.view(-1, *[1] * (a.ndim - 1)), a, b)


def _prompt_list(prompts, name):
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts) if not isinstance(prompts, torch.Tensor) else None
    if prompts is None or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ConfigError(f"{name} is a text-to-image model: condition it on a list of prompts (strings, e.g. "
                          "tstitch.data.prompts.load(...)), not class labels")
    return prompts


def _unet_location(entry, source):
    spec = entry.get("unet") or {}
    unknown = set(spec) - {"source", "subfolder"}
    if unknown:
        raise ConfigError(f"zoo entry {entry['name']!r}: unet takes source and subfolder, not {sorted(unknown)}")
    return str(spec.get("source") or source), spec.get("subfolder", "unet")


def _check_local_dir(name, source, subfolder, fix):
    if not is_local(source):
        return
    path = Path(source).expanduser()
    if path.is_file():
        raise ConfigError(f"{name}: checkpoint {path} is a file, but the sd family loads diffusers model directories "
                          "(unet/, text_encoder/, tokenizer/, scheduler/, vae/): a single-file SD checkpoint converts "
                          "with StableDiffusionPipeline.from_single_file(path).save_pretrained(dir); a DiT state dict "
                          "belongs to a dit zoo entry")
    if not path.is_dir():
        raise ConfigError(f"{name}: checkpoint directory not found: {path}; {fix}")
    if not (path / (subfolder or "") / "config.json").is_file():
        raise ConfigError(f"{name}: {path} holds no diffusers UNet ({Path(subfolder or '.') / 'config.json'} missing), "
                          f"so it is not a Stable Diffusion model directory; {fix}")


def _default(cls, key):
    return inspect.signature(cls.__init__).parameters[key].default


def _check_net(config, expected, name, source):
    from diffusers import UNet2DConditionModel

    params = inspect.signature(UNet2DConditionModel.__init__).parameters
    wrong = []
    for key, want in dict(expected or {}).items():
        if key not in params:
            raise ConfigError(f"zoo entry {name!r}: net.{key} is not a UNet2DConditionModel config key")
        have = config.get(key, params[key].default)
        norm = [list(v) if isinstance(v, (list, tuple)) else v for v in (have, want)]
        if norm[0] != norm[1]:
            wrong.append(f"{key} {have} vs {want}")
    if wrong:
        raise ConfigError(f"checkpoint {source} does not fit {name} ({', '.join(wrong)}); it is another model: pick "
                          "the zoo entry that matches it or fix the checkpoint")


def _check_schedule(config, schedule, name, source):
    """The scheduler config's betas must be the zoo entry's schedule; returns its prediction type."""
    kind, steps = config.get("beta_schedule", "linear"), config.get("num_train_timesteps", 1000)
    ok = (kind in BETAS and kind != "cosine" and not config.get("trained_betas")
          and not config.get("rescale_betas_zero_snr") and steps == schedule.num_timesteps
          and np.allclose(BETAS[kind](steps, config.get("beta_start", 1e-4), config.get("beta_end", 0.02)),
                          schedule.betas, rtol=1e-6, atol=0))
    if not ok:
        raise ConfigError(f"{name}: the scheduler config of {source} ({kind}, {config.get('beta_start')} ... "
                          f"{config.get('beta_end')}, {steps} steps) is not the zoo entry's schedule {schedule}; "
                          "fix the entry's schedule")
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ConfigError(f"{name}: unknown prediction_type {prediction_type!r} in {source}/scheduler")
    return prediction_type


def _vae_config(entry, source, fix):
    """The config of the VAE the model was trained with: ``<checkpoint>/vae``, or for a local directory without
    one, the entry's ``codec`` (a diffusers VAE directory or hub id)."""
    from diffusers import AutoencoderKL

    spec = {"source": source, "subfolder": "vae"}
    if is_local(source) and not (Path(source).expanduser() / "vae" / "config.json").is_file():
        codec = entry.get("codec")
        codec = {"source": codec} if isinstance(codec, (str, Path)) else dict(codec or {})
        vae = str(codec.get("source", "pixels"))
        if vae == "pixels" or (is_local(vae) and Path(vae).expanduser().is_file()):
            raise ConfigError(f"{entry['name']}: {source} has no vae/config.json and its codec names no diffusers VAE "
                              "directory, so its latent space cannot be checked; set codec to {source: <VAE "
                              "directory or hub id>, subfolder: ...}")
        spec = {"source": vae, "subfolder": codec.get("subfolder")}
    return pretrained(AutoencoderKL.load_config, spec["source"], subfolder=spec["subfolder"],
                      what="the VAE config", fix="set codec to the model's VAE ({source: ..., subfolder: vae}); "
                      + fix)


def _check_space(vae, unet, space, name):
    """The entry's data space must be the VAE's latent space; returns the VAE's spatial factor (8 for SD)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    scale = vae.get("scaling_factor", _default(AutoencoderKL, "scaling_factor"))
    channels = vae.get("latent_channels", _default(AutoencoderKL, "latent_channels"))
    unet_in = unet.get("in_channels", _default(UNet2DConditionModel, "in_channels"))
    unet_out = unet.get("out_channels", _default(UNet2DConditionModel, "out_channels"))
    if abs(scale - space.scale) > 1e-6:
        raise ConfigError(f"{name}: its VAE has scaling_factor {scale} but space {space.name!r} declares scale "
                          f"{space.scale}; fix the entry's space (SD 1.x/2.x VAE: sd-kl-f8 0.18215, SDXL VAE: "
                          "sdxl-vae 0.13025): it is the latent space of the VAE the model was trained with")
    if not channels == unet_in == unet_out == space.shape[0]:
        raise ConfigError(f"{name}: VAE latent channels {channels}, UNet in/out channels {unet_in}/{unet_out} and "
                          f"space shape {tuple(space.shape)} disagree; fix the entry's space")
    return 2 ** (len(vae.get("block_out_channels", _default(AutoencoderKL, "block_out_channels"))) - 1)


def _time_ids(unet, text, space, factor, name):
    """SDXL micro-conditioning (original size, crop top-left, target size) for the image size of ``space``."""
    height, width = space.shape[1] * factor, space.shape[2] * factor
    projection = text.pairs[-1][1].config.projection_dim
    passed = unet.config.addition_time_embed_dim * 6 + projection
    if passed != unet.add_embedding.linear_1.in_features:
        raise ConfigError(f"{name}: the UNet's added embedding takes {unet.add_embedding.linear_1.in_features} "
                          f"values but 6 time ids and a {projection}-d pooled text embedding give {passed}; the "
                          "checkpoint mixes models")
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=unet.dtype, device=unet.device)


def _model_index(source):
    """The checkpoint's ``model_index.json`` (its pipeline class, SDXL's ``force_zeros_for_empty_prompt``); empty
    for a directory without one."""
    from diffusers import DiffusionPipeline

    try:
        return dict(pretrained(DiffusionPipeline.load_config, source, what="model_index.json", fix=""))
    except ConfigError:
        return {}


def _w_embedding(entry, unet, name):
    """LCM: the UNet's guidance-scale embedding of w - 1 (w = ``embedded_guidance``), computed by diffusers'
    own ``get_guidance_scale_embedding`` (VDM's sinusoidal embedding), as its LCM and SDXL pipelines do."""
    w, dim = entry.get("embedded_guidance"), unet.config.time_cond_proj_dim
    if dim is None:
        if w is not None:
            raise ConfigError(f"zoo entry {name!r} sets embedded_guidance but its UNet has no time_cond_proj_dim "
                              "(not an LCM); remove embedded_guidance")
        return None
    if w is None:
        raise ConfigError(f"{name} is an LCM UNet (time_cond_proj_dim {dim}): set the zoo entry's embedded_guidance "
                          "(the guidance scale it embeds, e.g. embedded_guidance: 8.0)")
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([float(w) - 1.0])
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)  # (1, dim)
