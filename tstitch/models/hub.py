"""Loading from a local directory or the Hugging Face hub, once for every caller (the SD family's UNets, text
encoders and configs, VAEs, CLIP): a hub id is looked up in the hub cache first and downloaded only when the hub
answers, so an offline machine gets one line naming the fix at once instead of the hub's retries and a traceback.
"""
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

from tstitch.errors import ConfigError


def is_local(source):
    """A path (it exists, starts like one, or has more than the one ``/`` of ``owner/name``), not a hub id."""
    source = str(source)
    return Path(source).expanduser().exists() or source.startswith(("/", ".", "~")) or source.count("/") > 1


def pretrained(load, source, *, what, fix, **kwargs):
    """``load(source, **kwargs)`` (a ``from_pretrained`` or ``load_config``) from a local directory, or for a hub
    id from the hub cache, then from the hub if it can be reached. Every failure is one ConfigError line that
    names ``what`` was loaded and ends with ``fix``."""
    if is_local(source):
        return _call(load, str(Path(str(source)).expanduser()), what, fix, **kwargs)
    try:
        return _call(load, source, what, fix, local_files_only=True, **kwargs)
    except ConfigError:  # not (completely) in the hub cache: download it if the hub can be reached
        pass
    if offline():
        raise ConfigError(f"{what} of {source} is not in the Hugging Face cache and the hub cannot be reached "
                          f"(offline or HF_HUB_OFFLINE); run `hf download {source}` (`huggingface-cli download` in "
                          f"older huggingface_hub) on a connected machine and copy the cache, or {fix}")
    return _call(load, source, what, fix, **kwargs)


def _call(load, source, what, fix, **kwargs):
    try:
        with warnings.catch_warnings():  # diffusers passes a deprecated argument to the hub on every load
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks")
            return load(source, **kwargs)
    except Exception as e:  # noqa: BLE001 - diffusers, transformers and the hub raise many types for a bad source
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"cannot load {what} from {source} ({type(e).__name__}: {first}); {fix}") from None


def offline(timeout=3.0):
    """Whether the hub is out of reach: HF_HUB_OFFLINE, or no route to its endpoint within ``timeout`` seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # only the proxy can tell; let the hub try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return False
    except OSError:
        return True
