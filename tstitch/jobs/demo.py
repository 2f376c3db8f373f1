"""The web demo's work (``tstitch-demo``; ``tstitch.cli.demo`` builds the page around it and is the one module that
imports gradio): the member pairs it offers, each checked against the zoo before anything loads, and one click:
one seed's image from the stitched pair and from the pair's large member alone, on the same solver, steps,
guidance and condition, each with one wall-clock reading and its model calls (NFE) per member.

Both images come from one ``tstitch.Pipeline`` of the pair (the large member alone is the allocation [0, 1]), so
the stitched image is ``tstitch.pipeline``'s for the same settings, and tstitch-generate's image of the seed.

    demo = Demo(pairs(["toy"]))
    stitched, large = demo.run("toy", condition="Sneaker", fraction=0.4, steps=20, seed=7)
    stitched.image, stitched.seconds, stitched.nfe   # a PIL image, one reading, [8, 12]
"""
import gc
import logging
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from tstitch.config import MemberConfig
from tstitch.errors import ConfigError
from tstitch.jobs.report import class_names
from tstitch.models import checks, zoo
from tstitch.rules import validate
from tstitch.sampling.pipeline import Pipeline
from tstitch.sampling.stitch import check_fractions
from tstitch.searchpath import CONF, config_dirs, with_user_dirs

log = logging.getLogger(__name__)

JOIN = "+"  # two zoo names, small first: toy/small+toy/large


@dataclass(frozen=True)
class Pair:
    """A member pair as the page offers it (``pairs`` makes them)."""

    label: str                      # as the page lists it: the preset's name, or the two zoo names
    entries: tuple[dict, dict]      # the members' zoo entries, small first, as the commands compose them
    solver: str | None = None       # None: the large member's family's own (``Pipeline``'s default)
    options: dict = field(default_factory=dict)  # the solver's options
    rule: str = "steps"
    codec: Any = None               # None: the large member's own
    classes: list[str] | None = None  # the class names of a class-conditional pair; None: a text-to-image pair

    @property
    def names(self) -> list[str]:
        return [e["name"] for e in self.entries]


@dataclass
class Shot:
    """One image of a click: the image, one wall-clock reading of its sampling and decoding, NFE per member."""

    image: Image.Image
    seconds: float
    nfe: list[int]


def pairs(specs) -> list[Pair]:
    """The pairs of ``specs`` (the config's ``pairs``): stitch preset names, or two zoo names joined by ``+``, each
    checked (the preset or entries exist, two members, their keys and families, one kind of condition) without
    loading a model."""
    out = []
    for i, spec in enumerate(specs):
        key = f"pairs[{i}]"
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"{key}={spec!r}: give a stitch preset (toy) or two zoo names joined by + "
                              "(toy/small+toy/large)")
        pair = _zoo_pair(spec, key) if JOIN in spec else _preset_pair(spec, key)
        if any(e.get("controlnet") for e in pair.entries):
            raise ConfigError(f"{key}={spec!r}: its members read a control image (controlnet), which the demo has no "
                              "input for; pick a pair without controlnet (tstitch-generate prompts.control_image=...)")
        if any(p.label == pair.label for p in out):
            raise ConfigError(f"{key}={spec!r} is listed twice; give each pair once")
        out.append(pair)
    if not out:
        raise ConfigError("pairs is empty; give one or more, e.g. pairs=[toy]")
    return out


def _zoo_pair(spec, key):
    names = [n.strip() for n in spec.split(JOIN)]
    if len(names) != 2 or not all(names):
        raise ConfigError(f"{key}={spec!r}: give two zoo names joined by +, small first, e.g. toy/small+toy/large")
    entries = tuple(zoo.entry(n) for n in names)
    return Pair(" + ".join(names), entries, classes=_classes(entries, key))


def presets() -> list[str]:
    """The stitch presets of every config folder (shipped, then the user's)."""
    return sorted({p.stem for d in config_dirs() for p in (d / "stitch").glob("*.yaml")})


def _preset_pair(name, key):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if name not in presets():
        raise ConfigError(f"{key}={name!r} is no stitch preset; choose one of {', '.join(presets())}, or give two "
                          "zoo names joined by + (toy/small+toy/large)")
    overrides = [f"stitch={name}", *with_user_dirs([])]
    try:
        if GlobalHydra.instance().is_initialized():  # in the command (inside Hydra's main): its config folders
            cfg = compose("tstitch", overrides)
        else:
            with initialize_config_dir(CONF, version_base=None):
                cfg = compose("tstitch", overrides)
        stitch = OmegaConf.to_container(cfg.stitch, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split("Config search path")[0].split())
        raise ConfigError(f"{key}={name!r}: the preset does not compose: {message}") from None
    members = list(stitch["members"].values())
    if len(members) != 2:
        raise ConfigError(f"{key}={name!r} stitches {len(members)} member(s); the demo compares a pair with its "
                          "large member: give a preset of two, or two zoo names joined by +")
    solver = OmegaConf.to_container(cfg.solver, resolve=True)
    entries = tuple(members)
    return Pair(name, entries, solver["name"], solver.get("options") or {}, stitch.get("rule", "steps"),
                stitch.get("codec"), _classes(entries, key))


def _classes(entries, key):
    """The class names of a class-conditional pair (its large member's ``classes`` key), None for a text-to-image
    pair; each entry checked as the loader checks it."""
    families = zoo.families()
    kinds = []
    for e in entries:
        missing = [k for k in zoo.REQUIRED if k not in e]
        if missing:
            raise ConfigError(f"{key}: zoo entry {e.get('name')!r} lacks {', '.join(missing)}; see "
                              "conf/model/toy/large.yaml")
        validate(e, MemberConfig, f"{key}.{e['name']}")
        if e["family"] not in families:
            raise ConfigError(f"{key}: zoo entry {e['name']!r} has unknown family {e['family']!r}; known: "
                              f"{', '.join(sorted(families))}")
        kinds.append(zoo.condition(e["family"]) == "labels")
    if kinds[0] != kinds[1]:
        raise ConfigError(f"{key}: {entries[0]['name']} and {entries[1]['name']} take different conditions (class "
                          "labels and prompts); pair two class-conditional or two text-to-image members")
    if not kinds[1]:
        return None
    names = class_names(entries[1].get("classes"))
    if names is None:
        raise ConfigError(f"{key}: zoo entry {entries[1]['name']} has no classes key naming its labels (classes: "
                          "fashion-mnist or imagenet-1k); add it to the entry's yaml")
    return names


class Demo:
    """The pairs of the page, the last one used loaded (one pair in memory at a time), and ``run``, one click.
    ``guidance`` None: the large member's family's own; ``device``: where members load and sample."""

    def __init__(self, pairs: list[Pair], *, guidance: float | None = None, device: str = "cpu"):
        if not pairs:
            raise ConfigError("give one or more pairs")
        if guidance is not None:
            checks.check_guidance(guidance)
        self.pairs = {p.label: p for p in pairs}
        self.guidance, self.device = guidance, checks.device(device)
        self.loaded = None  # (label, Pipeline)
        self._lock = threading.Lock()  # one click at a time: the readings are not shared with another click

    def pair(self, label) -> Pair:
        if label not in self.pairs:
            raise ConfigError(f"unknown pair {label!r}; the page offers {', '.join(self.pairs)}")
        return self.pairs[label]

    def pipeline(self, label) -> tuple[Pipeline, bool]:
        """The pair's pipeline (loaded now if another pair was), and whether it was loaded by this call."""
        if self.loaded is not None and self.loaded[0] == label:
            return self.loaded[1], False
        pair = self.pair(label)
        self.loaded = None  # the previous pair's members go before this pair's load
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        start = time.perf_counter()
        pipe = Pipeline(list(pair.entries), codec=pair.codec, solver=pair.solver, guidance=self.guidance,
                        rule=pair.rule, device=self.device, **pair.options)
        log.info(f"tstitch-demo: loaded {label} ({' + '.join(pair.names)}) in {time.perf_counter() - start:.1f} s")
        self.loaded = (label, pipe)
        return pipe, True

    def run(self, label: str, condition, fraction: float, steps: int, seed: int,
            negative_prompt: str | None = None) -> tuple[Shot, Shot]:
        """One click: the stitched pair (``fraction`` of the steps to the small member) and its large member alone,
        on ``seed``'s noise and ``condition`` (a class name or index, or a prompt). Everything is checked before a
        model loads. A pair's first click samples once untimed first, so that neither reading carries one-time
        costs (first calls, memory allocation)."""
        pair = self.pair(label)
        condition, negative = self.condition(pair, condition, negative_prompt)
        fraction = check_fractions([_number(fraction, "fraction"), 1 - _number(fraction, "fraction")], 2)
        steps, seed = _whole(steps, "steps", 1), _whole(seed, "seed", 0)
        options = {"steps": steps, "negative_prompts": negative}
        with self._lock:
            pipe, fresh = self.pipeline(label)
            if fresh:  # warm-up, untimed: both members and the decoder once
                pipe([condition], seeds=[seed], fractions=[0.5, 0.5], **options)
            stitched = _shot(pipe, condition, seed, fractions=fraction, **options)
            large = _shot(pipe, condition, seed, fractions=[0.0, 1.0], **options)
        shown = condition if pair.classes is None else pair.classes[condition]
        log.info(f"tstitch-demo: {label} {shown!r} fraction {fraction[0]:g} steps {steps} seed {seed}: "
                 f"stitched {stitched.seconds:.3f} s (NFE {stitched.nfe}), {pair.names[1]} alone "
                 f"{large.seconds:.3f} s (NFE {large.nfe})")
        return stitched, large

    def condition(self, pair, condition, negative_prompt):
        """(the pipeline's condition, its negative prompt or None): a class index (from a name or an index) for a
        class-conditional pair, the prompt for a text-to-image one."""
        negative = negative_prompt.strip() if isinstance(negative_prompt, str) else negative_prompt
        if pair.classes is None:
            if not isinstance(condition, str):
                raise ConfigError(f"{pair.label} is text-to-image: give a prompt, not {condition!r}")
            return condition, negative or None
        if negative:
            raise ConfigError(f"{pair.label} is class-conditional: a negative prompt does not apply; leave it empty")
        if isinstance(condition, str) and condition in pair.classes:
            return pair.classes.index(condition), None
        if isinstance(condition, numbers.Integral) and not isinstance(condition, bool) and \
                0 <= condition < len(pair.classes):
            return int(condition), None
        raise ConfigError(f"class {condition!r} is not one of {pair.label}'s: give a name "
                          f"({', '.join(pair.classes[:4])}, ...) or an index in [0, {len(pair.classes)})")


def _shot(pipe, condition, seed, **options):
    start = time.perf_counter()
    (image,) = pipe([condition], seeds=[seed], **options)
    return Shot(image, time.perf_counter() - start, list(pipe.result.nfe))


def _number(value, key):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{key}={value!r} is not a number; give one in [0, 1]")
    return float(value)


def _whole(value, key, lo):
    """An integer >= ``lo`` (a page's number field may send 20.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ConfigError(f"{key}={value!r} is not allowed: give an integer >= {lo}")
    return int(value)


def caption(shot: Shot, names: list[str], alone: bool = False) -> str:
    """What the page writes under an image: its time (one reading) and its NFE per member."""
    calls = f"{names[1]} {shot.nfe[1]}" if alone else f"{names[0]} {shot.nfe[0]} + {names[1]} {shot.nfe[1]}"
    return f"{shot.seconds:.3f} s (one wall-clock reading: sampling and decoding); NFE: {calls}"
