"""Prompt sets for text-to-image members, and which prompt each seed gets.

``load(path, ...)`` reads a ``.txt`` (one prompt per line), a ``.csv`` (a ``prompt`` or ``caption`` column), a
``.json`` list (strings, or objects with a ``prompt``/``caption``) or MS-COCO caption annotations
(``captions_val2014.json``: the first caption of each image, or all of them). ``conf/prompts/*.yaml`` hold its
keyword arguments (``tstitch.data.prompts.load(**cfg.prompts)``).

Sample i is drawn from seed ``seed + i`` and conditioned on prompt ``i % len(prompts)`` (``assign``), as the
class-conditional runs pair seeds with labels: every image is a function of its seed and the prompt list.
"""
import csv
import json
import random
from pathlib import Path

from tstitch.errors import ConfigError
from tstitch.searchpath import config_dirs

FIELDS = ("prompt", "caption")


def load(path, *, column=None, captions="first", limit=None, seed=0):
    """The prompts in ``path`` in file order; ``limit`` takes that many of them, chosen with ``seed`` (file order
    kept). ``column`` names the csv column / json field (default: ``prompt``, then ``caption``); ``captions``
    ("first" or "all") applies to COCO annotations. A relative path not found from the working directory is
    looked up among the shipped sets in ``conf/prompts/``, then in ``prompts/`` of the user's config folders."""
    file = _find(path)
    kind = file.suffix.lower()
    try:
        if kind == ".txt":
            prompts = file.read_text(encoding="utf-8").splitlines()
        elif kind == ".csv":
            prompts = _csv(file, column)
        elif kind == ".json":
            prompts = _json(file, column, captions)
        else:
            raise ConfigError(f"prompt file {file} is not .txt, .csv or .json; convert it or set prompts.path=...")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ConfigError(f"prompt file {file} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "fix the file or set prompts.path=...") from None
    prompts = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {file} holds no prompts; put one prompt per line (.txt) or set "
                          "prompts.path=...")
    return _take(prompts, limit, seed, file)


def assign(seeds, prompts, seed=0):
    """The prompt of each seed: the sample drawn from seed ``seed + i`` gets ``prompts[i % len(prompts)]``."""
    if not prompts:
        raise ConfigError("no prompts to assign; load a prompt set (prompts=demo, or prompts=file prompts.path=...)")
    return [prompts[(int(s) - seed) % len(prompts)] for s in seeds]


def _find(path):
    if path is None or str(path) in ("", "???"):
        raise ConfigError("no prompt file given; set prompts.path=... to a .txt/.csv/.json file or a COCO "
                          "captions_*.json")
    file = Path(str(path)).expanduser()
    if not file.exists() and not file.is_absolute():
        file = next((d / "prompts" / file for d in config_dirs() if (d / "prompts" / file).is_file()), file)
    if not file.is_file():
        raise ConfigError(f"prompt file not found: {file}; set prompts.path=... to a .txt/.csv/.json file or a COCO "
                          "captions_*.json (MS-COCO annotations)")
    return file


def _field(keys, column, file):
    names = [column] if column else list(FIELDS)
    lower = {str(k).lower(): k for k in keys}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    raise ConfigError(f"{file} has no {' or '.join(names)} field (found: {sorted(map(str, keys))[:8]}); "
                      "set prompts.column=...")


def _csv(file, column):
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            return []
        key = _field(reader.fieldnames, column, file)
        return [row[key] for row in reader]


def _json(file, column, captions):
    data = json.loads(file.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "annotations" in data:
        return _coco(data, captions, file)
    if not isinstance(data, list):
        raise ConfigError(f"{file} is neither a list of prompts nor COCO caption annotations; fix prompts.path")
    objects = [d for d in data if isinstance(d, dict)]
    if not objects:
        return data
    key = _field(objects[0].keys(), column, file)
    return [d.get(key) for d in objects]


def _coco(data, captions, file):
    """MS-COCO ``captions_*.json``: images in the order of its ``images`` list, each with its first caption
    (annotation order), or every caption in annotation order."""
    if captions == "all":
        return [a["caption"] for a in data["annotations"]]
    if captions != "first":
        raise ConfigError(f"prompts.captions must be 'first' or 'all', not {captions!r}")
    first = {}
    for a in data["annotations"]:
        first.setdefault(a["image_id"], a["caption"])
    order = [im["id"] for im in data.get("images", [])] or list(first)
    if not first:
        raise ConfigError(f"{file} holds no caption annotations; use an MS-COCO captions_*.json")
    return [first[i] for i in order if i in first]


def _take(prompts, limit, seed, file):
    if limit is None:
        return prompts
    limit = int(limit)
    if not 0 < limit <= len(prompts):
        raise ConfigError(f"prompts.limit={limit} but {file} holds {len(prompts)} prompts; set prompts.limit to at "
                          f"most {len(prompts)} (or null for all)")
    keep = sorted(random.Random(seed).sample(range(len(prompts)), limit))
    return [prompts[i] for i in keep]
