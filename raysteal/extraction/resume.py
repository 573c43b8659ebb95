"""Resuming an extraction run where it died: the gathered data, then the student's epochs.

A DFME or BAHSD run (Yue et al. 2021; BAHSD) has two long phases: gathering -- synthetic
sequences grown against the black box, and BAHSD's probes -- which spends the query budget, and
student training. Given a run directory, a recipe writes what it gathered there once, atomically
(:func:`save_extraction_set`), and the student's state after every epoch
(:mod:`raysteal.extraction.training_state`). Restarted with the same directory it reads the
answers back instead of querying again -- the queries were paid for once, by the attempt that
died -- and trains on from the last finished epoch, ending where an uninterrupted run would.

Each file carries a ``key`` naming what it was made for; a file made for anything else, or one
that cannot be read, is a ``ConfigError`` and is left as it is (never silently overwritten).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raysteal.atomic import write_atomically, write_text_atomically
from raysteal.errors import ConfigError
from raysteal.extraction.types import ExtractionSet

FORMAT = "raysteal-extraction-set/1"
DATA_FILE = "extraction.npz"
STATE_FILE = "student.state"
TARGET_FILE = "target.txt"
_EXTRA = "extra/"


def save_extraction_set(path: str | os.PathLike, key: str, data: ExtractionSet, meta: dict[str, Any] | None = None) -> Path:
    """Write ``data`` (sequences, answers, query count, extras) and JSON-able ``meta`` to an
    ``.npz`` at ``path`` atomically (:func:`raysteal.atomic.write_atomically`)."""
    arrays = {f"{_EXTRA}{name}": np.asarray(value) for name, value in data.extras.items()}
    # allow_pickle=True is numpy's default, named so that a type checker sees no key of arrays can fill it
    return write_atomically(
        path,
        lambda fh: np.savez(
            fh,
            format=FORMAT,
            key=key,
            meta=json.dumps(meta or {}),
            sequences=data.sequences,
            lists=data.lists,
            queries=np.int64(data.queries),
            allow_pickle=True,
            **arrays,
        ),
    )


def load_extraction_set(path: str | os.PathLike | None, key: str) -> tuple[ExtractionSet, dict[str, Any]] | None:
    """``(data, meta)`` saved at ``path`` for ``key``; ``None`` when there is no file.

    A file that is not an extraction set, is truncated, or was made for another ``key`` is a
    ``ConfigError`` naming it."""
    if path is None or not Path(path).exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if "format" not in saved.files or str(saved["format"]) != FORMAT:
                raise ConfigError(f"extraction data {path}: not a {FORMAT} file; delete it or pass another path")
            if str(saved["key"]) != key:
                raise ConfigError(
                    f"extraction data {path} was made for another run ({saved['key']}, this one is {key}); delete it or pass another path"
                )
            extras = {name[len(_EXTRA) :]: saved[name] for name in saved.files if name.startswith(_EXTRA)}
            data = ExtractionSet(sequences=saved["sequences"], lists=saved["lists"], queries=int(saved["queries"]), extras=extras)
            return data, json.loads(str(saved["meta"]))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - not an .npz, truncated, or written by something else
        raise ConfigError(f"extraction data {path}: unreadable ({err}); delete it to gather the data anew") from None


def gathered_once(
    directory: str | os.PathLike | None,
    key: str,
    gather: Callable[[], tuple[ExtractionSet, dict[str, Any]]],
) -> tuple[ExtractionSet, dict[str, Any], bool]:
    """``gather()`` at most once per run directory: ``(data, meta, reused)``.

    Without a directory this is just ``gather()``. With one, data saved there for ``key`` is
    returned without calling ``gather`` (no query is sent); otherwise ``gather()`` runs and its
    result is saved before training starts (a save that fails only warns: the queries are spent,
    and training goes on with the data in memory)."""
    path = None if directory is None else Path(directory) / DATA_FILE
    saved = load_extraction_set(path, key)
    if saved is not None:
        return saved[0], saved[1], True
    data, meta = gather()
    if path is not None:
        try:
            save_extraction_set(path, key, data, meta)
        except OSError as err:  # the budget is spent: train on what is in memory, only resuming is lost
            warnings.warn(f"could not keep the gathered data in {path} ({err}); this run cannot resume", RuntimeWarning, stacklevel=2)
    return data, meta, False


def claim_run_directory(directory: str | os.PathLike, target: str) -> Path:
    """Make ``directory`` the scratch of a run against the black box named by ``target`` (a
    fingerprint of its answers and the code version): whatever an earlier attempt left there
    against another one -- a retrained target, other code -- is removed first, since answers of
    another black box would silently train the wrong student."""
    directory = Path(directory)
    marker = directory / TARGET_FILE
    if directory.exists() and (not marker.is_file() or marker.read_text() != target):
        shutil.rmtree(directory)
    if not marker.is_file():
        write_text_atomically(marker, target)
    return directory


def student_resume_options(directory: str | os.PathLike | None) -> dict[str, Any]:
    """``train_student`` keywords for a run directory: its state file, and a fresh start (with a
    warning) when the state there cannot be used -- e.g. a retry on another device type; the
    saved data stays good, so only the epochs are redone. Nothing without a directory."""
    if directory is None:
        return {}
    return {"state_path": Path(directory) / STATE_FILE, "restart_if_unusable": True}


ADDED_SETTINGS: dict[str, object] = {"infonce_prefixes": None}
"""Attack settings added after runs saved their state: left out of the keys while at their
default, so a run interrupted on the code before them resumes on the code after."""


def without_added_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` less the :data:`ADDED_SETTINGS` at their default."""
    return {k: v for k, v in settings.items() if not (k in ADDED_SETTINGS and v == ADDED_SETTINGS[k])}


def run_key(config: Any, seed: int, num_items: int) -> str:
    """What a run directory's files must match: the recipe's whole config, the seed, the catalogue."""
    settings = json.dumps(without_added_settings(config.model_dump(mode="json")), sort_keys=True)  # YAML key order does not matter
    return f"{settings}|seed={int(seed)}|items={int(num_items)}"
