"""Atomic file writes: a reader (or a run resumed after a crash) sees the old file or the whole new
one, never half of one. Every result, checkpoint, cache and summary raysteal writes goes through
:func:`write_atomically`: a uniquely named temp file beside the target, flushed and fsynced,
then ``os.replace``; on any failure the temp file is removed and the old file is untouched.

A writer killed outright (SIGKILL, a lost node) cannot remove its temp file: the temp name
records the writing machine and process (``.NAME.<node>-<pid>.XXXXXXXX.tmp``), and
:func:`remove_stale_temp_files` removes the ones whose writer is gone.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0o022)  # reading the umask means setting it: put it straight back
os.umask(_UMASK)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a binary temp file beside ``path``, then move it into place.

    The directory is created when missing; the file gets the permissions a plain ``open`` would
    (0666 less the umask; ``mkstemp`` alone would make it 0600 and a shared cache unreadable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{node_id()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


def copy_atomically(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``source``'s bytes to ``path`` with :func:`write_atomically` (never a half-copied file)."""
    data = Path(source).read_bytes()
    return write_atomically(path, lambda fh: fh.write(data))


TEMP_NAME = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<node>[0-9a-f]{8})-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
"""Names of :func:`write_atomically`'s temp files (older versions wrote them without node and pid)."""
SETTLED_AFTER_S = 60.0
"""No temp file younger than this is touched, whoever wrote it (a writer in another container may
share this machine's name and boot, not its process ids)."""
STALE_AFTER_S = 3600.0
"""A temp file whose writer cannot be asked (another machine's, or unnamed) is stale once it has
not been written to for this long (a live writer keeps its file's mtime fresh)."""


@functools.lru_cache(maxsize=1)
def node_id() -> str:
    """This machine (and boot) as 8 hex digits: host name and boot id, hashed."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha1(f"{socket.gethostname()}/{boot}".encode()).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale_temp_file(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temp file of :func:`write_atomically` whose writer is gone: older than
    :data:`SETTLED_AFTER_S` and written on this machine by a process that no longer exists, or
    untouched for :data:`STALE_AFTER_S` (another machine's, or a name without its writer)."""
    match = TEMP_NAME.match(path.name)
    if match is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    if age < SETTLED_AFTER_S:
        return False
    if match["pid"] is not None and match["node"] == node_id():
        return not _process_alive(int(match["pid"]))
    return age > STALE_AFTER_S


def remove_stale_temp_files(*roots: str | os.PathLike | None) -> list[Path]:
    """Remove the stale temp files (:func:`is_stale_temp_file`) under each directory of ``roots``
    (missing ones and ``None`` skipped); returns what was removed. Nothing else is touched."""
    removed = []
    for root in roots:
        if root is None or not Path(root).is_dir():
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                if name.endswith(".tmp") and is_stale_temp_file(path):
                    try:
                        path.unlink()
                        removed.append(path)
                    except FileNotFoundError:  # its writer or another cleaner got there first
                        pass
    return removed
