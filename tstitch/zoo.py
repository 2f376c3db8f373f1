"""The model zoo: one yaml per model under ``conf/model/`` (name, family, net sizes, checkpoint, schedule,
data space). ``load`` turns an entry (a zoo name or a dict) into a member through its family's adapter."""
from pathlib import Path

from omegaconf import OmegaConf

from tstitch import checks
from tstitch.errors import ConfigError
from tstitch.protocols import Space
from tstitch.schedules import Schedule

ZOO = Path(__file__).resolve().parents[1] / "conf" / "model"
REQUIRED = ("name", "family", "net", "schedule", "space")


def names():
    return sorted(str(p.relative_to(ZOO).with_suffix("")) for p in ZOO.rglob("*.yaml") if not p.name.startswith("_"))


def entry(name):
    path = ZOO / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown zoo entry {name!r}; choose one of {names()}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def families():
    """Family name -> its adapter's ``load(entry, schedule, space, device, dtype)``: every module in
    ``tstitch/adapters/`` is one family."""
    import importlib
    import pkgutil

    import tstitch.adapters

    return {m.name: importlib.import_module(f"tstitch.adapters.{m.name}").load
            for m in pkgutil.iter_modules(tstitch.adapters.__path__) if not m.name.startswith("_")}


def load(spec, checkpoint=None, device="cpu", **kwargs):
    """A member from a zoo name (``"toy/large"``, ``"dit/xl2"``) or an entry dict; ``checkpoint`` overrides."""
    e = entry(spec) if isinstance(spec, str) else dict(OmegaConf.to_container(OmegaConf.create(spec), resolve=True))
    missing = [k for k in REQUIRED if k not in e]
    if missing:
        raise ConfigError(f"zoo entry {e.get('name', spec)!r} lacks {missing}; see conf/model/toy/large.yaml")
    if checkpoint is not None:
        e["checkpoint"] = checkpoint
    fams = families()
    if e["family"] not in fams:
        raise ConfigError(f"zoo entry {e['name']!r} has unknown family {e['family']!r}; known: {sorted(fams)}")
    space = e["space"]
    space = Space(space["name"], tuple(space["shape"]), float(space.get("scale", 1.0)), bool(space.get("clip", False)))
    member = fams[e["family"]](e, Schedule(**e["schedule"]), space, device=device, **kwargs)
    checks.weights(member)
    return member
