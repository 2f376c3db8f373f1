"""CLIP score (Hessel et al., 2021) of images against their prompts, with transformers' CLIP.

The score follows torchmetrics' ``CLIPScore``: the mean over samples of 100 * cos(image embedding, text
embedding), floored at 0, default model ``openai/clip-vit-large-patch14``. (torchmetrics 1.9 itself cannot run
with transformers 5, whose ``get_image_features`` returns a model output rather than a tensor; and it cuts
prompts longer than the text model at 77 ids, dropping the end token, where the tokenizer here truncates them.)
The weights come from a local directory (``CLIPModel`` and ``CLIPProcessor`` ``save_pretrained``) or the Hugging
Face cache; offline, an uncached hub id is one line naming the fix. BK-SDM's model cards report cos (not x 100)
with OpenCLIP ViT-g/14, so their 0.2958 (SD v1.4) is not on this scale.

``ClipMetric`` is the metric the commands configure (``metric=clip``); ``clip_score`` and ``load_clip`` are the
functions under it."""
import numpy as np
import torch

from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value, fidelity
from tstitch.models.hub import pretrained

DEFAULT = "openai/clip-vit-large-patch14"


class ClipMetric(MetricBase):
    """CLIP score of text-conditioned samples against their prompts (``clip_score``): ``prompts`` is the
    run's prompt set config (the samples.npz labels are indices into it), ``model`` a hub id or local directory."""

    values = (Value("clip_score", "CLIP score", better="higher"),)

    def __init__(self, prompts, model=DEFAULT, batch_size=64, device="cpu"):
        from tstitch.data import prompts as prompt_sets
        if not prompts:
            raise ConfigError("metric=clip needs the run's prompt set: prompts=demo, or prompts=file prompts.path=...")
        self.prompts = prompt_sets.load(**prompts)
        self.model, self.batch_size, self.clip = str(model), batch_size, load_clip(model, device)

    def __call__(self, images, prompts) -> dict:
        return {"clip_score": clip_score(images, prompts, batch_size=self.batch_size, clip=self.clip)}

    def score_file(self, path, chunk=1024) -> dict:
        """Streamed over the memory-mapped samples: the mean of per-chunk means weighted by their sizes."""
        images, labels = fidelity.npz_member(path, "arr_0"), fidelity.npz_member(path, "arr_1")
        total = 0.0
        for start in range(0, len(images), chunk):
            batch = torch.from_numpy(np.array(images[start:start + chunk])).permute(0, 3, 1, 2)
            texts = [self.prompts[int(i)] for i in labels[start:start + chunk]]
            total += clip_score(batch, texts, batch_size=self.batch_size, clip=self.clip) * len(batch)
        return {"clip_score": total / len(images)}

    def describe(self) -> dict:
        return {"model": self.model, "prompts": len(self.prompts)}



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
