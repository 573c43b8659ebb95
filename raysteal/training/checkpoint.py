"""Checkpoints: weights + model spec + data fingerprint + metrics in one file, written atomically.

The file is a ``torch.save`` of plain containers (loaded back with ``weights_only=True``, so
opening a checkpoint never runs pickled code)::

    {"format": "raysteal-checkpoint/1", "spec": {"config", "num_users", "num_items"},
     "state_dict": {...}, "fingerprint": str | None, "metrics": {...}, "extra": {...}}

It is written to a temporary file in the same directory and moved into place with
``os.replace``, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import raysteal.models  # noqa: F401  (registers every model)
from raysteal.atomic import write_atomically
from raysteal.errors import DataFileError
from raysteal.models.base import Recommender, build_model

FORMAT = "raysteal-checkpoint/1"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (:func:`raysteal.atomic.write_atomically`)."""
    return write_atomically(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(
    path: str | os.PathLike,
    model: Recommender,
    *,
    fingerprint: str | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (weights moved to the CPU) and its metadata to ``path`` atomically."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "spec": model.spec(),
        "state_dict": state,
        "fingerprint": fingerprint,
        "metrics": dict(metrics or {}),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint payload (clear error naming the file when it is missing or not ours)."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"checkpoint {path} is a directory (name the checkpoint file in it, e.g. checkpoint.pt)")
    if not path.is_file():
        raise DataFileError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file at all (a YAML, a truncated download, ...)
        raise DataFileError(f"checkpoint {path} is not a raysteal checkpoint (torch cannot read it: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataFileError(f"checkpoint {path} is not a {FORMAT} file")
    return payload


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the model with its exact weights; returns ``(model in eval mode, metadata)``.

    ``metadata`` holds ``spec``, ``fingerprint``, ``metrics`` and ``extra`` as saved.
    """
    payload = read_checkpoint(path)
    spec = payload["spec"]
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave global RNG alone
        model = build_model(spec["config"], num_users=spec["num_users"], num_items=spec["num_items"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise DataFileError(f"checkpoint {path}: weights do not match the model spec: {err}") from None
    model.to(device).eval()
    meta = {k: payload[k] for k in ("spec", "fingerprint", "metrics", "extra")}
    return model, meta
