"""Reading and writing state dicts: plain ``.pt``/``.pth`` (also ``{"ema": ...}`` / ``{"model": ...}``
wrappers, as the official DiT and T-Stitch files), ``.safetensors``, local paths or URLs with a cache."""
import argparse
import importlib
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from tstitch.errors import ConfigError

WRAPPER_KEYS = ("ema", "model", "state_dict", "module")


def cache_dir():
    return Path(os.environ.get("TSTITCH_CACHE", Path(torch.hub.get_dir()) / "tstitch"))


def resolve(source):
    """A local path for ``source`` (a path or an http(s) URL, downloaded once into the cache)."""
    if urlparse(str(source)).scheme in ("http", "https"):
        target = cache_dir() / Path(urlparse(str(source)).path).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(str(source), str(target), progress=True)
            except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
                raise ConfigError(
                    f"cannot download checkpoint {source} ({type(e).__name__}: {e}); download it elsewhere and "
                    f"put it at {target}, or set the zoo entry's checkpoint to a local path") from None
        return target
    if str(source).startswith("pkg://"):  # a file shipped inside an installed package: pkg://tstitch/data/toy/...
        package, _, rest = str(source)[len("pkg://"):].partition("/")
        path = Path(importlib.import_module(package).__file__).parent / rest
    else:
        path = Path(str(source)).expanduser()
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}; fix the path (checkpoint=...) or download the file there")
    return path


def load_state_dict(source):
    """The state dict stored at ``source``, unwrapped from a training checkpoint if needed."""
    path = resolve(source)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            # DiT's train.py stores its argparse Namespace beside the weights; allow just that class
            with torch.serialization.safe_globals([argparse.Namespace]):
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch and safetensors raise many types for a bad file
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise ConfigError(f"checkpoint {path} is unreadable or corrupt ({type(e).__name__}: {reason}); "
                          "download it again") from None
    for key in WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"checkpoint {path} holds no state dict (expected tensors, or one under {WRAPPER_KEYS})")
    return sd


def load_into(net, source, name="model"):
    """Load ``source`` into ``net`` strictly; a mismatch names the first differing keys."""
    return fit(net, load_state_dict(source), source, name)


def fit(net, sd, source, name="model"):
    """Load the state dict ``sd`` (read from ``source``) into ``net`` strictly; a mismatch names the first
    differing keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
        raise ConfigError(f"checkpoint {source} does not fit {name} ({'; '.join(parts)}); "
                          "it was saved for another architecture: pick the zoo entry that matches it")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True)
    return net


def save_state_dict(sd, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(tmp))
    else:
        torch.save(sd, tmp)
    tmp.replace(path)
