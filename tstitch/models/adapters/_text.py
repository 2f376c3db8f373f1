"""The CLIP text encoders of the Stable Diffusion family (``tstitch.models.adapters.sd``), loaded through
``tstitch.models.hub.pretrained``."""
import torch

from tstitch.models.hub import pretrained


class TextEncoders:
    """The tokenizer/text-encoder pairs of one model, run as its pipeline runs them.

    SD 1.x/2.x (``penultimate=False``): the last hidden state of ``text_encoder`` (attention mask only when its
    config asks for one). SDXL/SSD-1B (``penultimate=True``): the penultimate hidden states of both encoders,
    concatenated on the feature axis, and the pooled, projected embedding of the last encoder that has one
    (``text_encoder_2``, a ``CLIPTextModelWithProjection``).
    """

    def __init__(self, pairs, penultimate):
        self.pairs, self.penultimate = list(pairs), penultimate

    @property
    def width(self):
        return sum(encoder.config.hidden_size for _, encoder in self.pairs)

    @torch.no_grad()
    def __call__(self, prompts, device):
        """``(hidden (B, L, width), pooled (B, P) or None)`` for a list of prompts."""
        hidden, pooled = [], None
        for tokenizer, encoder in self.pairs:
            tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
            ids = tokens.input_ids.to(device)
            if not self.penultimate:
                masked = getattr(encoder.config, "use_attention_mask", False)
                mask = tokens.attention_mask.to(device) if masked else None
                hidden.append(encoder(ids, attention_mask=mask)[0])  # last_hidden_state (B, L, D)
                continue
            out = encoder(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # a projection model: out[0] is the pooled text embedding (B, P)
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1), pooled


def load_text_encoders(source, subfolders, *, penultimate, device="cpu", dtype=torch.float32, variant=None, fix):
    """``TextEncoders`` for the ``subfolders`` (``text_encoder``, ``text_encoder_2``) of a diffusers model;
    ``tokenizer``/``tokenizer_2`` are read beside them."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    pairs = []
    for sub in subfolders:
        cls = CLIPTextModelWithProjection if sub.endswith("_2") else CLIPTextModel
        tok_sub = sub.replace("text_encoder", "tokenizer")
        tokenizer = pretrained(CLIPTokenizer.from_pretrained, source, subfolder=tok_sub, what=f"the {tok_sub}",
                               fix=fix)
        extra = {"variant": variant} if variant else {}
        encoder = pretrained(cls.from_pretrained, source, subfolder=sub, what=f"the {sub}", fix=fix, **extra)
        pairs.append((tokenizer, encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)))
    return TextEncoders(pairs, penultimate)
