"""Share a student's training phases that never see the target between the runs that repeat them.

Zhu et al.'s attacks on sequential targets (App. A.3, Table 8) train the student on the attacker's
own sequences before any query (PTD's whole training; PTQ's and PTAQ's first phases, PTAQ's after a
pre-training on the auxiliary sequences). Those phases depend on the student, the sequences, the
phases' settings and the seed, never on the target: one seed's PTD and PTQ start from the same
trained student, and so do its runs against every target of a file. :func:`shared_phases` trains
them once, keeps the student's weights and what the phases reported in a cache directory under a
key of everything they depend on, and gives the next run with that key the same student instead of
training it again. The phases run under a forked RNG (:func:`raysteal.training.trainer.private_rng`),
so what follows them draws the same numbers either way: a run that loads the phases ends with the
same clone as one that trains them (``tests/test_extraction_dfme.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raysteal.training.checkpoint import atomic_torch_save

FORMAT = "raysteal-phases/1"


def array_digest(array: np.ndarray | None) -> str | None:
    """A short hash of an array's shape, type and bytes (``None`` for ``None``)."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    head = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(head + array.tobytes()).hexdigest()[:24]


def phase_key(spec: dict[str, Any]) -> str:
    """The cache key of phases described by ``spec`` (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _read(path: Path) -> dict[str, Any] | None:
    """The saved phases at ``path``; ``None`` when there are none or the file cannot be read (a
    damaged file is trained again and replaced, never trusted)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (torch raises several types for a damaged file)
        return None
    return payload if isinstance(payload, dict) else None


def shared_phases(
    student: nn.Module, spec: dict[str, Any], cache_dir: str | os.PathLike, train: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Leave ``student`` as ``train()`` leaves it and return what ``train`` returned, plus
    ``phases_shared``: ``True`` when a run with the same ``spec`` had trained it and its weights
    came from ``cache_dir`` (``train`` not called), ``False`` when ``train`` ran and its result was
    saved there (atomically: runs side by side may both train, never read half a file)."""
    path = Path(cache_dir) / "phases" / f"{phase_key(spec)}.pt"
    payload = _read(path)
    if payload is not None and payload.get("format") == FORMAT and payload.get("spec") == spec:
        student.load_state_dict(payload["state_dict"])
        return {**payload["info"], "phases_shared": True}
    info = train()
    state = {name: tensor.detach().cpu() for name, tensor in student.state_dict().items()}
    atomic_torch_save({"format": FORMAT, "spec": spec, "state_dict": state, "info": info}, path)
    return {**info, "phases_shared": False}
