"""Writing files the way every output of tstitch is written: whole (a temporary name unique to this process, then
an atomic rename, so that a killed run or a second process never leaves half a file) and, for JSON, valid
(``NaN``/``inf`` are not JSON: they are written as null, and the caller that cares refuses them earlier).

A full disk or quota (ENOSPC, EDQUOT) while writing is ``DiskFull``, one line naming the directory; the temporary
file is removed, and the file it was to replace is left as it was."""
import contextlib
import errno
import json
import math
import os
import socket
from pathlib import Path

from tstitch.errors import ConfigError

FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFull(ConfigError):
    """A write that found its disk, or the user's quota, full."""


def disk_full(error, path):
    """``DiskFull`` naming ``path``'s directory for an OSError of a full disk or quota; None for any other error."""
    if not isinstance(error, OSError) or error.errno not in FULL:
        return None
    path = Path(path)
    fix = "free space there" + (" (or raise the quota)" if error.errno == errno.EDQUOT else "")
    return DiskFull(f"{FULL[error.errno]} in {path.parent} (writing {path.name}); {fix} and run the same command "
                    "again")


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


@contextlib.contextmanager
def whole(path):
    """Yields a temporary name (``temporary``) to write ``path`` to: renamed to ``path`` when the block ends, removed
    when it fails (a signal included); a full disk is ``DiskFull``."""
    path = Path(path)
    tmp = temporary(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full(e, path)
        if full is not None:
            raise full from None
        raise


def write_text(path, text):
    with whole(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_npz(path, **arrays):
    """``np.savez`` of ``arrays`` into ``path``, whole."""
    import numpy as np

    with whole(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def write_json(path, value, indent=2):
    return write_text(path, dumps(value, indent=indent) + "\n")


def write_jsonl(path, rows):
    return write_text(path, "".join(dumps(r) + "\n" for r in rows))
