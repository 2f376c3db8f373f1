"""What a sample set is a function of: its identity, kept in ``<run>/identity.json`` so that a resumed run adds only
samples made the same way.

The identity is everything that changes the bytes of an image: the resolved sampling settings (members' zoo entries,
fractions, solver, steps, guidance, stitch rule, fast paths, labels, prompts with negatives and the content of their
control images, batch, device), the content of every checkpoint (ControlNets and LoRA weights too) and of the
decoder (a SHA-256, cached by path, size and mtime so that a 2.7 GB file is hashed once) and the seed scheme. A
resume that differs in any of these is refused, naming the keys. The versions of tstitch, torch and the device model
are recorded too: a resume across them is allowed with a warning (they may change last bits, not the meaning of the
set).

``identity.json`` names the settings, but a user can delete or edit it: every shard also carries the ``digest`` of
the identity it was made under (``tstitch.jobs.generate.check_shards`` refuses shards of another digest).
"""
import functools
import hashlib
import json
import platform
import subprocess
from pathlib import Path

from tstitch.errors import ConfigError
from tstitch.files import DiskFull, file_id, write_json

SEED_SCHEME = "per-seed-v1: image i from torch.Generator(seed + i): noise, then label, then solver noise"
FILE = "identity.json"
PARTS = ("config", "checkpoints", "decoder", "seeds", "prompts")  # what a resume must match (not the versions)


def _hash_cache():
    from tstitch.models.checkpoints import cache_dir

    return cache_dir() / "hashes.json"


def file_hash(path):
    """SHA-256 of a file's content, cached by (absolute path, size, mtime)."""
    key, *stamp = file_id(Path(path).resolve())
    cache = _hash_cache()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if known.get(key, [None])[:2] == stamp:
        return known[key][2]
    known[key] = [*stamp, _sha256(key)]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, known, indent=None)
    except (OSError, DiskFull):  # a read-only or full cache costs a rehash next time, nothing else
        pass
    return known[key][2]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _dir_hash(path):
    """The files of a model directory (weights, configs, tokenizers), by relative path and content."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path)}\0{file_hash(file)}\n".encode())
    return digest.hexdigest()


def fingerprint(source):
    """Content hash of a checkpoint source: a file, a directory, a URL or ``pkg://`` path (its local copy) or a
    Hugging Face hub id (its cached snapshot); None for no source or ``pixels``."""
    if source in (None, "", "pixels"):
        return None
    from tstitch.models.checkpoints import resolve
    from tstitch.models.hub import is_local

    text = str(source)
    if text.startswith(("http://", "https://", "pkg://")):
        return file_hash(resolve(text))
    if is_local(text):
        path = Path(text).expanduser()
        if path.is_dir():
            return _dir_hash(path)
        if path.is_file():
            return file_hash(path)
        raise ConfigError(f"checkpoint {path} does not exist; fix the path")
    from huggingface_hub import snapshot_download

    try:
        return _dir_hash(snapshot_download(text, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - not cached: the member could not have been loaded either
        raise ConfigError(f"{text} is not in the Hugging Face cache, so its content cannot be fingerprinted "
                          f"({type(e).__name__}); download it first") from None


def sources(entry):
    """The checkpoint sources of a zoo entry: its checkpoint, where the UNet lives elsewhere that, its ControlNet
    and its LoRA weights (Stable Diffusion members: a file, a folder or a hub repo)."""
    unet = (entry.get("unet") or {}).get("source")
    controlnet = (entry.get("controlnet") or {}).get("source")
    lora = entry.get("lora") or []
    loras = [spec.get("path") for spec in ([lora] if isinstance(lora, dict) else lora)]
    return [s for s in (entry.get("checkpoint"), unet, controlnet, *loras) if s]


def codec_source(spec):
    if isinstance(spec, dict):
        return spec.get("source")
    return spec


def of(config, member_entries, codec_spec):
    """The identity of a run: ``config`` (the sampling settings that change bytes, plain data), the members' zoo
    entries (by stitch key) and the decoder spec. Hashes every checkpoint (cached), each source once (an SD
    member's decoder is its own checkpoint folder)."""
    known = {}

    def content(source):
        if source not in known:
            known[source] = fingerprint(source)
        return known[source]

    return {"config": config,
            "checkpoints": {k: [content(s) for s in sources(e)] for k, e in member_entries.items()},
            "decoder": {"spec": codec_spec, "content": content(codec_source(codec_spec))},
            "seeds": SEED_SCHEME}


def versions(device_name=None):
    """What may change last bits but not the meaning of a set: code, torch and the device model."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        ours = version("tstitch")
    except PackageNotFoundError:
        ours = None
    return {"tstitch": ours, "git": git_sha(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device_name or platform.processor() or platform.machine()}


@functools.cache
def git_sha():
    """The commit of the tstitch checkout in use, or None (an installed wheel, no git)."""
    try:
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def read(run_dir):
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON (edited or truncated?); restore it or choose a new "
                          "hydra.run.dir=...") from None


def differences(stored, current, prefix=""):
    """Dotted keys whose values differ between two identities (nested dicts walked)."""
    out = []
    for k in sorted(set(stored) | set(current), key=str):
        a, b = stored.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def described(key):
    """A differing key of an identity as the refusal shows it: the key and, for what is not a setting, what it is."""
    why = {"checkpoints": " (the content of its checkpoint)", "decoder": " (the decoder)",
           "prompts": " (the prompt list)"}
    return key + why.get(key.split(".")[0], "")


def check(run_dir, identity, parts=("config", "checkpoints", "decoder", "seeds"), describe=described):
    """Refuse when ``run_dir`` holds samples of another identity (compared on ``parts``), naming each differing key
    as ``describe`` shows it (e.g. as the config key a user types); returns the stored identity."""
    stored = read(run_dir)
    if stored is None:
        return None
    plain = json.loads(json.dumps(identity))  # tuples -> lists, as stored
    diff = differences({p: stored.get(p) for p in parts}, {p: plain.get(p) for p in parts if p in plain})
    diff = [d for d in diff if d.split(".")[0] in plain]
    if diff:
        diff = list(dict.fromkeys(describe(d) for d in diff))  # two internal keys may name one user key
        shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise ConfigError(f"{run_dir} holds samples made with other settings (differs in: {shown}); resume with the "
                          f"settings in {Path(run_dir) / FILE}, or choose a new hydra.run.dir=...")
    return stored


def digest(identity, parts=PARTS):
    """A short SHA-256 of ``parts`` of an identity, as stored (tuples as lists, keys sorted)."""
    plain = json.loads(json.dumps(identity))
    text = json.dumps({p: plain.get(p) for p in parts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def version_warnings(stored, current):
    """One line per version that differs from the run's first session."""
    old = (stored or {}).get("versions") or {}
    return [f"{k} was {old[k]} when this run started, now {current.get(k)}" for k in sorted(old)
            if old.get(k) != current.get(k)]


def write(run_dir, identity):
    path = Path(run_dir) / FILE
    if not path.exists():
        write_json(path, identity)
    return path


def shard_digests(out_dir):
    """``{shard: its identity digests (a tuple), or None for a shard made before shards carried them}`` of the
    readable shards in ``out_dir``."""
    import zipfile

    import numpy as np

    found = {}
    for path in sorted((Path(out_dir) / "shards").glob("*.npz")):
        try:
            with np.load(path) as z:
                found[path] = tuple(str(d) for d in z["identity"]) if "identity" in z.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            continue  # unreadable: set aside, and its seeds generated again, by ``done``
    return found
