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

Control images: a prompt may carry one too (``Prompt(text, control=...)``: an image file's path or a PIL image;
``with_control_images`` pairs them), which members with a ControlNet read (``tstitch.models.adapters._control``);
``load`` attaches them from ``control_image`` (one file for every prompt) and ``control_image_column`` (a csv
column / json field of each prompt's own file, relative to the prompt file's folder). A run's identity records each
image by its content (``recorded``).

Sample i is drawn from seed ``seed + i`` and conditioned on prompt ``i % len(prompts)`` (``assign``), as the
class-conditional runs pair seeds with labels: every image is a function of its seed and the prompt list.
"""
import csv
import functools
import hashlib
import json
import os
import random
from pathlib import Path

from tstitch.errors import ConfigError
from tstitch.searchpath import config_dirs

FIELDS = ("prompt", "caption")


class Prompt(str):
    """A prompt (it is its text) with an optional negative prompt, ``negative``, and control image, ``control`` (an
    image file's path or a PIL image), for members with a ControlNet (None: none)."""

    negative: str | None
    control: object

    def __new__(cls, text, negative=None, control=None):
        if not isinstance(text, str) or (negative is not None and not isinstance(negative, str)):
            raise ConfigError(f"a prompt and its negative prompt are strings, not {type(text).__name__} and "
                              f"{type(negative).__name__}")
        if control is not None and not isinstance(control, (str, os.PathLike)) and not _is_image(control):
            raise ConfigError(f"a control image is an image file's path or a PIL image, not {type(control).__name__}")
        self = super().__new__(cls, text)
        self.negative, self.control = negative, None if control is None else _as_control(control)
        return self

    def __reduce__(self):  # pickled with its negative prompt and control image (DataLoader workers, spawned ranks)
        return Prompt, (str(self), self.negative, self.control)

    def __repr__(self):
        control = "" if self.control is None else f", control={self.control!r}"
        return f"Prompt({str(self)!r}, negative={self.negative!r}{control})"


def _is_image(value):
    from PIL import Image

    return isinstance(value, Image.Image)


def _as_control(value):
    return value if _is_image(value) else str(Path(value).expanduser())


def control_of(prompt):
    """The control image of ``prompt`` (a ``Prompt``'s), or None."""
    return getattr(prompt, "control", None)


def with_control_images(prompts, images):
    """``prompts`` with control images (their negative prompts kept): ``images`` is one image (a file's path or a
    PIL image) for every prompt, or a list of one per prompt (None: none); None leaves the prompts as they are."""
    prompts = list(prompts)
    if images is None:
        return prompts
    if isinstance(images, (str, os.PathLike)) or _is_image(images):
        images = [images] * len(prompts)
    images = list(images) if isinstance(images, (list, tuple)) else None
    if images is None or len(images) != len(prompts):
        raise ConfigError(f"give one control image per prompt ({len(prompts)}: image files or PIL images, or None for "
                          "none), or one for all of them")
    for image in images:
        if isinstance(image, (str, os.PathLike)) and not Path(image).expanduser().is_file():
            raise ConfigError(f"control image not found: {Path(image).expanduser()}; fix the path")
    return [Prompt(p, negative_of(p), image) for p, image in zip(prompts, images)]


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
    return [Prompt(p, n, control_of(p)) for p, n in zip(prompts, negatives)]


def negative_of(prompt):
    """The negative prompt of ``prompt`` (a ``Prompt``'s), or None."""
    return getattr(prompt, "negative", None)


def recorded(prompts):
    """A prompt list as a run's identity records it (``identity.json``): each prompt, or ``[prompt, negative]``
    where it has a negative prompt, ``[prompt, negative, "sha256:..."]`` where it has a control image (the
    image's content: another image at the same path is another run); None for None."""
    if prompts is None:
        return None

    def one(p):
        if control_of(p) is not None:
            return [str(p), negative_of(p), content(control_of(p))]
        return str(p) if negative_of(p) is None else [str(p), negative_of(p)]

    return [one(p) for p in prompts]


def content(image):
    """``sha256:<hex>`` of a control image: a file's bytes, or a PIL image's mode, size and pixels."""
    if _is_image(image):
        return "sha256:" + hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
    path = Path(image)
    stat = path.stat()
    return _file_content(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_content(path, size, mtime):
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(path, *, column=None, captions="first", limit=None, seed=0, negative=None, negative_column=None,
         control_image=None, control_image_column=None):
    """The prompts in ``path`` in file order; ``limit`` takes that many of them, chosen with ``seed`` (file order
    kept). ``column`` names the csv column / json field (default: ``prompt``, then ``caption``); ``captions``
    ("first" or "all") applies to COCO annotations. A relative path not found from the working directory is
    looked up among the shipped sets in ``conf/prompts/``, then in ``prompts/`` of the user's config folders.

    Negative prompts (``Prompt``): ``negative_column``, a csv column / json field, gives each prompt its own (an
    empty cell: none); ``negative`` is the one of every prompt without its own. Control images (``Prompt.control``)
    likewise: ``control_image_column`` (image paths, relative to ``path``'s folder) and ``control_image``. Without
    any of these, plain strings."""
    file = _find(path)
    kind = file.suffix.lower()
    columns = [negative_column, control_image_column]
    for key, name in zip(("negative_column", "control_image_column"), columns):
        if name is not None and kind not in (".csv", ".json"):
            raise ConfigError(f"prompts.{key}={name!r} names a column, but {file} is a {kind} file; put the "
                              f"prompts and their {key.removesuffix('_column')}s in a .csv or .json, or set "
                              f"prompts.{key.removesuffix('_column')}=... (one for all)")
    try:
        if kind == ".txt":
            rows = [(p, None, None) for p in file.read_text(encoding="utf-8").splitlines()]
        elif kind == ".csv":
            rows = _csv(file, column, *columns)
        elif kind == ".json":
            rows = _json(file, column, captions, *columns)
        else:
            raise ConfigError(f"prompt file {file} is not .txt, .csv or .json; convert it or set prompts.path=...")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ConfigError(f"prompt file {file} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "fix the file or set prompts.path=...") from None
    rows = [(p.strip(), _text(n) or _text(negative), _image(c, file) or _image(control_image))
            for p, n, c in rows if isinstance(p, str) and p.strip()]
    if not rows:
        raise ConfigError(f"prompt file {file} holds no prompts; put one prompt per line (.txt) or set "
                          "prompts.path=...")
    if all(n is None and c is None for _, n, c in rows):
        return _take([p for p, _, _ in rows], limit, seed, file)
    return _take([Prompt(*row) for row in rows], limit, seed, file)


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


def _image(value, file=None):
    """A control image path as given (relative to the prompt file's folder where ``file`` is given), checked to be
    a file; None where there is none."""
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    path = path if file is None or path.is_absolute() else file.parent / path
    if not path.is_file():
        where = f"named in {file}" if file is not None else "(prompts.control_image)"
        raise ConfigError(f"control image not found: {path} {where}; fix the path (a column's paths are relative to "
                          "the prompt file's folder)")
    return str(path)


KINDS = ("negative prompts", "control images")  # what the extra columns hold, in the order of the rows


def _extra_field(keys, name, what, file):
    if name is None:
        return None
    lower = {str(k).lower(): k for k in keys}
    if name.lower() not in lower:
        key = "negative_column" if what == KINDS[0] else "control_image_column"
        raise ConfigError(f"{file} has no {name} field for the {what} (found: {sorted(map(str, keys))[:8]}); set "
                          f"prompts.{key}=... or null")
    return lower[name.lower()]


def _csv(file, column, negative_column=None, control_column=None):
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            return []
        key = _field(reader.fieldnames, column, file)
        extra = [_extra_field(reader.fieldnames, n, w, file) for n, w in zip((negative_column, control_column), KINDS)]
        return [(row[key], *(None if k is None else row[k] for k in extra)) for row in reader]


def _json(file, column, captions, negative_column=None, control_column=None):
    data = json.loads(file.read_text(encoding="utf-8"))
    names = (negative_column, control_column)
    if isinstance(data, dict) and "annotations" in data:
        for name, what in zip(names, KINDS):
            if name is not None:
                raise ConfigError(f"{file} holds COCO captions, which have no {what}; set prompts."
                                  f"{'negative_column' if what == KINDS[0] else 'control_image_column'}=null (one "
                                  "for all of them: prompts.negative=... / prompts.control_image=...)")
        return [(p, None, None) for p in _coco(data, captions, file)]
    if not isinstance(data, list):
        raise ConfigError(f"{file} is neither a list of prompts nor COCO caption annotations; fix prompts.path")
    objects = [d for d in data if isinstance(d, dict)]
    if not objects:
        for name, what in zip(names, KINDS):
            if name is not None:
                raise ConfigError(f"{file} is a list of strings, with no {name} field; make it a list of objects "
                                  f"with a prompt and its {what[:-1]}, or set prompts."
                                  f"{'negative_column' if what == KINDS[0] else 'control_image_column'}=null")
        return [(p, None, None) for p in data]
    key = _field(objects[0].keys(), column, file)
    extra = [_extra_field(objects[0].keys(), n, w, file) for n, w in zip(names, KINDS)]
    return [(d.get(key), *(None if k is None else d.get(k) for k in extra)) for d in objects]


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
