"""Shared types of black-box sequential extraction (Yue et al. 2021; BAHSD).

The attacker holds sequences (synthetic or real) and the black box's top-k answer for their
prefixes; a student is trained on them by an objective. These types are the contract between
synthesis / probing (what was queried), the student training loop, and the objectives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


@dataclass
class SequenceKnowledge:
    """What a sequential attacker holds besides its query client.

    ``sequences``: the attacker's real interaction sequences (``int64 [N, L]``, left-padded with
    ``PAD = -1``) or ``None`` for a data-free attacker; ``auxiliary``: user-disjoint auxiliary
    sequences (same layout) or ``None``.
    """

    num_items: int
    max_len: int
    sequences: np.ndarray | None = None
    auxiliary: np.ndarray | None = None


@dataclass
class ExtractionSet:
    """Sequences and the black box's answer for their prefixes.

    ``lists[n, t]`` is the ranked top-k answer for the prefix ``sequences[n, :t + 1]``; rows of
    padding columns and of prefixes that were not queried are all ``-1`` (a shorter answer is
    right-padded with ``-1``). ``extras`` holds per-sequence side information whose first axis
    is ``N`` (e.g. BAHSD's reliability ``[N, L]`` or probe lists ``[N, L, views, k]``).
    """

    sequences: np.ndarray  # int64 [N, L]
    lists: np.ndarray  # int32 [N, L, k]
    queries: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def queried(self) -> np.ndarray:
        """``bool [N, L]``: which prefixes have an answer."""
        return self.lists[..., 0] >= 0

    @property
    def num_sequences(self) -> int:
        return int(self.sequences.shape[0])


@dataclass
class StudentBatch:
    """One training batch of the student loop, all tensors on the training device.

    ``rows``/``cols`` index the queried prefixes the loss uses (``rows`` into this batch,
    ``cols`` into the sequence axis); ``lists`` and ``negatives`` are aligned with them.
    ``extras`` are ``ExtractionSet.extras`` sliced by ``sequence_ids`` (first axis = batch).
    """

    sequence_ids: torch.Tensor  # int64 [B] rows of the ExtractionSet
    inputs: torch.Tensor  # int64 [B, L] public item ids, PAD = -1
    rows: torch.Tensor  # int64 [P]
    cols: torch.Tensor  # int64 [P]
    lists: torch.Tensor  # int64 [P, k], -1 where an answer is shorter than k
    negatives: torch.Tensor  # int64 [P, n_neg] uniform items outside the list
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class StudentObjective(Protocol):
    """A training objective: ``(student, batch) -> (loss, {name: float})`` for logging."""

    def __call__(self, student, batch: StudentBatch) -> tuple[torch.Tensor, dict[str, float]]: ...
