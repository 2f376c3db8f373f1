"""Image sets as the metrics read them, checked before any feature is extracted: an ADM-style ``.npz`` (``arr_0``),
an image folder, or a named set (``fashion-mnist-test`` / ``fashion-mnist-train``, the toy zoo's references).

An ``.npz``'s ``arr_0`` may be uint8, or integers or floats in [0, 255] (range checked, rounded to uint8). Float
images whose range does not say which they are are refused unless ``float_range`` says it (``unit``: [0, 1], scaled;
``byte``: [0, 255]): a maximum of at most 1 (a set in [0, 1] read as [0, 255] is all but black: FID 1205.9 instead of
1.58 in a test), or up to ``AMBIGUOUS_MAX`` with fractional values ([0, 1] images a little past 1, or very dark
[0, 255] ones: FID 1564 instead of 77.9). The layout is detected and said: NHWC, NCHW or grayscale NHW; grayscale
becomes RGB for extractors that need three channels. Nothing is read whole (a memory map; only a float or
wide-integer set is scanned once for its range). Folder images are read as torch-fidelity reads them (converted to
RGB: alpha dropped, palettes expanded, said in a note); 16-bit grayscale is scaled to 8 bits, not clipped.
``npz_member`` (one array of an ``.npz``, memory-mapped) and ``image_files`` (a folder's images, as torch-fidelity
globs them) are how every reader of sample files opens them.
"""
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tstitch.errors import ConfigError

NAMED = {"fashion-mnist-test": "test", "fashion-mnist-train": "train"}
FLOAT_RANGES = ("auto", "unit", "byte")
AMBIGUOUS_MAX = 2.0    # float_range=auto: fractional values with a maximum in (1, this] are refused as ambiguous
UNIT_SLACK = (-0.5, AMBIGUOUS_MAX)  # float_range=unit: values in this range are clipped to [0, 1]; beyond, refused


@dataclass
class ImageSet:
    dataset: object        # items: uint8 (C, H, W) tensors, as torch-fidelity reads them
    size: tuple            # (H, W, C) as stored
    count: int
    note: str = ""         # what was detected or converted, for the user

    def notes(self):
        """What was detected or converted, including what reading the images found (folders: converted modes)."""
        found = getattr(self.dataset, "found", lambda: "")()
        return [n for n in (self.note, found) if n]


class Images(torch.utils.data.Dataset):
    """Images one at a time as uint8 CHW tensors (a memory-mapped array is never read whole). ``layout``: ``nchw``
    (default), ``nhwc`` (or ``nhwc=True``) or ``nhw`` (grayscale); ``scale``: multiply, round and clip to uint8
    (None: the values are uint8 already); ``channels=3``: grayscale repeated to RGB, an alpha channel dropped."""

    def __init__(self, images, nhwc=False, layout=None, scale=None, channels=None):
        self.images, self.layout = images, layout or ("nhwc" if nhwc else "nchw")
        self.scale, self.channels = scale, channels
        self.reading = {"layout": self.layout, "scale": scale, "channels": channels}  # what a cache key must hold

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        img = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img))  # np.array: off the map
        if self.layout == "nhw":
            img = img.unsqueeze(0)
        elif self.layout == "nhwc":
            img = img.permute(2, 0, 1)
        if self.scale is not None:
            img = (img.double() * self.scale).round().clamp(0, 255).to(torch.uint8)
        if self.channels == 3 and img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        elif self.channels == 3 and img.shape[0] == 4:
            img = img[:3]
        return img.contiguous()


def layout(shape, role, path):
    """``(layout, (H, W, C))`` of an image array's shape."""
    if len(shape) == 3:
        return "nhw", (shape[1], shape[2], 1)
    if len(shape) == 4 and shape[3] in (1, 3, 4):
        return "nhwc", (shape[1], shape[2], shape[3])
    if len(shape) == 4 and shape[1] in (1, 3, 4):
        return "nchw", (shape[2], shape[3], shape[1])
    raise ConfigError(f"{role} {path}: arr_0 has shape {tuple(shape)}, which is not images; give (N, H, W, C) or "
                      "(N, C, H, W) with 1, 3 or 4 channels, or (N, H, W) grayscale")


def value_range(array, chunk=256):
    """(min, max, number of non-finite values, whether every finite value is whole) over the array, in chunks."""
    lo, hi, bad, whole = np.inf, -np.inf, 0, True
    for start in range(0, len(array), chunk):
        part = np.asarray(array[start:start + chunk])
        if np.issubdtype(part.dtype, np.floating):
            finite = np.isfinite(part)
            bad += int(part.size - finite.sum())
            part = part[finite]
            whole = whole and bool(np.all(part == np.round(part)))
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    return lo, hi, bad, whole


def scale_of(array, role, path, float_range):
    """None for uint8; else the factor to uint8 grey levels, after checking the values' range."""
    if array.dtype == np.uint8:
        return None, ""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ConfigError(f"{role} {path}: arr_0 is {array.dtype}, not images; give uint8 images")
    lo, hi, bad, whole = value_range(array)
    if bad:
        raise ConfigError(f"{role} {path}: {bad} values of arr_0 are NaN or inf; these are not images")
    kind = "float" if np.issubdtype(array.dtype, np.floating) else "integer"
    if kind == "float" and float_range == "unit":
        if lo < UNIT_SLACK[0] or hi > UNIT_SLACK[1]:
            raise ConfigError(f"{role} {path}: float_range=unit but arr_0 spans [{lo:g}, {hi:g}], far from [0, 1]; "
                              "give images in [0, 1], or float_range=byte for [0, 255]")
        span = "0, 1" if lo >= 0 and hi <= 1 else f"{lo:g}, {hi:g}] clipped to [0, 1"
        return 255.0, f"{array.dtype} in [{span}] scaled to [0, 255] (float_range=unit)"
    if lo < 0 or hi > 255:
        hint = (" (images in [0, 1] a little outside it? float_range=unit clips and scales them)"
                if kind == "float" and UNIT_SLACK[0] <= lo and hi <= UNIT_SLACK[1] else
                " (it looks like model output in [-1, 1]: convert with np.clip((x + 1) * 127.5, 0, 255))"
                if lo >= -1 and hi <= 1 else "")
        raise ConfigError(f"{role} {path}: arr_0 ({array.dtype}) spans [{lo:g}, {hi:g}], outside [0, 255]{hint}; "
                          "give uint8 images")
    if kind == "float" and hi <= 1 and float_range == "auto":
        raise ConfigError(f"{role} {path}: arr_0 holds {array.dtype} values in [{lo:g}, {hi:g}], i.e. images in "
                          "[0, 1], which read as [0, 255] would be all but black; save uint8 images "
                          "(np.round(x * 255).astype(np.uint8)) or pass float_range=unit to scale them")
    if kind == "float" and hi <= AMBIGUOUS_MAX and not whole and float_range == "auto":
        raise ConfigError(f"{role} {path}: arr_0 holds {array.dtype} values in [{lo:g}, {hi:g}]: images in [0, 1] a "
                          "little past 1, or very dark images in [0, 255]; say which: float_range=unit (clipped to "
                          "[0, 1], then scaled) or float_range=byte")
    return 1.0, f"{array.dtype} in [0, 255] rounded to uint8"


def npz_member(path, key):
    """A read-only memory map of ``key`` in an uncompressed ``.npz`` (np.savez / tstitch-generate / ADM)."""
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            return None
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as f:
                return np.load(f)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len  # past the zip local header
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def image_files(folder):
    """The image files of ``folder`` that torch-fidelity reads (not recursive), sorted."""
    from torch_fidelity.defaults import DEFAULTS  # here: importing torch-fidelity takes seconds

    suffixes = tuple(f".{ext}" for ext in DEFAULTS["samples_find_ext"].split(","))  # what torch-fidelity globs
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def open_set(source, role="samples", float_range="auto", channels=None):
    """An ``ImageSet`` of an image folder, an images ``.npz`` or a named set; None for an ``.npz`` without images
    (statistics only). ``channels=3``: grayscale shown as RGB (Inception); None keeps what is stored."""
    if float_range not in FLOAT_RANGES:
        raise ConfigError(f"float_range={float_range!r} is not allowed: one of {', '.join(FLOAT_RANGES)}")
    if str(source) in NAMED:
        from tstitch.data.toy import data

        images = data.load(NAMED[str(source)])[0]
        return ImageSet(Images(images, channels=channels), tuple(images.shape[2:]) + (1,), len(images))
    path = Path(source)
    if path.is_dir():
        return _folder(path, role)
    if path.suffix != ".npz":
        raise ConfigError(f"{role} {path} is neither an image folder nor an .npz file; give one of those (or "
                          f"{', '.join(NAMED)})")
    if not path.exists():
        raise ConfigError(f"{role} {path} not found; give an images .npz, an image folder or one of "
                          f"{', '.join(NAMED)}")
    try:
        array = npz_member(path, "arr_0")
    except Exception as e:  # noqa: BLE001 - zipfile and numpy raise many types for a damaged file
        raise ConfigError(f"{role} {path} is not a readable .npz ({type(e).__name__}: {str(e)[:80]}); "
                          "give an ADM-style .npz (np.savez(path, arr_0=uint8 NHWC images))") from None
    if array is None:
        return None
    kind, size = layout(array.shape, role, path)
    scale, converted = scale_of(array, role, path, float_range)
    note = ", ".join(p for p in (f"{kind.upper()} {size[0]}x{size[1]}x{size[2]}" if kind != "nhwc" else "",
                                  converted) if p)
    return ImageSet(Images(array, layout=kind, scale=scale, channels=channels), size, len(array),
                    f"{role}: {note}" if note else "")


WIDE = ("I;16", "I;16B", "I;16L", "I;16N")  # 16-bit grayscale: scaled to 8 bits (PIL's RGB conversion clips it)
HOW = {"RGBA": "alpha dropped", "LA": "alpha dropped", "PA": "alpha dropped", "P": "palette expanded",
       "1": "bilevel", **{m: "16-bit scaled to 8" for m in WIDE}}


class Files(torch.utils.data.Dataset):
    """The images of a folder read as torch-fidelity reads them (PIL, converted to RGB), uint8 CHW; 16-bit
    grayscale is scaled to 8 bits, 32-bit integer or float images are refused. An unreadable image, or one of
    another size than the first, is one line naming the file. ``found()``: the modes converted so far, as a note."""

    reading = {"folder": "rgb", "wide": "scaled"}  # what a cache key must hold

    def __init__(self, files, role, size):
        self.files, self.role, self.size, self.converted = files, role, size, {}

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            with Image.open(self.files[i]) as img:
                mode, array = img.mode, _rgb(img, self.role, self.files[i])
        except ConfigError:
            raise
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.role} image {self.files[i]} is unreadable ({e}); remove or replace it") from None
        if mode not in ("RGB", "L"):
            self.converted.setdefault(mode, set()).add(i)  # a set: an image read twice counts once
        if array.shape[:2] != self.size[:2]:
            raise ConfigError(f"{self.role} image {self.files[i]} is {array.shape[0]}x{array.shape[1]}, but "
                              f"{self.files[0].name} is {self.size[0]}x{self.size[1]}; give images of one size")
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def found(self):
        if not self.converted:
            return ""
        modes = ", ".join(f"{len(seen)} {m}" + (f" ({HOW[m]})" if m in HOW else "")
                          for m, seen in sorted(self.converted.items()))
        return f"{self.role}: images converted to RGB as torch-fidelity reads them: {modes}"


def _rgb(img, role, path):
    """An (H, W, 3) uint8 array of a PIL image."""
    if img.mode in WIDE:
        gray = (np.asarray(img, dtype=np.uint32) + 128) // 257  # 65535 -> 255, exactly the inverse of x * 257
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        kind = "32-bit integer" if img.mode == "I" else "floating-point"
        raise ConfigError(f"{role} image {path} is {kind} (PIL mode {img.mode}), which has no fixed range; save 8-bit "
                          "images (RGB or grayscale)")
    return np.array(img.convert("RGB"))


def _folder(path, role):
    files = image_files(path)
    if not files:
        raise ConfigError(f"{role} {path} holds no images; give a folder of images or an .npz")
    try:
        with Image.open(files[0]) as img:
            size = (img.height, img.width, 3)  # read as RGB, as torch-fidelity reads folders
    except OSError as e:
        raise ConfigError(f"{role} image {files[0]} is unreadable ({e}); remove or replace it") from None
    return ImageSet(Files(files, role, size), size, len(files))
