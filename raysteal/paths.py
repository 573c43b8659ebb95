"""Where raysteal looks for datasets.

Resolution order (first that applies wins):

1. an explicit path (``--data-dir``, ``data_dir=``);
2. the ``RAYSTEAL_DATA`` environment variable;
3. a per-user cache: ``$XDG_CACHE_HOME/raysteal/data``, else ``~/.cache/raysteal/data``.

Under the data directory each dataset has its own folder, mirroring the project's shared copy
(``ml-1m/ml-1m.seq.tsv.gz``, ``tafeng/ta_feng_all_months_merged.csv.gz``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from raysteal.errors import DataFileError

DATA_ENV = "RAYSTEAL_DATA"
"""Environment variable naming the data directory."""


def cache_dir() -> Path:
    """The per-user cache directory of raysteal (``$XDG_CACHE_HOME/raysteal`` or ``~/.cache/raysteal``)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "raysteal"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit``, else ``$RAYSTEAL_DATA``, else the per-user cache.

    The directory is not created here (fetching creates it); ``~`` is expanded. A path that
    exists and is not a directory raises ``DataFileError``.
    """
    if explicit is not None and str(explicit) != "":
        chosen = Path(explicit).expanduser()
    elif os.environ.get(DATA_ENV):
        chosen = Path(os.environ[DATA_ENV]).expanduser()
    else:
        chosen = cache_dir() / "data"
    if chosen.exists() and not chosen.is_dir():
        raise DataFileError(f"{chosen}: is a file, not a data directory ({data_dir_origin(explicit)})")
    return chosen


def data_dir_origin(explicit: str | os.PathLike[str] | None = None) -> str:
    """Which rule chose :func:`data_dir` (for error messages and ``raysteal data list``)."""
    if explicit is not None and str(explicit) != "":
        return "given explicitly"
    if os.environ.get(DATA_ENV):
        return f"from ${DATA_ENV}"
    return "the per-user cache (set $RAYSTEAL_DATA or pass --data-dir to change it)"
