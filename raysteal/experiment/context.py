"""The simulator's side of an experiment: data, the deployed target, and the ground truth.

Everything here is privileged (the simulator knows the target); attacks never see it. Workers
receive a :class:`RunData` (data and the target's true top-K lists, computed once per target)
and a query client — never the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from raysteal.data import load_dataset, load_file, split_target_auxiliary
from raysteal.data.interactions import Interactions
from raysteal.data.splits import HEAD_FRACTION, LeaveOneOut, head_tail_groups, leave_one_out
from raysteal.experiment.config import DatasetEntry, SplitConfig, TargetEntry


@dataclass
class DatasetContext:
    """A loaded dataset cut into the target half and the auxiliary half (``target_seed``)."""

    label: str
    target: Interactions
    auxiliary: Interactions
    loo: LeaveOneOut


def load_log(entry: DatasetEntry, data_dir: str | None = None) -> Interactions:
    """The dataset entry's whole log, loaded (or generated) and preprocessed."""
    if entry.path is not None:  # the user's own file (its label is the entry's name)
        return load_file(entry.path, entry.format, entry.preprocess, name=entry.name, kcore=entry.kcore, **entry.columns)
    return load_dataset(entry.name, data_dir=data_dir, preprocess=entry.preprocess, kcore=entry.kcore, **entry.options)


def prepare_dataset(entry: DatasetEntry, split: SplitConfig, data_dir: str | None = None) -> DatasetContext:
    """Load the entry's log and cut it into the target and auxiliary halves of ``split``."""
    return split_log(load_log(entry, data_dir), entry, split)


def split_log(log: Interactions, entry: DatasetEntry, split: SplitConfig) -> DatasetContext:
    """``log`` cut into the target half and the auxiliary half of ``split`` (seeded)."""
    if split.aux_fraction == 0:  # the whole log is the target's (data-free extraction needs no auxiliary half)
        empty = log.select_users(np.zeros(0, dtype=np.int64), name=f"{log.name}/auxiliary")
        return DatasetContext(label=entry.label, target=log, auxiliary=empty, loo=leave_one_out(log))
    halves = split_target_auxiliary(log, seed=split.target_seed, aux_fraction=split.aux_fraction, item_overlap=split.item_overlap)
    return DatasetContext(label=entry.label, target=halves.target, auxiliary=halves.auxiliary, loo=leave_one_out(halves.target))


def target_cache_labels(entry: DatasetEntry, split: SplitConfig) -> tuple[str, str]:
    """``(dataset, preprocess)`` labels of the target-cache key for this dataset and split."""
    if split.aux_fraction == 0:
        return f"{entry.name}/full", f"{entry.preprocess}/kcore={entry.kcore}/full"
    # the target half depends on the aux fraction and seed only (item overlap trims the aux side)
    return f"{entry.name}/target-half", f"{entry.preprocess}/kcore={entry.kcore}/aux={split.aux_fraction}/seed={split.target_seed}"


class AttackerLogs(Protocol):
    """The logs an attacker's knowledge is drawn from: a :class:`RunData`, or the preflight's
    view of a split before any target is trained."""

    @property
    def train(self) -> Interactions: ...

    @property
    def auxiliary(self) -> Interactions: ...


class EvaluationUsers(Protocol):
    """What a sequential run's known and scored users are drawn from: a :class:`SequentialRunData`,
    or the preflight's view of a split before any target is trained."""

    @property
    def train(self) -> Interactions: ...

    @property
    def eval_users(self) -> np.ndarray: ...


@dataclass
class RunData:
    """What a worker needs besides its query client: the attacker-available data and the
    evaluation truth (the target's undefended top-``max_k`` list for every target user)."""

    dataset: str
    target_name: str
    train: Interactions  # the target's training log (target users)
    test_items: np.ndarray  # held-out (leave-one-out test) item per target user, -1 if none
    auxiliary: Interactions
    truth_lists: np.ndarray  # int64 [num_target_users, max_k]
    target_metrics: dict[str, Any] = field(default_factory=dict)
    target_device: str = "cpu"


@dataclass
class SequentialRunData:
    """What a sequential-extraction worker needs besides its query client (simulator side).

    Evaluation follows Yue et al.: each evaluable user's history up to the held-out test item is
    the input; ``teacher_lists`` are the target's undefended top lists for those inputs (input
    items excluded, as the black box does). :meth:`head_mask` marks the longest ``head_fraction``
    of users by sequence length (BAHSD's head/tail groups; ``split.head_fraction`` of the run).
    """

    dataset: str
    target_name: str
    train: Interactions  # the target's training log (all its users)
    auxiliary: Interactions
    eval_users: np.ndarray  # int64 [U] target users with a held-out test item
    eval_sequences: np.ndarray  # int64 [U, max_len] history before the test item, left-padded
    test_items: np.ndarray  # int64 [U]
    teacher_lists: np.ndarray  # int64 [U, max_k]
    user_lengths: np.ndarray  # int64 [num target users] whole-sequence lengths (head / tail groups)
    item_popularity: np.ndarray  # int64 [num_items] training-log counts (the popularity floor)
    max_len: int
    target_metrics: dict[str, Any] = field(default_factory=dict)
    target_device: str = "cpu"

    def head_mask(self, head_fraction: float = HEAD_FRACTION) -> np.ndarray:
        """bool ``[U]``: the evaluation users among the ``head_fraction`` of all target users with
        the longest sequences (BAHSD's head group; :func:`raysteal.data.splits.head_tail_groups`)."""
        return head_tail_groups(self.user_lengths, head_fraction).is_head[self.eval_users]


def target_config(entry: TargetEntry) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, train config) of a target entry: the model's paper preset
    (:mod:`raysteal.training.presets`) overridden by the entry's ``params`` and ``train`` (epoch
    counts set there are taken as given, not scaled to the log)."""
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.training.presets import preset_with

    return preset_with(entry.model, entry.params, entry.train)
