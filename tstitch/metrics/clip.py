"""CLIP score of text-conditioned samples against their prompts (``tstitch.clip_score``)."""
import numpy as np
import torch

from tstitch import fidelity
from tstitch.errors import ConfigError
from tstitch.metrics import MetricBase, Value


class ClipMetric(MetricBase):
    """CLIP score of text-conditioned samples against their prompts (``tstitch.clip_score``): ``prompts`` is the
    run's prompt set config (the samples.npz labels are indices into it), ``model`` a hub id or local directory."""

    values = (Value("clip_score", "CLIP score", better="higher"),)

    def __init__(self, prompts, model="openai/clip-vit-large-patch14", batch_size=64, device="cpu"):
        from tstitch import prompts as prompt_sets
        from tstitch.clip_score import load_clip

        if not prompts:
            raise ConfigError("metric=clip needs the run's prompt set: prompts=demo, or prompts=file prompts.path=...")
        self.prompts = prompt_sets.load(**prompts)
        self.model, self.batch_size, self.clip = str(model), batch_size, load_clip(model, device)

    def __call__(self, images, prompts) -> dict:
        from tstitch.clip_score import clip_score

        return {"clip_score": clip_score(images, prompts, batch_size=self.batch_size, clip=self.clip)}

    def score_file(self, path, chunk=1024) -> dict:
        """Streamed over the memory-mapped samples: the mean of per-chunk means weighted by their sizes."""
        from tstitch.clip_score import clip_score

        images, labels = fidelity.npz_member(path, "arr_0"), fidelity.npz_member(path, "arr_1")
        total = 0.0
        for start in range(0, len(images), chunk):
            batch = torch.from_numpy(np.array(images[start:start + chunk])).permute(0, 3, 1, 2)
            texts = [self.prompts[int(i)] for i in labels[start:start + chunk]]
            total += clip_score(batch, texts, batch_size=self.batch_size, clip=self.clip) * len(batch)
        return {"clip_score": total / len(images)}

    def describe(self) -> dict:
        return {"model": self.model, "prompts": len(self.prompts)}
