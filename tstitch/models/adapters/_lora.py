"""LoRA weights in diffusers' format on a Stable Diffusion member (a zoo entry's ``lora``): loaded by diffusers' own
``load_lora_weights`` into the member's UNet and text encoders, weighted with ``set_adapters`` and fused into the
weights, so that a LoRA costs nothing per step. Each member has its own (a LoRA on the large member only, say)."""
import functools
import re
import warnings

from tstitch.errors import ConfigError
from tstitch.models.hub import pretrained


def specs(entry):
    """The entry's ``lora`` (one section or a list of them, checked with the member's config:
    ``tstitch.config.LoraConfig``) as a list of ``{path, scale, weight_name}``."""
    spec = entry.get("lora")
    spec = [] if spec is None else [spec] if isinstance(spec, dict) else list(spec)
    return [{"path": str(lora["path"]), "scale": float(lora.get("scale", 1.0)),
             "weight_name": lora.get("weight_name")} for lora in spec]


def apply(unet, text, loras, name):
    """LoRA weights in diffusers' format, loaded by diffusers' own ``load_lora_weights`` on a pipeline that holds
    this member's UNet and text encoders (a LoRA's text-encoder layers go to its encoders), weighted by
    ``set_adapters`` (a LoRA's ``scale``: what ``cross_attention_kwargs={"scale": s}`` does to one LoRA), then
    fused into the weights (``fuse_lora``, ``unload_lora_weights``): no cost per step, as T-Stitch's LCM demo fused
    its LCM-LoRA."""
    if not loras:
        return
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    (tokenizer, encoder), *second = text.pairs
    if second:
        host = StableDiffusionXLPipeline(vae=None, text_encoder=encoder, text_encoder_2=second[0][1],
                                         tokenizer=tokenizer, tokenizer_2=second[0][0], unet=unet, scheduler=None,
                                         add_watermarker=False)
    else:
        host = StableDiffusionPipeline(vae=None, text_encoder=encoder, tokenizer=tokenizer, unet=unet, scheduler=None,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    fix = (f"set {name}'s lora.path to LoRA weights in diffusers' format made for this model: a .safetensors file, or "
           "a folder or hub repo with pytorch_lora_weights.safetensors (lora.weight_name for another file name)")
    names = [f"lora{i}" for i in range(len(loras))]
    for adapter, lora in zip(names, loras):
        extra = {"weight_name": lora["weight_name"]} if lora["weight_name"] else {}
        with warnings.catch_warnings():  # peft's note on a second adapter: several are what a list of LoRAs asks
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            pretrained(functools.partial(_load_lora, host, adapter, name), lora["path"],
                       what=f"{name}'s LoRA weights", fix=fix, **extra)
        if not any(adapter in found for found in host.get_list_adapters().values()):
            raise ConfigError(f"{lora['path']} holds no LoRA weights for {name}'s UNet or text encoders (none of its "
                              f"keys names one of their layers): it is a LoRA of another model; {fix}")
    host.set_adapters(names, adapter_weights=[lora["scale"] for lora in loras])
    host.fuse_lora(adapter_names=names)
    host.unload_lora_weights()


def _load_lora(host, adapter, name, source, **kwargs):
    """``host.load_lora_weights``; a LoRA whose layers have other shapes than this model's names the first one."""
    try:
        return host.load_lora_weights(source, adapter_name=adapter, **kwargs)
    except RuntimeError as e:
        wrong = re.search(r"size mismatch for ([\w.]+): .*?shape torch.Size\((\[[\d, ]*\])\).*?shape in current model "
                          r"is torch.Size\((\[[\d, ]*\])\)", str(e))
        if wrong is None:
            raise
        layer, theirs, ours = wrong.groups()
        raise ValueError(f"a LoRA of another model: {layer} is {theirs} there, {ours} in {name}") from None
