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

from omegaconf import MISSING, ListConfig

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
            path = Path(str(item["path"])).expanduser()
            if str(item["path"]).count("/") != 1 and not path.exists():  # hub ids are owner/name
                raise ConfigError(f"{where}.path: no such LoRA file or folder: {path}; fix the path, or give a hub id "
                                  "(owner/name)")
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


@dataclass
class FastConfig:
    precision: str = one_of("fp32", "bf16", "fp16")
    tf32: bool = MISSING
    compile: bool = MISSING
    graphs: bool = MISSING
    channels_last: bool = MISSING
    offload: bool = MISSING
    force: bool = MISSING


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
    search: SearchConfig = section(SearchConfig)
    sweep: Optional[SweepConfig] = MISSING
    device: str = MISSING
    workers: Optional[int] = integer(1)
    timing: TimingConfig = section(TimingConfig)


FLOAT_RANGES = ("auto", "unit", "byte")


@dataclass
class EvaluateCommand:
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


@dataclass
class ReferenceCommand:
    source: str = MISSING
    out: Optional[str] = MISSING
    metrics: list[str] = one_of("fid", "kid", "prc", min_len=1)
    extractor: str = MISSING
    weights: Optional[str] = MISSING
    batch_size: int = integer(1)
    float_range: str = one_of(*FLOAT_RANGES)


COMMANDS = {"tstitch": TstitchCommand, "generate": GenerateCommand, "search": SearchCommand,
            "evaluate": EvaluateCommand, "reference": ReferenceCommand}  # config name -> its structured config


def register():
    """Store the structured configs in Hydra's ConfigStore: ``schema/<command>`` and ``schema/member``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls in {**COMMANDS, "member": MemberConfig}.items():
        store.store(group="schema", name=name, node=cls)
