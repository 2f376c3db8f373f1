"""What a run's members cost to hold (the paper's Table 8), recorded in every results row: per member its
parameters (``params``: the network it runs per step; ``encoder_params``: its condition encoder apart, e.g. Stable
Diffusion's text encoders, only where a member has one), the bytes of those parameters as loaded (``param_bytes``:
their dtype's size) and the bytes on disk of the checkpoint its network was loaded from (``storage_bytes``); per
allocation its peak device memory while sampling (``peak_memory_bytes``).

Storage is the size of what the network was read from, as stored: a ``.pt``/``.safetensors`` file (a path, a
``pkg://`` file, a URL's download in the cache) whole, so a training checkpoint with EMA and raw weights counts both
(as the paper's 263 MB for the 33M-parameter DiT-S does); for a diffusers model (a hub id in the hub cache, or a
directory), the weight file(s) of its network's subfolder that diffusers reads (a sharded set's index and shards,
else the safetensors file, else the ``.bin``; with the entry's ``variant``). None where that cannot be established:
no checkpoint (random weights), a file or hub snapshot no longer there, LoRA weights or a ControlNet added to the
network. Never a guess.

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, reset before each sampling call of the allocation
(``PeakMemory``; ``tstitch-generate``: from the end of the warm-up to the end of its samples, decoding included):
everything allocated at the peak, i.e. the weights of every loaded member (a run loads them all, also for an
allocation that calls one of them) and the activations. None on a CPU: a process's resident memory grows and
shrinks with the allocator and with what ran before, and says nothing of one allocation; ``param_bytes`` is the
honest number there.
"""
import contextlib
import json
from pathlib import Path
from urllib.parse import urlparse

import torch

from tstitch.errors import ConfigError
from tstitch.models import checkpoints, hub
from tstitch.models.adapters import sd


def parameters(module):
    """(count, bytes) of the parameters of ``module`` (None: (0, 0)); a parameter shared by two layers counts once."""
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def record(members, entries):
    """The per-member lists every row of a run carries (``tstitch.jobs.columns.LISTS``): ``params``,
    ``param_bytes`` (network and encoder), ``storage_bytes`` (``storage``) and, where some member has a condition
    encoder, ``encoder_params``. ``entries``: the members' zoo entries (dicts), in the members' order."""
    nets = [parameters(m.net) for m in members]
    encoders = [parameters(m.encoder) if m.encoder is not None else None for m in members]
    out = {"params": [n for n, _ in nets],
           "param_bytes": [b + (e[1] if e else 0) for (_, b), e in zip(nets, encoders)],
           "storage_bytes": [storage(e) for e in entries]}
    if any(e is not None for e in encoders):
        out["encoder_params"] = [e[0] if e else None for e in encoders]
    return out


def storage(entry):
    """Bytes on disk of the file(s) the entry's network was loaded from (``files``), or None where unknown."""
    found = files(entry)
    return None if found is None else sum(f.stat().st_size for f in found)


def files(entry):
    """The checkpoint file(s) of a zoo entry's network (see the module docstring), or None where unknown."""
    source = entry.get("checkpoint")
    if not source or entry.get("lora") or entry.get("controlnet"):
        return None
    source = str(source)
    if urlparse(source).scheme in ("http", "https"):  # where checkpoints.resolve keeps the download
        path = checkpoints.cache_dir() / Path(urlparse(source).path).name
        return [path] if path.is_file() else None
    if source.startswith("pkg://") or Path(source).expanduser().is_file():
        try:
            return [checkpoints.resolve(source)]
        except ConfigError:
            return None
    if entry.get("family") == sd.SDMember.family:  # a diffusers model: its UNet's subfolder
        folder, subfolder = sd._unet_location(entry, source)
        return diffusers_files(folder, subfolder, entry.get("variant"))
    return None


def diffusers_files(source, subfolder, variant=None):
    """The weight files diffusers' ``from_pretrained`` reads for the model in ``subfolder`` of ``source`` (a
    directory, or a hub id read from the hub cache, never downloaded), in its order: the safetensors index and its
    shards, the safetensors file, the ``.bin``; None when none is there."""
    from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME, _add_variant

    def find(name):
        if hub.is_local(source):
            path = Path(source).expanduser() / (subfolder or "") / name
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, f"{subfolder}/{name}" if subfolder else name)
        return Path(found) if isinstance(found, str) else None  # None or "known not to exist"

    for name in (SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME):
        path = find(_add_variant(name, variant))
        if path is None:
            continue
        if name != SAFE_WEIGHTS_INDEX_NAME:
            return [path]
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            return None
        found = [find(s) for s in shards]
        return None if any(f is None for f in found) else [path, *found]
    return None


class PeakMemory:
    """Each key's peak device memory over the calls measured under it (``with peak(key): ...``):
    ``torch.cuda.max_memory_allocated``, reset before each call; None for every key off a GPU. ``overall()``: the
    peak since the device's last reset before the first call, through the last (a run's ``peak_memory_gb``)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.peaks, self.before = {}, 0

    @contextlib.contextmanager
    def __call__(self, key):
        if not self.cuda:
            yield
            return
        self.before = max(self.before, torch.cuda.max_memory_allocated(self.device))  # e.g. the warm-up's
        torch.cuda.reset_peak_memory_stats(self.device)
        yield
        self.peaks[key] = max(self.peaks.get(key, 0), torch.cuda.max_memory_allocated(self.device))

    def get(self, key):
        """Bytes: the peak of ``key``'s calls, or None (off a GPU, or never measured)."""
        return self.peaks.get(key)

    def overall(self):
        if not self.cuda:
            return None
        return max(self.before, torch.cuda.max_memory_allocated(self.device), *self.peaks.values())
