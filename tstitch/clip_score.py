"""CLIP score (Hessel et al., 2021) of images against their prompts, with transformers' CLIP.

The score follows torchmetrics' ``CLIPScore``: the mean over samples of 100 * cos(image embedding, text
embedding), floored at 0, default model ``openai/clip-vit-large-patch14``. (torchmetrics 1.9 itself cannot run
with transformers 5, whose ``get_image_features`` returns a model output rather than a tensor; and it cuts
prompts longer than the text model at 77 ids, dropping the end token, where the tokenizer here truncates them.)
The weights come from a local directory (``CLIPModel`` and ``CLIPProcessor`` ``save_pretrained``) or the Hugging
Face cache; offline, an uncached hub id is one line naming the fix. BK-SDM's model cards report cos (not x 100)
with OpenCLIP ViT-g/14, so their 0.2958 (SD v1.4) is not on this scale.
"""
import torch

from tstitch.hub import pretrained

DEFAULT = "openai/clip-vit-large-patch14"


def load_clip(source=DEFAULT, device="cpu"):
    """``(CLIPModel, CLIPProcessor)`` from a hub id (cache first) or a local directory."""
    from transformers import CLIPModel, CLIPProcessor

    fix = "give a local directory holding CLIPModel and CLIPProcessor (save_pretrained) as the CLIP source"
    model = pretrained(CLIPModel.from_pretrained, source, what="the CLIP model", fix=fix)
    processor = pretrained(CLIPProcessor.from_pretrained, source, what="the CLIP processor", fix=fix)
    return model.to(device).eval().requires_grad_(False), processor


@torch.no_grad()
def clip_score(images, prompts, source=DEFAULT, batch_size=64, device="cpu", clip=None):
    """Mean CLIP score of uint8 NCHW ``images`` against ``prompts`` (one per image), in batches.

    ``clip``: a ``(model, processor)`` pair from ``load_clip``, to score several sets with one load."""
    prompts = list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts; give one prompt per image")
    model, processor = clip if clip is not None else load_clip(source, device)
    device = next(model.parameters()).device
    max_length = model.config.text_config.max_position_embeddings
    total = 0.0
    for start in range(0, len(images), batch_size):
        pixels = processor(images=list(images[start:start + batch_size].cpu()), return_tensors="pt")["pixel_values"]
        text = processor(text=prompts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                         max_length=max_length)
        img = _features(model.get_image_features(pixel_values=pixels.to(device)))       # (B, D)
        txt = _features(model.get_text_features(input_ids=text["input_ids"].to(device),
                                                attention_mask=text["attention_mask"].to(device)))  # (B, D)
        total += float((100 * torch.nn.functional.cosine_similarity(img, txt, dim=-1)).double().sum())
    return max(total / len(images), 0.0)


def _features(out):
    """transformers 4 returns the projected embedding, transformers 5 a model output holding it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
