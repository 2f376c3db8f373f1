"""The one boundary between a composed config and the engine: members (with their fast paths) and the decoder, the
sampling options of an allocation, the prompt set and the metric. Everything past here takes objects and plain
values; ``tstitch.jobs.sweep.sweep`` and ``tstitch.jobs.generate.generate`` are the jobs built on them."""
from omegaconf import OmegaConf

from tstitch import metrics
from tstitch.models import fast, zoo
from tstitch.models.codecs import load_codec
from tstitch.sampling.stitch import check_compatible


def stitch(cfg, device="cpu"):
    """(members, codec): the configured members, checked to be stitchable, with the fast paths applied; the decoder
    is ``stitch.codec`` when set (any decoder of the members' data space, e.g. another fine-tuned VAE decoder), else
    the last member's own."""
    names, options = list(cfg.stitch.members), cfg.get("fast", {})
    home = "cpu" if options.get("offload") else device  # offloaded networks never all sit on the device at once
    members = [zoo.load(dict(cfg.stitch.members[n]), device=home) for n in names]
    check_compatible(members)
    members = fast.speed_up(members, device, names=names, **options)  # fast.tome.members may name stitch keys
    return members, load_codec(codec_spec(cfg), members[-1].space, device)


def codec_spec(cfg):
    """The decoder: ``stitch.codec``, else the last member's own, else pixels."""
    return cfg.stitch.get("codec") or list(cfg.stitch.members.values())[-1].get("codec", "pixels")


def sample_options(cfg, fractions):
    """``tstitch.sample``'s keyword arguments for one allocation (fractions as the schema checked them), from the
    solver, guidance and stitch configs; plain values (no OmegaConf nodes)."""
    return dict(fractions=list(fractions), solver=cfg.solver.name, steps=cfg.solver.steps,
                guidance=cfg.guidance.scale, channels=cfg.guidance.channels, rule=cfg.stitch.rule,
                **OmegaConf.to_container(cfg.solver.options, resolve=True))


def prompts(cfg):
    """The configured prompt set (``prompts=demo|file|coco``) for text-conditioned members, or None."""
    if not cfg.get("prompts"):
        return None
    from tstitch.data import prompts as prompt_sets

    return prompt_sets.load(**cfg.prompts)


def metric(cfg):
    """The configured metric, or None (``metric=none``)."""
    return metrics.build(cfg.get("metric"))
