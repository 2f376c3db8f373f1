"""Load, sample and decode in one call, as diffusers users expect: a stitched pipeline that returns PIL images.

    pipe = tstitch.pipeline(["sd/bk_sdm_tiny", "sd/v1_4"], fractions=[0.4, 0.6])
    images = pipe(["a red bicycle", "a lighthouse at dusk"], seeds=[0, 1])   # two PIL images
    pipe.result.nfe                                                          # model calls per member: [20, 31]
    pipe(["a red bicycle"], negative_prompts=["blurry, low quality"])        # diffusers' negative_prompt
    pipe(["a house"], control_image="edges.png")                             # members with a ControlNet

Negative prompts (one per prompt, or one for all) replace the empty prompt in the unconditional branch of
classifier-free guidance; each Stable Diffusion member encodes them with its own text encoder(s)
(``tstitch.data.prompts.Prompt``). A member's LoRA weights and ControlNet are keys of its zoo entry (``lora``,
``controlnet``, see ``tstitch.models.adapters.sd``); the control image (one for all prompts, or one per prompt: a
file's path or a PIL image) goes to every member with a ControlNet, as diffusers' ControlNet pipelines' ``image``.

Members are zoo names (``conf/model/...``), zoo entry dicts or members already loaded (then give ``codec``). The
decoder is the last member's own (its zoo entry's ``codec``). Conditions are prompts for text-to-image members and
class indices for class-conditional ones. Image i is a function of its seed alone, drawn as ``tstitch-generate``
draws it (noise, then a class label, then the solver's noise), so a seed's image here is the generator's image of
that seed whenever the condition is the same.

Defaults are the last member's family's own sampler (``member.sampler``, set by its adapter): Stable Diffusion runs
the scheduler the model ships (``solver=scheduler``), 50 steps, guidance 7.5 (SDXL 5.0), as
``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``; U-ViT its DPM-Solver, 50 steps, guidance 1.4 (official
scale 0.4) where it has a null class; DiT DDIM at 100 steps, guidance 1.5 (the T-Stitch DiT setting); LDM DDIM on
CompVis's grid at 100 steps with eta 1, guidance 3.0 (T-Stitch's Table 1).
"""
import numbers
from collections.abc import Iterable, Sequence

import torch
from PIL import Image

from tstitch.data import seeds as seeding
from tstitch.data.prompts import with_control_images, with_negatives
from tstitch.errors import ConfigError
from tstitch.models import checks
from tstitch.models.codecs import load_codec
from tstitch.models.zoo import entry
from tstitch.sampling.sample import as_members, check, sample


def _codec_spec(spec):
    if isinstance(spec, str):
        return entry(spec).get("codec", "pixels")
    if isinstance(spec, dict):
        return spec.get("codec", "pixels")
    return None


class Pipeline:
    """Stitched members with their decoder, loaded once; calling it samples and decodes (see the module docstring).
    ``fractions``, ``solver``, ``steps``, ``guidance``, ``rule`` and solver options set the defaults of each call."""

    def __init__(self, members: Sequence, fractions: Sequence[float] | None = None, *, codec=None,
                 solver: str | None = None, steps: int | str | None = None, guidance: float | None = None,
                 rule: str = "steps", device: str = "cpu", **solver_options):
        specs = [members] if isinstance(members, (str, dict)) else list(members)
        if not specs:
            raise ConfigError("give one or more members: zoo names such as 'toy/large', entries or loaded members")
        device = checks.device(device)
        codec = codec if codec is not None else _codec_spec(specs[-1])
        if codec is None:
            raise ConfigError("the last member was given loaded: give its decoder too (codec='pixels', a VAE "
                              "directory or hub id)")
        self.members = as_members(specs, device)
        self.codec = load_codec(codec, self.members[-1].space, device)
        own = self.members[-1].sampler  # its family's defaults, for what is not given (None; 0 steps is refused)
        self.options = {"fractions": fractions, "solver": own["solver"] if solver is None else solver,
                        "steps": own["steps"] if steps is None else steps,
                        "guidance": own["guidance"] if guidance is None else guidance, "rule": rule,
                        **solver_options}
        check(self.members, **self.options)
        self.device, self.result = device, None

    def __call__(self, conditions: Sequence | str | int, seeds: Sequence[int] | None = None,
                 negative_prompts: Sequence[str | None] | str | None = None, control_image=None,
                 **options) -> list[Image.Image]:
        """PIL images for ``conditions`` (prompts, or class indices), one per seed (default 0, 1, ...); keyword
        arguments override this pipeline's (``fractions``, ``steps``, ``guidance``, ...). ``negative_prompts``: one
        per prompt (None: none) or one string for all, as diffusers' ``negative_prompt``; they act through guidance,
        so guidance must be on. ``control_image``: the image of every prompt (an image file's path or a PIL image, as
        diffusers' ``image``), or one per prompt, for the members with a ControlNet. ``self.result`` keeps the last
        ``tstitch.sample`` result (samples in the data space, NFE per member, plan)."""
        if conditions is None or not isinstance(conditions, (str, numbers.Integral, Iterable)):
            raise ConfigError(f"conditions must be prompts or class indices (one or a list), not "
                              f"{type(conditions).__name__}")
        conditions = [conditions] if isinstance(conditions, (str, numbers.Integral)) else list(conditions)
        if not conditions:
            raise ConfigError("no prompts or class indices given; give one or more, e.g. pipe(['a red bicycle'])")
        seeds = list(range(len(conditions))) if seeds is None else seeding.check(
            [seeds] if isinstance(seeds, numbers.Integral) else seeds)
        if len(seeds) != len(conditions):
            raise ConfigError(f"{len(conditions)} conditions for {len(seeds)} seeds; give one seed per image")
        text = all(m.num_classes is None for m in self.members)
        if text and not all(isinstance(c, str) for c in conditions):
            raise ConfigError("text-to-image members take prompts (strings)")
        if negative_prompts is not None:
            conditions = self._negatives(conditions, negative_prompts, text, {**self.options, **options})
        if control_image is not None:
            if not any(getattr(m, "controlled", False) for m in self.members):
                raise ConfigError("control_image is for members with a ControlNet, and none of these has one; give a "
                                  "member's zoo entry a controlnet ({source: <hub id or directory>, scale: 1.0}) or "
                                  "drop control_image")
            conditions = with_control_images(conditions, control_image)
        num_classes = None if text else self.members[-1].num_classes
        if not text and not all(isinstance(c, numbers.Integral) and 0 <= c < num_classes for c in conditions):
            raise ConfigError(f"class-conditional members take class indices in [0, {num_classes})")
        rng = seeding.SeedNoise(seeds, self.device)
        x = rng.randn(tuple(self.members[0].space.shape))
        if not text:  # the label draw of tstitch.data.seeds.draw, so that the solver's noise continues as there
            rng.randint(num_classes)
            conditions = torch.tensor(conditions, dtype=torch.long, device=self.device)
        self.result = sample(self.members, x, conditions, randn_like=rng.randn_like, **{**self.options, **options})
        images = self.codec.decode(self.result.x).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img) for img in images]

    def _negatives(self, prompts, negatives, text, options):
        """``prompts`` carrying ``negatives`` (``tstitch.data.prompts.with_negatives``); refused where nothing would
        read them: class-conditional members, guidance off, or only LCM members (their guidance is embedded)."""
        if not text:
            raise ConfigError("negative_prompts are for text-to-image members; these take class indices")
        if options.get("guidance") == 1 or all(m.guidance_embedded for m in self.members):
            raise ConfigError("negative prompts act through classifier-free guidance, which this call does not run "
                              "(guidance=1, or only LCM members, whose guidance is embedded); set guidance above 1 "
                              "or drop negative_prompts")
        return with_negatives(prompts, negatives)


def pipeline(members: Sequence, fractions: Sequence[float] | None = None, **kwargs) -> Pipeline:
    """``Pipeline(members, fractions, **kwargs)``: see ``tstitch.sampling.pipeline.Pipeline``."""
    return Pipeline(members, fractions, **kwargs)
