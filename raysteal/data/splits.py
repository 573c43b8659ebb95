"""Splits of an interaction log: leave-one-out, user-disjoint target/auxiliary halves, the
attacker's share of target users, head/tail user groups (Zhu et al. §4, App. A.1; Kang &
McAuley 2018 for leave-one-out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysteal.data.interactions import Interactions

NO_ITEM = -1
"""Marker in ``valid``/``test`` for users too short to hold an item out."""


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
