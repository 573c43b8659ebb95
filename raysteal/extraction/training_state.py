"""Resumable student training: the whole state of :func:`raysteal.extraction.student.train_student`
after an epoch, written atomically, so a run that dies (or a CPU run longer than one sitting)
goes on from its last finished epoch and ends exactly where an uninterrupted run would.

The state holds the student's weights, AdamW's moments, the batch-sampling generator, torch's
global RNG (dropout), the per-epoch history and the counters; ``key`` names what it was made
for (seed, data size, optimiser settings, objective) and a state made for anything else is refused.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raysteal.errors import ConfigError
from raysteal.training.checkpoint import atomic_torch_save

FORMAT = "raysteal-student-state/2"  # /2: the key names the objective


@dataclass
class TrainingProgress:
    """Where training stands: the last finished epoch, its per-epoch stats and running totals."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    prefixes: int = 0


def save_training_state(
    path: str | os.PathLike,
    key: str,
    progress: TrainingProgress,
    student: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """Write the state after ``progress.epoch`` to ``path`` (temp file, then ``os.replace``)."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "key": key,
        "epoch": progress.epoch,
        "history": progress.history,
        "steps": progress.steps,
        "prefixes": progress.prefixes,
        "student": {k: v.detach().to("cpu") for k, v in student.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    atomic_torch_save(payload, path)


def load_training_state(
    path: str | os.PathLike | None,
    key: str,
    student: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    restart_if_unusable: bool = False,
) -> TrainingProgress:
    """Restore the state at ``path`` into the given objects (no file: a fresh start at epoch 0).

    A file that is not a student state, or was made for another run (``key``: e.g. other
    settings, or another device type, whose generator state has another layout), is a
    ``ConfigError``; nothing is changed then. With ``restart_if_unusable`` (a run directory the
    caller owns) such a file is ignored with a warning, training starts at epoch 0 and the next
    save replaces it.
    """
    if path is None or not Path(path).exists():
        return TrainingProgress()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ConfigError(f"student state {path}: not a {FORMAT} file; delete it to start afresh")
        if payload["key"] != key:
            raise ConfigError(f"student state {path} was made for another run ({payload['key']}, this one is {key}); "
                              "delete it or pass another path")
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same error to the user
        message = str(err) if isinstance(err, ConfigError) else f"student state {path}: unreadable ({err}); delete it to start afresh"
        if restart_if_unusable:
            warnings.warn(f"{message}; training starts afresh", RuntimeWarning, stacklevel=2)
            return TrainingProgress()
        raise ConfigError(message) from None
    student.load_state_dict(payload["student"])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["cpu_rng"])
    if device.type == "cuda" and payload["cuda_rng"] is not None:
        torch.cuda.set_rng_state(payload["cuda_rng"], device)
    return TrainingProgress(epoch=int(payload["epoch"]), history=list(payload["history"]),
                            steps=int(payload["steps"]), prefixes=int(payload["prefixes"]))
