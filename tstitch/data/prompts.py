"""Prompt sets for text-to-image members, and which prompt each seed gets.

``load(path, ...)`` reads a ``.txt`` (one prompt per line), a ``.csv`` (a ``prompt`` or ``caption`` column), a
``.json`` list (strings, or objects with a ``prompt``/``caption``) or MS-COCO caption annotations
(``captions_val2014.json``: the first caption of each image, or all of them). ``conf/prompts/*.yaml`` hold its
keyword arguments (``tstitch.data.prompts.load(**cfg.prompts)``).

Negative prompts: a prompt may carry one (``Prompt(text, negative=...)``, a ``str``; ``with_negatives`` pairs two
lists). Where classifier-free guidance runs, a Stable Diffusion member takes the negative prompt's embedding, encoded
by its own text encoder(s), as the unconditional branch instead of the empty prompt's, as diffusers' pipelines do
with ``negative_prompt``. ``load`` attaches them from ``negative`` (one text for every prompt) and
``negative_column`` (a csv column / json field of each prompt's own).

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


class Prompt(str):
    """A prompt (it is its text) with an optional negative prompt, ``negative`` (None: none)."""

    negative: str | None

    def __new__(cls, text, negative=None):
        if not isinstance(text, str) or (negative is not None and not isinstance(negative, str)):
            raise ConfigError(f"a prompt and its negative prompt are strings, not {type(text).__name__} and "
                              f"{type(negative).__name__}")
        self = super().__new__(cls, text)
        self.negative = negative
        return self

    def __reduce__(self):  # pickled with its negative prompt (DataLoader workers, spawned ranks)
        return Prompt, (str(self), self.negative)

    def __repr__(self):
        return f"Prompt({str(self)!r}, negative={self.negative!r})"


def with_negatives(prompts, negatives):
    """``prompts`` (a list of strings) with negative prompts: ``negatives`` is one string for every prompt, or a
    list of one string (or None: no negative prompt) per prompt; None leaves the prompts as they are."""
    prompts = list(prompts)
    if negatives is None:
        return prompts
    if isinstance(negatives, str):
        negatives = [negatives] * len(prompts)
    negatives = list(negatives) if isinstance(negatives, (list, tuple)) else None
    if negatives is None or len(negatives) != len(prompts) or not all(
            n is None or isinstance(n, str) for n in negatives):
        raise ConfigError(f"give one negative prompt per prompt ({len(prompts)}: strings, or None for none), or one "
                          "string for all of them")
    return [Prompt(p, n) for p, n in zip(prompts, negatives)]


def negative_of(prompt):
    """The negative prompt of ``prompt`` (a ``Prompt``'s), or None."""
    return getattr(prompt, "negative", None)


def recorded(prompts):
    """A prompt list as a run's identity records it (``identity.json``): each prompt, or ``[prompt, negative]``
    where it has a negative prompt; None for None."""
    if prompts is None:
        return None
    return [str(p) if negative_of(p) is None else [str(p), negative_of(p)] for p in prompts]


def load(path, *, column=None, captions="first", limit=None, seed=0, negative=None, negative_column=None):
    """The prompts in ``path`` in file order; ``limit`` takes that many of them, chosen with ``seed`` (file order
    kept). ``column`` names the csv column / json field (default: ``prompt``, then ``caption``); ``captions``
    ("first" or "all") applies to COCO annotations. A relative path not found from the working directory is
    looked up among the shipped sets in ``conf/prompts/``, then in ``prompts/`` of the user's config folders.

    Negative prompts (``Prompt``): ``negative_column``, a csv column / json field, gives each prompt its own (an
    empty cell: none); ``negative`` is the one of every prompt without its own. Without either, plain strings."""
    file = _find(path)
    kind = file.suffix.lower()
    if negative_column is not None and kind not in (".csv", ".json"):
        raise ConfigError(f"prompts.negative_column={negative_column!r} names a column, but {file} is a {kind} file; "
                          "put the prompts and their negatives in a .csv or .json, or set prompts.negative=... (one "
                          "negative prompt for all)")
    try:
        if kind == ".txt":
            rows = [(p, None) for p in file.read_text(encoding="utf-8").splitlines()]
        elif kind == ".csv":
            rows = _csv(file, column, negative_column)
        elif kind == ".json":
            rows = _json(file, column, captions, negative_column)
        else:
            raise ConfigError(f"prompt file {file} is not .txt, .csv or .json; convert it or set prompts.path=...")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ConfigError(f"prompt file {file} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "fix the file or set prompts.path=...") from None
    rows = [(p.strip(), _text(n) or _text(negative)) for p, n in rows if isinstance(p, str) and p.strip()]
    if not rows:
        raise ConfigError(f"prompt file {file} holds no prompts; put one prompt per line (.txt) or set "
                          "prompts.path=...")
    if all(n is None for _, n in rows):
        return _take([p for p, _ in rows], limit, seed, file)
    return _take([Prompt(p, n) for p, n in rows], limit, seed, file)


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


def _text(value):
    """A negative prompt as given: stripped, None where there is none (None, empty)."""
    return value.strip() or None if isinstance(value, str) else None


def _negative_field(keys, negative_column, file):
    if negative_column is None:
        return None
    lower = {str(k).lower(): k for k in keys}
    if negative_column.lower() not in lower:
        raise ConfigError(f"{file} has no {negative_column} field for the negative prompts (found: "
                          f"{sorted(map(str, keys))[:8]}); set prompts.negative_column=... or null")
    return lower[negative_column.lower()]


def _csv(file, column, negative_column=None):
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            return []
        key = _field(reader.fieldnames, column, file)
        neg = _negative_field(reader.fieldnames, negative_column, file)
        return [(row[key], None if neg is None else row[neg]) for row in reader]


def _json(file, column, captions, negative_column=None):
    data = json.loads(file.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "annotations" in data:
        if negative_column is not None:
            raise ConfigError(f"{file} holds COCO captions, which have no negative prompts; set "
                              "prompts.negative_column=null (prompts.negative=... gives all of them one)")
        return [(p, None) for p in _coco(data, captions, file)]
    if not isinstance(data, list):
        raise ConfigError(f"{file} is neither a list of prompts nor COCO caption annotations; fix prompts.path")
    objects = [d for d in data if isinstance(d, dict)]
    if not objects:
        if negative_column is not None:
            raise ConfigError(f"{file} is a list of strings, with no {negative_column} field; make it a list of "
                              "objects with a prompt and a negative prompt, or set prompts.negative_column=null")
        return [(p, None) for p in data]
    key = _field(objects[0].keys(), column, file)
    neg = _negative_field(objects[0].keys(), negative_column, file)
    return [(d.get(key), None if neg is None else d.get(neg)) for d in objects]


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
