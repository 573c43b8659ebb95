"""Download a dataset's official file, verify its sha256, install it into the data directory.

Nothing is ever downloaded implicitly: only :func:`fetch` (``raysteal data fetch NAME``) does.
The download goes to a temporary file inside the data directory; only when its sha256 matches
is it extracted (into a temporary folder) and moved into place, file by file with
``os.replace``, so a failed or tampered download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from raysteal.data.datasets import dataset_spec
from raysteal.errors import ConfigError, DataFileError
from raysteal.paths import data_dir as resolve_data_dir

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` did: the installed files, or the file already present."""

    dataset: str
    paths: tuple[Path, ...]
    downloaded: bool
    sha256: str | None = None


def _download(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest``; returns the hex sha256 of what was written."""
    h = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "raysteal-data-fetch"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DataFileError(f"cannot download {url}: {reason}") from None
    return h.hexdigest()


def _safe_members(archive: zipfile.ZipFile, name: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Regular-file members with safe relative paths (no absolute paths, no ``..``, no macOS junk)."""
    members = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        rel = PurePosixPath(info.filename)
        if rel.is_absolute() or ".." in rel.parts or (rel.parts and rel.parts[0].endswith(":")):
            raise DataFileError(f"{name}: unsafe path {info.filename!r} in the archive; nothing was installed")
        if rel.parts[0] == "__MACOSX" or rel.name == ".DS_Store":
            continue
        members.append((info, rel))
    if not members:
        raise DataFileError(f"{name}: the archive holds no files; nothing was installed")
    return members


def _install_zip(archive_path: Path, root: Path, target: str, label: str) -> list[Path]:
    """Extract into a temporary folder under ``root``, then move every file into place."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile:
        raise DataFileError(f"{label}: the download is not a zip archive; nothing was installed") from None
    staging = Path(tempfile.mkdtemp(prefix=".raysteal-extract-", dir=root))
    try:
        with archive:
            members = _safe_members(archive, label)
            for info, rel in members:
                out = staging.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
        installed = []
        dest_root = (root / target).resolve()
        for _, rel in members:
            dest = dest_root.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.joinpath(*rel.parts), dest)
            installed.append(dest)
        return installed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> FetchResult:
    """Download dataset ``name`` into the data directory and verify it (``raysteal data fetch``).

    ``url`` overrides the official location (a mirror, or ``file://``); ``sha256`` overrides the
    known hash and is required when none is known. When a usable file is already present and
    ``force`` is false nothing is downloaded.
    """
    spec = dataset_spec(name)
    if spec.fetch is None and url is None:
        raise ConfigError(f"dataset {name!r} has no download: {spec.description}")
    official = spec.fetch
    expected = (sha256 or (official.sha256 if official else None) or "").lower() or None
    if expected is None:
        raise ConfigError(
            f"no published sha256 is known for dataset {name!r}; refusing to download unverified data "
            "(pass --sha256 with the archive's hash)"
        )
    if not _SHA256.match(expected):
        raise ConfigError(f"--sha256 must be 64 hex digits, got {expected!r}")
    root = resolve_data_dir(data_dir)
    if not force:
        present = spec.find(root)
        if present is not None:
            return FetchResult(name, (present,), downloaded=False)
    kind = official.kind if official else ("zip" if (url or "").lower().endswith(".zip") else "file")
    target = official.target if official else f"{spec.folder}/{PurePosixPath(url or '').name}"
    url = url or official.url  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".raysteal-fetch-", suffix=".part", dir=root)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        got = _download(url, tmp, timeout)
        if got != expected:
            raise DataFileError(
                f"sha256 mismatch for {url}: expected {expected}, got {got}; the download was discarded and nothing was installed"
            )
        if kind == "zip":
            paths = _install_zip(tmp, root, target, url)
        else:
            dest = root / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            paths = [dest]
    finally:
        tmp.unlink(missing_ok=True)
    return FetchResult(name, tuple(paths), downloaded=True, sha256=got)
