"""Writing files the way every output of tstitch is written: whole (a temporary name unique to this process, then
an atomic rename, so that a killed run or a second process never leaves half a file) and, for JSON, valid
(``NaN``/``inf`` are not JSON: they are written as null, and the caller that cares refuses them earlier)."""
import json
import math
import os
import socket
from pathlib import Path


def finite(value):
    """``value`` with every non-finite float replaced by None (lists, tuples and dicts walked)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, **kwargs):
    """JSON text of ``value``; never ``NaN`` or ``Infinity``."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def file_id(path):
    """``[path, size, mtime_ns]``: what tells one version of a file from another without reading it."""
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def temporary(path):
    """A sibling temporary name unique to this process and host (hidden, ``.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def write_text(path, text):
    path = Path(path)
    tmp = temporary(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_npz(path, **arrays):
    """``np.savez`` of ``arrays`` into ``path``, whole."""
    import numpy as np

    tmp = temporary(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)
    return path


def write_json(path, value, indent=2):
    return write_text(path, dumps(value, indent=indent) + "\n")


def write_jsonl(path, rows):
    return write_text(path, "".join(dumps(r) + "\n" for r in rows))
