"""A command's config checked before any model loads or any file is written: ``check(cfg, command)``, which the
CLIs call in their preflight and again at the top of each job (where SLURM and multirun jobs start).

The types and ranges are the structured configs of ``tstitch.config`` (checked by ``tstitch.rules.validate``); the
rest needs other code, so it is checked here, where every layer may be read: each ``stitch.members`` entry against
the zoo's families, the fractions against the members, the stitch rule against ``tstitch.sampling.stitch.RULES``,
the solver against its registry and the members' schedules (``tstitch.sampling.solvers.check_config``), the metric
against its class's signature, and the devices against this machine. A slip is one ``ConfigError`` line naming the
key, the value, what is allowed and, for a misspelt key, the nearest one.
"""
import inspect
import re

from omegaconf import DictConfig

from tstitch.config import COMMANDS, MemberConfig, fractions
from tstitch.errors import ConfigError
from tstitch.models import accelerators
from tstitch.models.zoo import REQUIRED, families
from tstitch.rules import Choice, fail, unknown, validate
from tstitch.sampling import solvers
from tstitch.sampling.stitch import RULES

DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check(cfg, command, machine=True):
    """Check the composed config of ``command`` (``tstitch``, ``generate``, ``search``, ``evaluate``,
    ``reference``, ``demo``); returns it. ``machine``: also that the devices it asks for are on this machine (not
    when the jobs run elsewhere, e.g. submitted to SLURM from a login node). Commands without a structured config
    (``train``) pass unchecked."""
    cls = COMMANDS.get(command)
    if cls is None:
        return cfg
    validate(cfg, cls)
    if command in ("evaluate", "reference"):
        return cfg
    if command == "demo":  # its member pairs: tstitch.jobs.demo.pairs, before the page is built
        device(cfg.device, "device", machine)
        return cfg
    names = members(cfg)
    if cfg.get("fast"):  # ToMe / DeepCache: the members they name must be Stable Diffusion members
        accelerators.check(cfg.fast, [(n, e.name, e.family) for n, e in cfg.stitch.members.items()])
    if "rule" in cfg.stitch:
        Choice(*RULES)(cfg.stitch.rule, "stitch.rule")
    fractions(cfg.stitch.fractions, names, "stitch.fractions")
    sweep = cfg.get("sweep") or {}
    if sweep.get("first") is not None and len(names) < 2:
        raise ConfigError("sweep.first needs two or more members; set sweep=null for a single model")
    for i, row in enumerate(sweep.get("allocations") or []):
        fractions(row, names, f"sweep.allocations[{i}]")
    horizon = min(int(e.schedule.get("num_timesteps", 1000)) for e in cfg.stitch.members.values())
    solvers.check_config(cfg.solver, horizon)
    if cfg.get("metric"):
        metric(cfg.metric)
    if "device" in cfg:
        device(cfg.device, "device", machine)
    if "trainer" in cfg and machine:
        accelerator(cfg.trainer)
    return cfg


def members(cfg):
    """The member names of ``stitch.members``, each a zoo entry checked for its keys and family."""
    entries = cfg.stitch.get("members")
    if not isinstance(entries, (dict, DictConfig)) or not entries:
        raise ConfigError("stitch.members must name one or more zoo entries (stitch=toy, or "
                          "model@stitch.members.small=dit/s2 ...)")
    known = None
    for name, entry in entries.items():
        key = f"stitch.members.{name}"
        if not isinstance(entry, (dict, DictConfig)):
            fail(key, entry, "give a zoo entry, e.g. model@stitch.members.small=toy/small")
        lacking = [k for k in REQUIRED if k not in entry]
        if lacking:
            raise ConfigError(f"{key} lacks {', '.join(lacking)}; a zoo entry needs name, family, net, schedule and "
                              "space (see conf/model/toy/large.yaml)")
        validate(entry, MemberConfig, key)
        known = known or families()
        if entry.family not in known:
            fail(f"{key}.family", entry.family, "one of " + ", ".join(sorted(known)))
    return list(entries)


def metric(cfg):
    """The metric's ``_target_`` is a class whose keyword arguments are the section's keys."""
    from hydra.utils import get_class

    target = cfg.get("_target_")
    if target is None:
        return
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - Hydra raises several types for a bad path
        fail("metric._target_", target, "a metric class such as tstitch.metrics.FidelityMetric (metric=fid|fashion"
              "|clip|none)")
    params = inspect.signature(cls.__init__).parameters
    keys = [k for k in params if k != "self"]
    for k in cfg:
        if k not in keys and not k.startswith("_"):
            unknown(f"metric.{k}", keys, "metric.")


def device(value, key, machine=True):
    """``cpu``, ``cuda`` or ``cuda:N``, and (``machine``) present on this machine."""
    import torch

    if not isinstance(value, str) or not DEVICE.fullmatch(value):
        fail(key, value, "give cpu, cuda or cuda:N")
    if value.startswith("cuda") and machine:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= count:
            raise ConfigError(f"{key}={value}, but torch sees {count} CUDA GPU{'' if count == 1 else 's'} on this "
                              f"machine; use {key}=cpu" + (f" or {key}=cuda:0" if count else ""))


def accelerator(trainer):
    """Lightning's accelerator must exist on this machine (``trainer=cpu`` otherwise)."""
    import torch

    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={trainer.accelerator}, but torch sees no CUDA GPU on this machine; "
                          "use trainer=cpu")
