"""Resumable student training: the whole state of :func:`raysteal.extraction.student.train_student`
after an epoch, written atomically, so a run that dies (or a CPU run longer than one sitting)
goes on from its last finished epoch and ends exactly where an uninterrupted run would.

The state holds the student's weights, AdamW's moments, the batch-sampling generator, torch's
global RNG (dropout), the per-epoch history and the counters; ``key`` names what it was made
for (seed, data size, optimiser settings, objective) and a state made for anything else is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from raysteal.training.loop_state import load_loop_state, save_loop_state

FORMAT = "raysteal-student-state/2"  # /2: the key names the objective


@dataclass
class TrainingProgress:
    """Where training stands: the last finished epoch, its per-epoch stats and running totals."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    prefixes: int = 0

    def add_epoch(self, epoch: int, stats: dict[str, float], steps: int, prefixes: int) -> None:
        """Count a finished epoch in: its stats, the steps it took and the prefixes it trained on."""
        self.epoch = epoch
        self.history.append(stats)
        self.steps += steps
        self.prefixes += prefixes


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
    fields = {"epoch": progress.epoch, "history": progress.history, "steps": progress.steps, "prefixes": progress.prefixes}
    save_loop_state(
        path,
        format=FORMAT,
        key=key,
        progress=fields,
        model=student,
        optimizer=optimizer,
        generator=generator,
        device=device,
        weights_field="student",
    )


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
    fields = load_loop_state(
        path,
        format=FORMAT,
        key=key,
        model=student,
        optimizer=optimizer,
        generator=generator,
        device=device,
        weights_field="student",
        restart_if_unusable=restart_if_unusable,
        what="student state",
    )
    if fields is None:
        return TrainingProgress()
    return TrainingProgress(
        epoch=int(fields["epoch"]), history=list(fields["history"]), steps=int(fields["steps"]), prefixes=int(fields["prefixes"])
    )
