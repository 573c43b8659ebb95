"""Splits of an interaction log: leave-one-out, user-disjoint target/auxiliary halves, the
attacker's share of target users, head/tail user groups (Zhu et al. §4, App. A.1; Kang &
McAuley 2018 for leave-one-out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError

NO_ITEM = -1
"""Marker in ``valid``/``test`` for users too short to hold an item out."""
HEAD_FRACTION = 0.2
"""BAHSD's head group: the longest-history 20% of users (the head/tail metrics)."""


@dataclass(frozen=True, eq=False)
class LeaveOneOut:
    """Leave-one-out split: each user's last item is ``test``, the second-last ``valid``.

    ``train`` keeps every other row (same id spaces). Users with fewer than 3 interactions
    keep all rows in ``train`` and get ``NO_ITEM`` in ``valid`` and ``test``.
    """

    train: Interactions
    valid: np.ndarray
    test: np.ndarray

    @property
    def evaluable_users(self) -> np.ndarray:
        """Users that have a held-out test item."""
        return np.flatnonzero(self.test != NO_ITEM)


def leave_one_out(log: Interactions) -> LeaveOneOut:
    """Hold out each user's last item (test) and second-last item (valid); vectorised."""
    lengths = log.user_lengths
    ends = log.indptr[1:]
    held = lengths >= 3
    test = np.full(log.num_users, NO_ITEM, dtype=np.int64)
    valid = np.full(log.num_users, NO_ITEM, dtype=np.int64)
    test[held] = log.items[ends[held] - 1]
    valid[held] = log.items[ends[held] - 2]
    keep = np.ones(log.num_interactions, dtype=bool)
    keep[ends[held] - 1] = False
    keep[ends[held] - 2] = False
    return LeaveOneOut(train=log.select_rows(keep, name=f"{log.name}/train"), valid=valid, test=test)


def whole_log(log: Interactions) -> LeaveOneOut:
    """Every interaction trains (Zhu et al.'s target: "the target dataset" whole); ``valid`` and
    ``test`` name each user's second-last and last items as :func:`leave_one_out` does, but they
    stay in ``train``, so figures measured on them are fit, not held-out accuracy."""
    held = leave_one_out(log)
    return LeaveOneOut(train=log, valid=held.valid, test=held.test)


def with_validation_items(split: LeaveOneOut) -> LeaveOneOut:
    """``split`` with each user's validation item moved into ``train`` (after the user's other
    rows) and none left to validate on; ``test`` unchanged. What a model refit for the epochs
    validation chose trains on (:attr:`raysteal.training.TrainConfig.refit`)."""
    train = split.train
    held = np.flatnonzero(split.valid != NO_ITEM)
    ends = train.indptr[1:][held]
    trained = ends > train.indptr[:-1][held]  # users with a training row: is their last one the test item?
    if held.size and trained.all() and np.array_equal(train.items[ends - 1], split.test[held]):
        raise ConfigError("the split already trains on its held-out items (whole_log?): there are no validation items to add")
    users = np.concatenate([train.users, held])
    items = np.concatenate([train.items, split.valid[held]])
    order = np.argsort(users, kind="stable")  # each user's validation item after their training rows
    log = Interactions(
        users[order],
        items[order],
        train.num_users,
        train.num_items,
        name=f"{train.name}+valid",
        user_labels=train.user_labels,
        item_labels=train.item_labels,
    )
    return LeaveOneOut(train=log, valid=np.full_like(split.valid, NO_ITEM), test=split.test.copy())


# ---------------------------------------------------------------------------------------------
# Target / auxiliary halves, the attacker's share, head / tail groups (Zhu et al. §5, App. A.1)
# ---------------------------------------------------------------------------------------------
def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclass(frozen=True, eq=False)
class TargetAuxiliarySplit:
    """User-disjoint target and auxiliary logs over one shared item space (Zhu et al. §5).

    ``target_users`` / ``auxiliary_users`` map each side's dense user ids back to the full
    log's ids. ``overlap_items`` (bool ``[num_items]``) marks items that have interactions on
    both sides: the auxiliary item knowledge the attacker can align with the target's items.
    """

    target: Interactions
    auxiliary: Interactions
    target_users: np.ndarray
    auxiliary_users: np.ndarray
    overlap_items: np.ndarray

    @property
    def item_overlap_ratio(self) -> float:
        """Share of the target's items that also occur in the auxiliary data (Zhu et al. Fig. 5)."""
        in_target = self.target.item_counts > 0
        return float(self.overlap_items.sum() / max(int(in_target.sum()), 1))


def split_target_auxiliary(
    log: Interactions,
    seed: int | np.random.Generator = 0,
    aux_fraction: float = 0.5,
    item_overlap: float = 1.0,
) -> TargetAuxiliarySplit:
    """Split ``log`` by users into target and auxiliary data (Zhu et al. §5: "we randomly split
    each dataset evenly into two disjoint subsets ... no common user, but common items").

    ``aux_fraction`` of the users (chosen uniformly, seeded) form the auxiliary side; both sides
    keep the full item id space. ``item_overlap`` in (0, 1] reproduces Fig. 5 ("overlap ratio
    between items in the auxiliary data and target data"): of the items present on both sides,
    a seeded ``1 - item_overlap`` share is dropped *from the auxiliary side* (all auxiliary rows
    on those items are removed), so the auxiliary data covers about ``item_overlap`` of the
    target's items. Auxiliary users left with no rows are removed. Within each side users keep
    their relative order.
    """
    if not 0.0 < aux_fraction < 1.0:
        raise ConfigError(f"aux_fraction must lie in (0, 1), got {aux_fraction}")
    if not 0.0 < item_overlap <= 1.0:
        raise ConfigError(f"item_overlap must lie in (0, 1], got {item_overlap}")
    if log.num_users < 2:
        raise ConfigError("need at least 2 users to split into target and auxiliary data")
    rng = _rng(seed)
    n_aux = min(max(int(round(aux_fraction * log.num_users)), 1), log.num_users - 1)
    perm = rng.permutation(log.num_users)
    aux_users = np.sort(perm[:n_aux])
    target_users = np.sort(perm[n_aux:])
    target = log.select_users(target_users, name=f"{log.name}/target")
    auxiliary = log.select_users(aux_users, name=f"{log.name}/auxiliary")

    shared = (target.item_counts > 0) & (auxiliary.item_counts > 0)
    if item_overlap < 1.0:
        candidates = np.flatnonzero(shared)
        n_drop = int(round((1.0 - item_overlap) * candidates.size))
        dropped = np.zeros(log.num_items, dtype=bool)
        dropped[rng.choice(candidates, size=n_drop, replace=False)] = True
        auxiliary = auxiliary.select_rows(~dropped[auxiliary.items])
        nonempty = np.flatnonzero(auxiliary.user_lengths > 0)
        if nonempty.size < auxiliary.num_users:
            auxiliary = auxiliary.select_users(nonempty)
            aux_users = aux_users[nonempty]
        shared = (target.item_counts > 0) & (auxiliary.item_counts > 0)
    return TargetAuxiliarySplit(target, auxiliary, target_users, aux_users, shared)


def attacker_users(log: Interactions, fraction: float = 0.1, seed: int | np.random.Generator = 0) -> np.ndarray:
    """The users whose data the attacker holds: a seeded uniform ``fraction`` of ``log``'s users
    (Zhu et al. App. A.1: "the attacker has access to 10% of the target dataset"), at least one,
    returned sorted ascending (pass to ``log.select_users``)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"attacker fraction must lie in (0, 1], got {fraction}")
    if log.num_users < 1:
        raise ConfigError("the log has no users")
    n = min(max(int(round(fraction * log.num_users)), 1), log.num_users)
    return np.sort(_rng(seed).choice(log.num_users, size=n, replace=False))


def sampled_interactions(log: Interactions, fraction: float, seed: int | np.random.Generator = 0) -> tuple[Interactions, np.ndarray]:
    """A seeded uniform ``fraction`` of ``log``'s interactions (at least one; each user's kept rows
    in their order): ``(the kept rows over the users holding any of them, re-indexed; those users'
    ids in ``log``, ascending)``. The other reading of Zhu et al.'s "10% of the target dataset"."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"attacker fraction must lie in (0, 1], got {fraction}")
    if log.num_interactions < 1:
        raise ConfigError("the log has no interactions")
    n = min(max(int(round(fraction * log.num_interactions)), 1), log.num_interactions)
    keep = np.zeros(log.num_interactions, dtype=bool)
    keep[_rng(seed).choice(log.num_interactions, size=n, replace=False)] = True
    kept = log.select_rows(keep)
    users = np.flatnonzero(kept.user_lengths > 0)
    return kept.select_users(users, name=f"{log.name}/sampled"), users


@dataclass(frozen=True, eq=False)
class HeadTailGroups:
    """Users split by activity: ``head`` = the most active ``head_fraction``, ``tail`` = the rest."""

    head: np.ndarray
    tail: np.ndarray
    is_head: np.ndarray
    threshold: int
    """Shortest sequence length in the head group."""


def head_tail_groups(log: Interactions | np.ndarray, head_fraction: float = HEAD_FRACTION) -> HeadTailGroups:
    """Head users = the ``head_fraction`` of users with the longest sequences (ties broken by
    lower user id, so the groups are deterministic and partition the users); tail = the rest.

    ``log`` may be an :class:`Interactions` or a per-user length array.
    """
    if not 0.0 < head_fraction < 1.0:
        raise ConfigError(f"head_fraction must lie in (0, 1), got {head_fraction}")
    # signed: negating an unsigned array wraps (np.argsort(-lengths) would put the shortest first)
    lengths = np.asarray(log.user_lengths if isinstance(log, Interactions) else log, dtype=np.int64)
    n_users = lengths.size
    if n_users < 2:
        raise ConfigError("need at least 2 users to form head and tail groups")
    n_head = min(max(int(round(head_fraction * n_users)), 1), n_users - 1)
    order = np.argsort(-lengths, kind="stable")
    is_head = np.zeros(n_users, dtype=bool)
    is_head[order[:n_head]] = True
    return HeadTailGroups(
        head=np.flatnonzero(is_head),
        tail=np.flatnonzero(~is_head),
        is_head=is_head,
        threshold=int(lengths[order[n_head - 1]]),
    )
