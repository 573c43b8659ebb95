"""The in-memory interaction log every other layer consumes.

Users and items are dense ``int64`` ids (``0..num_users-1``, ``0..num_items-1``); rows are
grouped by user (users ascending) and each user's rows are in chronological order, so a
user's sequence is one contiguous slice (CSR layout, ``indptr``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from raysteal.errors import ConfigError


@dataclass(frozen=True, eq=False)
class Interactions:
    """An implicit-feedback log in CSR order (see module docstring).

    ``user_labels`` / ``item_labels`` hold the original ids (strings or ints) of dense id ``i``
    at position ``i`` when the log came from a file; ``timestamps`` is optional.
    """

    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int
    name: str = "interactions"
    timestamps: np.ndarray | None = None
    user_labels: np.ndarray | None = None
    item_labels: np.ndarray | None = None
    _indptr: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        users = np.ascontiguousarray(self.users, dtype=np.int64)
        items = np.ascontiguousarray(self.items, dtype=np.int64)
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "items", items)
        if users.shape != items.shape or users.ndim != 1:
            raise ConfigError("users and items must be 1-d arrays of equal length")
        if users.size:
            if users.min() < 0 or users.max() >= self.num_users:
                raise ConfigError(f"user ids must lie in [0, {self.num_users})")
            if items.min() < 0 or items.max() >= self.num_items:
                raise ConfigError(f"item ids must lie in [0, {self.num_items})")
            if np.any(np.diff(users) < 0):
                raise ConfigError("rows must be grouped by user, users ascending")
        if self.timestamps is not None and len(self.timestamps) != len(users):
            raise ConfigError("timestamps must have one entry per row")

    # ----------------------------------------------------------------- shape
    @property
    def num_interactions(self) -> int:
        return int(self.users.size)

    @cached_property
    def indptr(self) -> np.ndarray:
        """CSR row pointer: user ``u``'s rows are ``indptr[u]:indptr[u+1]``."""
        if self._indptr is not None:
            return self._indptr
        counts = np.bincount(self.users, minlength=self.num_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @cached_property
    def user_lengths(self) -> np.ndarray:
        """Interactions per user (sequence length), shape ``[num_users]``."""
        return np.diff(self.indptr)

    @cached_property
    def item_counts(self) -> np.ndarray:
        """Interactions per item (popularity), shape ``[num_items]``."""
        return np.bincount(self.items, minlength=self.num_items)

    @property
    def density(self) -> float:
        cells = self.num_users * self.num_items
        return self.num_interactions / cells if cells else 0.0

    def sequence(self, user: int) -> np.ndarray:
        """User ``user``'s items in chronological order."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def padded_sequences(self, max_len: int, users: np.ndarray | None = None, pad: int = -1) -> np.ndarray:
        """The last ``max_len`` items of each user's sequence, left-padded with ``pad``.

        Returns ``int64 [len(users), max_len]``; vectorised (no per-user loop).
        """
        if max_len < 1:
            raise ConfigError("max_len must be >= 1")
        users = np.arange(self.num_users) if users is None else np.asarray(users, dtype=np.int64)
        ends = self.indptr[users + 1]
        lengths = np.minimum(ends - self.indptr[users], max_len)
        out = np.full((len(users), max_len), pad, dtype=np.int64)
        cols = np.arange(max_len)[None, :]
        valid = cols >= (max_len - lengths)[:, None]
        src = ends[:, None] - (max_len - cols)
        out[valid] = self.items[src[valid]]
        return out

    # ------------------------------------------------------------ subsetting
    def select_users(self, users: np.ndarray, name: str | None = None) -> Interactions:
        """A new log holding only ``users`` (re-indexed densely in the given order); items keep their ids."""
        users = np.asarray(users, dtype=np.int64)
        lengths = self.user_lengths[users]
        starts = self.indptr[users]
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        new_users = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
        return Interactions(
            users=new_users,
            items=self.items[rows],
            num_users=len(users),
            num_items=self.num_items,
            name=name or self.name,
            timestamps=None if self.timestamps is None else self.timestamps[rows],
            user_labels=None if self.user_labels is None else self.user_labels[users],
            item_labels=self.item_labels,
        )

    def select_rows(self, mask: np.ndarray, name: str | None = None) -> Interactions:
        """A new log keeping rows where ``mask`` is true; ids and id spaces unchanged."""
        return Interactions(
            users=self.users[mask],
            items=self.items[mask],
            num_users=self.num_users,
            num_items=self.num_items,
            name=name or self.name,
            timestamps=None if self.timestamps is None else self.timestamps[mask],
            user_labels=self.user_labels,
            item_labels=self.item_labels,
        )

    def fingerprint(self) -> str:
        """A short content hash (ids and shape), used to key checkpoints and caches."""
        h = hashlib.sha256()
        h.update(np.array([self.num_users, self.num_items], dtype=np.int64).tobytes())
        h.update(self.users.tobytes())
        h.update(self.items.tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """Counts, density and activity quantiles (what ``raysteal data info`` prints)."""
        lengths = self.user_lengths
        counts = self.item_counts
        q = [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "density": self.density,
            "user_activity_quantiles": {str(k): float(v) for k, v in zip(q, np.quantile(lengths, q))} if lengths.size else {},
            "item_popularity_quantiles": {str(k): float(v) for k, v in zip(q, np.quantile(counts, q))} if counts.size else {},
        }
