"""The model zoo: one yaml per model under ``conf/model/`` (name, family, net sizes, checkpoint, schedule,
data space), plus the ``model/`` folders of the user's config folders (``TSTITCH_CONFIG_PATH``, see
``tstitch.searchpath``). ``load`` turns an entry (a zoo name or a dict) into a member through its family's adapter."""
import inspect

import torch
from omegaconf import OmegaConf

from tstitch.config import MemberConfig
from tstitch.errors import ConfigError
from tstitch.models import checks
from tstitch.models.protocols import Member, Space
from tstitch.models.schedules import Schedule
from tstitch.rules import validate
from tstitch.searchpath import config_dirs

REQUIRED = ("name", "family", "net", "schedule", "space")


def names() -> list[str]:
    """Every zoo name, shipped and the user's."""
    return sorted({str(p.relative_to(d / "model").with_suffix("")) for d in config_dirs()
                   for p in (d / "model").rglob("*.yaml") if not p.name.startswith("_")})


def entry(name: str) -> dict:
    """The entry ``name`` as a dict, from the first config folder that has it (the shipped ones first, as Hydra)."""
    path = next((p for p in (d / "model" / f"{name}.yaml" for d in config_dirs()) if p.is_file()), None)
    if path is None:
        raise ConfigError(f"unknown zoo entry {name!r}; choose one of {names()}, or add model/{name}.yaml to a "
                          "config folder named in TSTITCH_CONFIG_PATH")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def families():
    """Family name -> its adapter's ``load(entry, schedule, space, device, dtype)``: every module in
    ``tstitch/models/adapters/`` is one family."""
    import importlib
    import pkgutil

    import tstitch.models.adapters

    return {m.name: importlib.import_module(f"tstitch.models.adapters.{m.name}").load
            for m in pkgutil.iter_modules(tstitch.models.adapters.__path__) if not m.name.startswith("_")}


def condition(family: str) -> str:
    """What members of ``family`` are conditioned on, known before loading: ``labels`` (class-conditional) or
    ``prompts`` (text-to-image): the adapter's ``CONDITION``."""
    import importlib

    if family not in families():
        raise ConfigError(f"unknown family {family!r}; known: {sorted(families())}")
    return importlib.import_module(f"tstitch.models.adapters.{family}").CONDITION


def load(spec: str | dict, checkpoint: str | None = None, device: str | torch.device = "cpu", **kwargs) -> Member:
    """A member from a zoo name (``"toy/large"``, ``"dit/xl2"``) or an entry dict; ``checkpoint`` overrides;
    ``device`` must be on this machine; other keywords are the family adapter's (``dtype``)."""
    if not isinstance(spec, (str, dict)):
        raise ConfigError(f"give a zoo name such as 'toy/large' or a zoo entry dict, not {type(spec).__name__}")
    e = entry(spec) if isinstance(spec, str) else dict(OmegaConf.to_container(OmegaConf.create(spec), resolve=True))
    missing = [k for k in REQUIRED if k not in e]
    if missing:
        raise ConfigError(f"zoo entry {e.get('name', spec)!r} lacks {missing}; see conf/model/toy/large.yaml")
    validate(e, MemberConfig, str(e["name"]))  # types and ranges, as the commands check them
    if checkpoint is not None:
        e["checkpoint"] = checkpoint
    fams = families()
    if e["family"] not in fams:
        raise ConfigError(f"zoo entry {e['name']!r} has unknown family {e['family']!r}; known: {sorted(fams)}")
    adapter = fams[e["family"]]
    takes = [k for k in inspect.signature(adapter).parameters if k not in ("entry", "schedule", "space", "device")]
    for key in kwargs:
        if key not in takes:
            raise ConfigError(f"tstitch.load got an unknown keyword argument {key!r}; it takes checkpoint, device"
                              + "".join(f", {k}" for k in takes))
    if "dtype" in kwargs and not (isinstance(kwargs["dtype"], torch.dtype) and kwargs["dtype"].is_floating_point):
        raise ConfigError(f"dtype={kwargs['dtype']!r} is not allowed: give a torch floating dtype, e.g. "
                          "torch.float32 or torch.bfloat16")
    device = checks.device(device)
    space = e["space"]
    space = Space(space["name"], tuple(space["shape"]), float(space.get("scale", 1.0)), bool(space.get("clip", False)))
    if e.get("cfg_channels") is not None and e["cfg_channels"] > space.shape[0]:
        raise ConfigError(f"{e['name']}.cfg_channels={e['cfg_channels']} is not allowed: its samples have "
                          f"{space.shape[0]} channels; give at most {space.shape[0]}, or null to guide every channel")
    try:
        schedule = Schedule(**e["schedule"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{e['name']}.schedule: {err}") from None
    member = adapter(e, schedule, space, device=device, **kwargs)  # an adapter's own checks come first
    net = e["net"] if isinstance(e["net"], dict) else {}
    for key in ("in_channels", "in_chans"):  # DiT, U-ViT: the network reads the space's channels
        if key in net and net[key] != space.shape[0]:
            raise ConfigError(f"{e['name']}.net.{key}={net[key]!r} is not allowed: its samples "
                              f"(space.shape {list(space.shape)}) have {space.shape[0]} channels; give "
                              f"net.{key}={space.shape[0]}, or fix space.shape")
    checks.weights(member)
    return member
