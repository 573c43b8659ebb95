"""Atomic file writes: a reader (or a run resumed after a crash) sees the old file or the whole new
one, never half of one. Every result, checkpoint, cache and summary raysteal writes goes through
:func:`write_atomically`: a uniquely named temp file beside the target, flushed and fsynced,
then ``os.replace``; on any failure the temp file is removed and the old file is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

_UMASK = os.umask(0o022)  # reading the umask means setting it: put it straight back
os.umask(_UMASK)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a binary temp file beside ``path``, then move it into place.

    The directory is created when missing; the file gets the permissions a plain ``open`` would
    (0666 less the umask; ``mkstemp`` alone would make it 0600 and a shared cache unreadable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_atomically` for UTF-8 text."""
    return write_atomically(path, lambda fh: fh.write(text.encode("utf-8")))
