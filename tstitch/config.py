"""Typed configs: Hydra structured configs (dataclasses, registered in Hydra's ConfigStore as ``schema/<command>``
and ``schema/member``) of every key a command reads, with its type and range. ``tstitch.rules.validate(cfg, cls)``
checks a composed config against one, in one ``ConfigError`` line per slip (see ``tstitch.rules``).

What needs other code is checked with it: a zoo entry's family (``tstitch.models.zoo``), a solver's steps and
options (``tstitch.sampling.solvers``: each solver module declares its options' structured config), a metric's
keyword arguments and the devices (``tstitch.cli.schema.check``, which checks a command's whole config).
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from omegaconf import MISSING, DictConfig, ListConfig

from tstitch import rules
from tstitch.errors import ConfigError
from tstitch.rules import Choice, Either, Int, Num, Opt, Seq, Str, either, integer, number, one_of, section, show


def fractions(value, names, key):
    """A list of finite fractions in [0, 1], one per member, summing to 1."""
    example = "[" + ",".join(["0.4", "0.6"] if len(names) == 2 else [f"{1 / len(names):.2g}"] * len(names)) + "]"
    fix = f"give one fraction per member ({len(names)}: {', '.join(names)}) summing to 1, e.g. {key}={example}"
    if not isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"{key}={show(value)} is not a list; {fix}")
    values = Seq(Num())(value, key)
    if len(values) != len(names):
        raise ConfigError(f"{key}={show(value)}: {len(values)} stitch fractions for {len(names)} members; {fix}")
    if any(v < 0 for v in values) or any(v > 1 for v in values):
        raise ConfigError(f"{key}={show(value)} has a negative entry or one above 1; each must be in [0, 1]; {fix}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{key}={show(value)}: fractions sum to {sum(values):g}, not 1; {fix}")
    return values


@dataclass
class ScheduleConfig:
    name: str = MISSING
    num_timesteps: int = integer(1)
    beta_start: Optional[float] = number(0, 1, open_lo=True)  # linear / scaled_linear ends (LDM: 0.0015 ... 0.0195)
    beta_end: Optional[float] = number(0, 1, open_lo=True)


@dataclass
class SpaceConfig:
    name: str = MISSING
    shape: list[int] = integer(1, min_len=1)
    scale: float = number(0, open_lo=True)
    clip: bool = MISSING


@dataclass
class LoraConfig:
    """LoRA weights in diffusers' format on a Stable Diffusion member (``tstitch.models.adapters.sd``)."""

    path: str = MISSING  # a .safetensors file, or a folder or hub repo holding pytorch_lora_weights.safetensors
    scale: float = number()  # its weight (diffusers' set_adapters); 1: as trained
    weight_name: Optional[str] = MISSING  # the file in the folder or repo, where it has another name


class Loras:
    """A member's ``lora``: one ``LoraConfig`` section or a list of them; a local path (not ``owner/name``) must
    exist."""

    def describe(self):
        return "{path: <LoRA file, folder or hub id>, scale: 1.0} or a list of them"

    def __call__(self, value, key):
        items = [value] if isinstance(value, dict) or hasattr(value, "keys") else value
        if not isinstance(items, (list, tuple, ListConfig)) or not items:
            raise ConfigError(f"{key}={show(value)} is not allowed: give {self.describe()}")
        for i, item in enumerate(items):
            where = key if items is not value else f"{key}[{i}]"
            rules.validate(item, LoraConfig, where)
            if item.get("path") is None:
                raise ConfigError(f"{where} has no path; give {where}.path=<LoRA .safetensors file, folder or hub id>")
            local_or_hub(item["path"], f"{where}.path", "LoRA file or folder")
        return value


def local_or_hub(source, key, what):
    """``source`` is a hub id (``owner/name``) or a local ``what`` that exists; else one ConfigError line."""
    path = Path(str(source)).expanduser()
    if str(source).count("/") != 1 and not path.exists():
        raise ConfigError(f"{key}: no such {what}: {path}; fix the path, or give a hub id (owner/name)")


@dataclass
class ControlNetConfig:
    """A ControlNet on a Stable Diffusion member (``tstitch.models.adapters._control``)."""

    source: str = MISSING  # a hub id (owner/name) or a diffusers ControlNetModel directory
    scale: float = number(0)  # its residuals' weight: diffusers' controlnet_conditioning_scale (1: as trained)
    subfolder: Optional[str] = MISSING  # where in the repo or directory the ControlNet is
    variant: Optional[str] = MISSING  # weight files of a variant, e.g. fp16


class ControlNet:
    """A member's ``controlnet``: a ``ControlNetConfig`` section; a local source (not ``owner/name``) must exist."""

    def describe(self):
        return "{source: <ControlNet hub id or directory>, scale: 1.0}"

    def __call__(self, value, key):
        if not (isinstance(value, dict) or hasattr(value, "keys")):
            raise ConfigError(f"{key}={show(value)} is not allowed: give {self.describe()}")
        rules.validate(value, ControlNetConfig, key)
        if value.get("source") is None:
            raise ConfigError(f"{key} has no source; give {key}.source=<ControlNet hub id or directory>")
        local_or_hub(value["source"], f"{key}.source", "ControlNet directory")
        return value


class ImageFile:
    """A path to an image file that exists."""

    def describe(self):
        return "a path to an image file (PNG, JPEG)"

    def __call__(self, value, key):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}={show(value)} is not allowed: give {self.describe()}")
        if not Path(value).expanduser().is_file():
            raise ConfigError(f"{key}: no such image file: {Path(value).expanduser()}; fix the path (relative paths "
                              "start from the working directory)")
        return value


@dataclass
class MemberConfig:
    """A zoo entry (``conf/model/<family>/<name>.yaml``); other keys are its family adapter's."""

    OPEN: ClassVar[bool] = True
    name: str = MISSING
    family: str = MISSING
    net: Any = MISSING
    checkpoint: Any = MISSING
    schedule: ScheduleConfig = section(ScheduleConfig)
    space: SpaceConfig = section(SpaceConfig)
    codec: Any = MISSING
    cfg_channels: Optional[int] = integer(1)
    classes: Optional[str] = MISSING
    lora: Any = field(default=MISSING, metadata={"rule": Opt(Loras())})  # sd family: LoRA weights (LoraConfig)
    controlnet: Any = field(default=MISSING, metadata={"rule": Opt(ControlNet())})  # sd family: ControlNetConfig
    FAMILY_KEYS: ClassVar[dict] = {"lora": ("sd",), "controlnet": ("sd",)}  # keys that only these families read

    @classmethod
    def check_section(cls, given, key):
        """A key that only some families read is refused on a member of another family (it would be ignored)."""
        family, prefix = given.get("family"), f"{key}." if key else ""
        for name, families in cls.FAMILY_KEYS.items():
            if given.get(name) is not None and family is not None and family not in families:
                raise ConfigError(f"{prefix}{name}: a {family} member takes no {name}, only {' and '.join(families)} "
                                  f"members do; remove {prefix}{name}, or pick a zoo entry of the "
                                  f"{' or '.join(families)} family")


@dataclass
class StitchConfig:
    members: Any = MISSING  # zoo entries, each a MemberConfig (``tstitch.cli.schema.members``)
    fractions: Any = MISSING  # one per member, summing to 1 (``fractions``)
    rule: str = MISSING  # one of ``tstitch.sampling.stitch.RULES`` (checked there: ``tstitch.cli.schema``)
    codec: Any = MISSING


@dataclass
class SolverConfig:
    name: str = MISSING
    steps: Any = either(Int(1), Str())
    options: Optional[dict[str, Any]] = MISSING  # the solver's own (``solvers.options``)


@dataclass
class GuidanceConfig:
    scale: float = number(0)
    channels: Any = field(default=MISSING, metadata={"rule": Opt(Either(Int(1), Choice("all")))})


MEMBERS = Seq(Either(Int(), Str()))  # stitch keys, zoo names or positions (``tstitch.models.accelerators.select``)


@dataclass
class TomeConfig:
    """ToMe for SD on Stable Diffusion members (``tstitch.models.accelerators``); ratio 0: off."""

    ratio: float = number(0, 0.75)  # tomesd's most with its 2x2 destination stride: 1 - 1/4
    max_downsample: int = one_of(1, 2, 4, 8)
    members: Any = field(default=MISSING, metadata={"rule": MEMBERS})


@dataclass
class DeepCacheConfig:
    """DeepCache on Stable Diffusion members (``tstitch.models.accelerators``); interval 1: off."""

    interval: int = integer(1)
    branch: int = integer(0)
    members: Any = field(default=MISSING, metadata={"rule": MEMBERS})


@dataclass
class FastConfig:
    precision: str = one_of("fp32", "bf16", "fp16")
    tf32: bool = MISSING
    compile: bool = MISSING
    graphs: bool = MISSING
    channels_last: bool = MISSING
    offload: bool = MISSING
    force: bool = MISSING
    tome: TomeConfig = section(TomeConfig)
    deepcache: DeepCacheConfig = section(DeepCacheConfig)


@dataclass
class LoggerConfig:
    mode: str = one_of("offline", "online", "disabled")
    project: str = MISSING
    entity: Optional[str] = MISSING
    name: Optional[str] = MISSING
    group: Optional[str] = MISSING
    tags: Optional[list[str]] = MISSING


@dataclass
class PromptsConfig:
    path: str = MISSING
    column: Optional[str] = MISSING
    captions: str = one_of("first", "all")
    limit: Optional[int] = integer(1)
    seed: int = integer(0)
    negative: Optional[str] = MISSING  # the negative prompt of every prompt without its own; null: none
    negative_column: Optional[str] = MISSING  # the csv column / json field of each prompt's negative prompt
    # the control image of every prompt without its own (ControlNet members); null: none
    control_image: Optional[str] = field(default=MISSING, metadata={"rule": Opt(ImageFile())})
    control_image_column: Optional[str] = MISSING  # csv column / json field of each prompt's control image path


@dataclass
class SweepConfig:
    first: Optional[list[float]] = number(0, 1, min_len=1)
    allocations: Optional[list[list[float]]] = number(0, 1, min_len=1)


@dataclass
class TrainerConfig:
    """Lightning's ``Trainer`` arguments; other keys are passed to it as they are."""

    OPEN: ClassVar[bool] = True
    accelerator: str = one_of("cpu", "gpu", "cuda", "auto")
    devices: Any = either(Choice(-1), Int(1), Str(), Seq(Int(0), 1))
    num_nodes: int = integer(1)
    strategy: str = MISSING


@dataclass
class SearchConfig:
    grid: float = number(0, 1, open_lo=True)
    budget: Optional[float] = number(0, open_lo=True)
    objective: str = MISSING
    maximize: Optional[bool] = MISSING
    target: Optional[float] = number()
    cost_samples: int = integer(1)
    num_samples: int = integer(1)
    confirm_samples: int = integer(1)


@dataclass
class TimingConfig:
    rounds: int = integer(1)
    tolerance: float = number(0, open_lo=True)


@dataclass
class GenerateTimingConfig(TimingConfig):
    rounds: int = integer(0)  # 0: no speedup measured


@dataclass
class Sampling:
    """What every sampling command reads."""

    stitch: StitchConfig = section(StitchConfig)
    solver: SolverConfig = section(SolverConfig)
    guidance: GuidanceConfig = section(GuidanceConfig)
    fast: FastConfig = section(FastConfig)
    metric: Any = MISSING  # a metric class's keyword arguments (``tstitch.cli.schema.metric``)
    prompts: Optional[PromptsConfig] = MISSING
    seed: int = integer(0, 2 ** 62)
    batch_size: int = integer(1)
    labels: str = one_of("random", "balanced")
    threads: int = integer(1)
    grid_columns: int = integer(0)
    nonfinite: str = one_of("error", "warn")
    paper: Any = MISSING

    @staticmethod
    def check_section(given, key):
        """Control images and ControlNets come together: a member with a ControlNet needs the prompts' control
        images, and control images need a member that reads them."""
        prompts, members = given.get("prompts"), (given.get("stitch") or {}).get("members")
        if not prompts or not isinstance(members, (dict, DictConfig)):
            return  # text members without prompts are refused by the commands, with their own line
        entries = {k: e for k, e in members.items() if isinstance(e, (dict, DictConfig))}
        for k, e in entries.items():  # a family that reads no ControlNet is the slip to name first
            MemberConfig.check_section(e, f"stitch.members.{k}")
        controlled = [k for k, e in entries.items() if e.get("controlnet")]
        images = [k for k in ("control_image", "control_image_column") if prompts.get(k) is not None]
        if controlled and not images:
            raise ConfigError(f"stitch.members.{controlled[0]} has a ControlNet but the prompts carry no control "
                              "image; set prompts.control_image=<image file> (every prompt's) or "
                              "prompts.control_image_column=<csv column / json field of each prompt's image>")
        if images and not controlled:
            raise ConfigError(f"prompts.{images[0]} is set but no member has a ControlNet to read it; give one "
                              "(stitch=controlnet_canny_ssd1b_sdxl, or +stitch.members.large.controlnet={source: "
                              f"<hub id or directory>, scale: 1.0}}), or drop prompts.{images[0]}")


@dataclass
class TstitchCommand(Sampling):
    logger: LoggerConfig = section(LoggerConfig)
    sweep: Optional[SweepConfig] = MISSING
    num_samples: int = integer(1)
    device: str = MISSING
    workers: Optional[int] = integer(1)
    timing: TimingConfig = section(TimingConfig)


@dataclass
class GenerateCommand(Sampling):
    logger: LoggerConfig = section(LoggerConfig)
    trainer: TrainerConfig = section(TrainerConfig)
    num_samples: int = integer(1)
    png: bool = MISSING
    timing: GenerateTimingConfig = section(GenerateTimingConfig)


@dataclass
class SearchCommand(Sampling):
    logger: LoggerConfig = section(LoggerConfig)
    search: SearchConfig = section(SearchConfig)
    sweep: Optional[SweepConfig] = MISSING
    device: str = MISSING
    workers: Optional[int] = integer(1)
    timing: TimingConfig = section(TimingConfig)


FLOAT_RANGES = ("auto", "unit", "byte")


@dataclass
class EvaluateCommand:
    """``tstitch-evaluate``: the samples, and the chosen metric's keys at the top level (metric=fid's by default,
    metric=adm's; ``tstitch.cli.evaluate`` checks them against the metric's class)."""

    _target_: str = MISSING
    samples: str = MISSING
    reference: str = MISSING
    metrics: list[str] = one_of("fid", "isc", "kid", "prc", min_len=1)
    extractor: str = MISSING
    weights: Optional[str] = MISSING
    kid_subset_size: int = integer(2)
    prc_neighborhood: int = integer(1)
    batch_size: int = integer(1)
    cache_root: Optional[str] = MISSING
    float_range: str = one_of(*FLOAT_RANGES)
    bootstrap: int = integer(0)  # 0 or at least 2 (``tstitch.metrics.check_bootstrap``)
    device: str = MISSING  # metric=adm: auto, cpu, cuda or cuda:N (``tstitch.metrics.adm.resolve_device``)


@dataclass
class ReferenceCommand:
    source: str = MISSING
    out: Optional[str] = MISSING
    metrics: list[str] = one_of("fid", "kid", "prc", min_len=1)
    extractor: str = MISSING
    weights: Optional[str] = MISSING
    batch_size: int = integer(1)
    float_range: str = one_of(*FLOAT_RANGES)


@dataclass
class DemoServerConfig:
    host: str = MISSING
    port: int = integer(0, 65535)  # 0: the first free port from 7860 (Gradio's)


@dataclass
class DemoCommand:
    """``tstitch-demo``; its pairs are checked against the zoo by ``tstitch.jobs.demo.pairs``."""

    pairs: list[str] = field(default=MISSING, metadata={"rule": Seq(Str(), 1)})
    fraction: float = number(0, 1)
    steps: int = integer(1)
    seed: int = integer(0, 2 ** 53 - 1)  # a web page's numbers are exact up to 2**53
    guidance_scale: Optional[float] = number(0)
    prompt: str = MISSING
    negative_prompt: Optional[str] = MISSING
    device: str = MISSING
    threads: int = integer(1)
    server: DemoServerConfig = section(DemoServerConfig)


COMMANDS = {"tstitch": TstitchCommand, "generate": GenerateCommand, "search": SearchCommand,
            "evaluate": EvaluateCommand, "reference": ReferenceCommand,
            "demo": DemoCommand}  # config name -> its structured config


def register():
    """Store the structured configs in Hydra's ConfigStore: ``schema/<command>`` and ``schema/member``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls in {**COMMANDS, "member": MemberConfig}.items():
        store.store(group="schema", name=name, node=cls)
