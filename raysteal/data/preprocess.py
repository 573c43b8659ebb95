"""From a canonical table of raw interactions to an :class:`Interactions` log.

Steps, in this order, all vectorised (numpy / Arrow):

1. **Dense ids.** Users and items get ids ``0..n-1`` in *ascending order of their original
   id* (numeric order for integer ids, lexicographic for string ids); the original ids are kept
   in ``user_labels`` / ``item_labels``.
2. **Chronological order.** Rows are grouped by user; within a user they are sorted by
   ``timestamp`` when the table has one, with a *stable* sort so ties (and files without
   timestamps) keep file order.
3. **Dedupe** (optional): keep the first (earliest) occurrence of each (user, item) pair.
4. **Iterative k-core** (optional): repeatedly drop users and items with fewer than ``k``
   interactions until every remaining user and item has at least ``k``.
5. Ids are compacted again so dropped users/items leave no gaps (order preserved).

Recipes are named by :class:`Preprocess` specs: ``"none"``, ``"dedupe"``, ``"kcore5"``,
``"dedupe+kcore10"`` (the paper's Ta-feng recipe, Zhu et al. App. A.1), ...; the dataset
registry also resolves ``"paper"`` to each dataset's recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as _compute

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError, DataFileError

# pyarrow.compute makes most of its kernels (equal, sort_indices, ...) at import time, so a type
# checker does not see them: the module is typed Any here.
pc: Any = _compute

_KCORE = re.compile(r"^(?:kcore|k)(\d+)$|^(\d+)-?core$")


@dataclass(frozen=True)
class Preprocess:
    """A preprocessing recipe: ``dedupe`` then iterative ``kcore`` (0 or 1 = no filtering)."""

    dedupe: bool = False
    kcore: int = 0

    def __post_init__(self) -> None:
        if self.kcore < 0:
            raise ConfigError(f"preprocess: kcore must be >= 0, got {self.kcore}")

    @property
    def name(self) -> str:
        """Canonical spelling, e.g. ``"none"``, ``"dedupe"``, ``"kcore5"``, ``"dedupe+kcore10"``."""
        parts = (["dedupe"] if self.dedupe else []) + ([f"kcore{self.kcore}"] if self.kcore > 1 else [])
        return "+".join(parts) or "none"

    @classmethod
    def parse(cls, spec: str | Preprocess | None) -> Preprocess:
        """Parse ``"none"``, ``"dedupe"``, ``"kcoreN"`` (also ``"N-core"``), joined by ``+``."""
        if spec is None:
            return cls()
        if isinstance(spec, Preprocess):
            return spec
        dedupe, kcore = False, 0
        for part in str(spec).lower().replace(" ", "").split("+"):
            if part in ("", "none", "raw"):
                continue
            if part == "dedupe":
                dedupe = True
                continue
            m = _KCORE.match(part)
            if m is None:
                raise ConfigError(f"unknown preprocess step {part!r} in {spec!r}; use none, dedupe, kcoreN or paper, joined by '+'")
            kcore = int(m.group(1) or m.group(2))
        return cls(dedupe=dedupe, kcore=kcore)

    def with_kcore(self, k: int | None) -> Preprocess:
        """This recipe with its k-core threshold replaced by ``k`` (``None`` keeps it)."""
        return self if k is None else Preprocess(dedupe=self.dedupe, kcore=int(k))


def encode_ids(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``int64`` codes in ascending order of the original ids, and the sorted originals.

    Hash-based (Arrow ``dictionary_encode``) so it stays fast for string ids.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise DataFileError("missing ids in the interaction table")
    encoded = pc.dictionary_encode(arr)
    dictionary = encoded.dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size, dtype=order.dtype)
    codes = rank[encoded.indices.to_numpy().astype(np.int64, copy=False)].astype(np.int64, copy=False)
    labels = dictionary.to_numpy(zero_copy_only=False)[order]
    return codes, labels


def first_occurrence_mask(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """``True`` on the first row of each distinct (user, item) pair (rows in the given order)."""
    key = users.astype(np.int64) * np.int64(max(num_items, 1)) + items
    _, first = np.unique(key, return_index=True)  # stable: index of the first occurrence
    mask = np.zeros(users.size, dtype=bool)
    mask[first] = True
    return mask


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Rows kept by the iterative k-core: every kept user and item has >= ``k`` kept rows.

    Repeats a bincount pass over the surviving rows until nothing changes (the k-core is the
    unique fixed point, so the order of removals does not matter).
    """
    keep = np.ones(users.size, dtype=bool) if mask is None else mask.copy()
    if k <= 1:
        return keep
    num_users = int(users.max()) + 1 if users.size else 0
    num_items = int(items.max()) + 1 if items.size else 0
    rows = np.flatnonzero(keep)
    while True:
        u, i = users[rows], items[rows]
        ok = (np.bincount(u, minlength=num_users)[u] >= k) & (np.bincount(i, minlength=num_items)[i] >= k)
        if ok.all():
            break
        rows = rows[ok]
    out = np.zeros(users.size, dtype=bool)
    out[rows] = True
    return out


def _compact(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Remap used ids to ``0..m-1`` preserving order; returns (new ids, kept old ids, m)."""
    used = np.bincount(ids, minlength=n) > 0
    new_of_old = np.cumsum(used) - 1
    kept = np.flatnonzero(used)
    return new_of_old[ids], kept, int(kept.size)


def build_interactions(table: pa.Table, name: str, preprocess: str | Preprocess | None = None) -> Interactions:
    """Turn a canonical table (``user``, ``item``, optional ``timestamp``) into an :class:`Interactions`
    log, applying ``preprocess`` (see module docstring for the exact steps)."""
    recipe = Preprocess.parse(preprocess)
    for col in ("user", "item"):
        if col not in table.column_names:
            raise DataFileError(f"{name}: the interaction table has no {col!r} column")
    if table.num_rows == 0:
        raise DataFileError(f"{name}: no interactions")
    users, user_labels = encode_ids(table.column("user"))
    items, item_labels = encode_ids(table.column("item"))
    ts = None
    if "timestamp" in table.column_names:
        ts = table.column("timestamp").to_numpy()
        order = np.lexsort((ts, users))  # stable: ties keep file order
    else:
        order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    ts = None if ts is None else ts[order]

    keep = first_occurrence_mask(users, items, len(item_labels)) if recipe.dedupe else None
    if recipe.kcore > 1:
        keep = kcore_mask(users, items, recipe.kcore, keep)
    if keep is not None and not keep.all():
        users, items = users[keep], items[keep]
        ts = None if ts is None else ts[keep]
    if users.size == 0:
        raise DataFileError(f"{name}: no interactions left after preprocessing {recipe.name!r}")
    users, kept_users, num_users = _compact(users, len(user_labels))
    items, kept_items, num_items = _compact(items, len(item_labels))
    return Interactions(
        users=users,
        items=items,
        num_users=num_users,
        num_items=num_items,
        name=name,
        timestamps=ts,
        user_labels=user_labels[kept_users],
        item_labels=item_labels[kept_items],
    )
