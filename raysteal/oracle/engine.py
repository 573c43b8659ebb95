"""The ranking engine: a target model turned into top-k answers (scores never leave it).

Collaborative targets are queried by user id; sequential targets by item sequence (left-padded
with ``PAD = -1``). Seen items are excluded: a user's training interactions, or the items already
in a query sequence (configurable).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.metrics.ranking import ranked_top
from raysteal.models.base import PAD, Recommender


def _int_ids(values: object, what: str) -> np.ndarray:
    """``values`` as an int64 array, refusing non-integer ids (float, bool, str, ragged) with a
    ``ConfigError`` naming ``what``; an empty input is fine (numpy reads ``[]`` as float)."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        raise ConfigError(f"{what} must be integer ids; got a ragged or nested input") from None
    if arr.size and arr.dtype.kind not in "iu":
        raise ConfigError(f"{what} must be integer ids, got dtype {arr.dtype} (convert ids with astype(int64) deliberately)")
    return arr.astype(np.int64, copy=False)


def user_ids(inputs: object) -> np.ndarray:
    """A collaborative request's user ids as ``int64 [B]`` (a bare id is a request of one);
    non-integer ids or more than one dimension raise ``ConfigError``."""
    arr = _int_ids(inputs, "user ids")
    if arr.ndim > 1:
        raise ConfigError(f"user ids must be a 1-d list of ids, got an array of shape {arr.shape}")
    return arr.reshape(-1)


def pad_sequences(sequences: Sequence[Sequence[int]] | np.ndarray, max_len: int | None = None) -> np.ndarray:
    """Ragged sequences (or an already padded 2-d array) → ``int64 [B, L]`` left-padded with PAD.

    Longer sequences keep their last ``max_len`` items. Non-integer ids, or a sequence of more
    than one dimension, raise ``ConfigError``.
    """
    if isinstance(sequences, np.ndarray) and sequences.ndim != 1:
        if sequences.ndim != 2:
            raise ConfigError(f"sequences must be a list of 1-d id sequences or a 2-d array, got shape {sequences.shape}")
        arr = _int_ids(sequences, "sequence items")
        return arr[:, -max_len:] if max_len and arr.shape[1] > max_len else arr
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__iter__"):
        raise ConfigError(f"sequences must be a list of item-id sequences, got {type(sequences).__name__}")
    seqs = []
    for row, s in enumerate(sequences):
        seq = _int_ids(s, f"sequence {row}")
        if seq.ndim > 1:
            raise ConfigError(f"sequence {row} must be a 1-d list of item ids, got shape {seq.shape}")
        seqs.append(seq.reshape(-1))  # a bare id is a sequence of one
    width = max((len(s) for s in seqs), default=0)
    if max_len:
        width = min(width, max_len)
    out = np.full((len(seqs), max(width, 1)), PAD, dtype=np.int64)
    for row, s in enumerate(seqs):  # building the request, not the hot path (one row per query)
        s = s[-width:] if width else s[:0]
        if len(s):
            out[row, out.shape[1] - len(s) :] = s
    return out


def checked_k(k: object) -> int:
    """``k`` as an int, or ``ConfigError`` unless it is an integer >= 1 (a bool is refused: ``True``
    is no list length, and ``int(2.5)`` would hide a bad one)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r} ({type(k).__name__})")
    return int(k)


DENSE_SEEN_LIMIT = 1 << 28
"""Largest users x items table kept as a dense seen-item mask (256 MiB of bools)."""


class RankingEngine:
    """Top-k of a target model for users or sequences, with seen items excluded.

    ``seen_indptr``/``seen_items`` (CSR over users) give each user's training items; required
    for collaborative targets when ``exclude_seen`` is true.
    """

    def __init__(
        self,
        model: Recommender,
        seen_indptr: np.ndarray | None = None,
        seen_items: np.ndarray | None = None,
        exclude_seen: bool = True,
        device: str | torch.device = "cpu",
        chunk_size: int = 8192,
    ):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.sequential = bool(model.sequential)
        self.num_items = int(model.num_items)
        self.num_users = int(model.num_users)
        self.exclude_seen = exclude_seen
        self.chunk_size = chunk_size
        self.max_len = int(getattr(model.config, "max_len", 0)) or None
        if not self.sequential and exclude_seen:
            if seen_indptr is None or seen_items is None:
                raise ConfigError("a collaborative target needs its training interactions (seen_indptr, seen_items) to exclude seen items")
            self._seen_indptr = torch.from_numpy(np.array(seen_indptr, dtype=np.int64))
            self._seen_items = torch.from_numpy(np.array(seen_items, dtype=np.int64))
            self._seen_dense = None
            if self.num_users * self.num_items <= DENSE_SEEN_LIMIT:
                # one bit-per-cell lookup table on the device: masks cost a gather, not a scatter
                dense = torch.zeros(self.num_users, self.num_items, dtype=torch.bool)
                users = torch.repeat_interleave(torch.arange(self.num_users), torch.diff(self._seen_indptr))
                dense[users, self._seen_items] = True
                self._seen_dense = dense.to(self.device)

    # ------------------------------------------------------------ validation
    def validate(self, inputs: np.ndarray, k: int) -> np.ndarray:
        """Check a request; returns the normalised int64 input array. Raises ``ConfigError``."""
        k = checked_k(k)
        if k > self.num_items:
            raise ConfigError(f"k={k} is larger than the catalogue ({self.num_items} items)")
        if self.sequential:
            arr = pad_sequences(inputs, self.max_len)
            if arr.shape[0] == 0:
                raise ConfigError("empty request: no sequences given")
            real = arr != PAD
            if not real.any(axis=1).all():
                bad = int(np.flatnonzero(~real.any(axis=1))[0])
                raise ConfigError(f"sequence {bad} of the request is empty")
            if (arr[real] < 0).any() or (arr[real] >= self.num_items).any():
                raise ConfigError(f"item ids must lie in [0, {self.num_items}); the request holds ids outside")
            return arr
        arr = user_ids(inputs)
        if arr.size == 0:
            raise ConfigError("empty request: no user ids given")
        if arr.min() < 0 or arr.max() >= self.num_users:
            bad = int(arr[(arr < 0) | (arr >= self.num_users)][0])
            raise ConfigError(f"unknown user id {bad}: the target knows users 0..{self.num_users - 1}")
        return arr

    # ------------------------------------------------------------ ranking
    def _exclusion_mask(self, inputs: torch.Tensor) -> torch.Tensor | None:
        if not self.exclude_seen:
            return None
        if not self.sequential and self._seen_dense is not None:
            return self._seen_dense[inputs.to(self.device)]
        rows = inputs.shape[0]
        mask = torch.zeros(rows, self.num_items, dtype=torch.bool)
        if self.sequential:
            valid = inputs != PAD
            r = torch.arange(rows).unsqueeze(1).expand_as(inputs)[valid]
            mask[r, inputs[valid]] = True
        else:
            starts, ends = self._seen_indptr[inputs], self._seen_indptr[inputs + 1]
            lengths = ends - starts
            r = torch.repeat_interleave(torch.arange(rows), lengths)
            offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
            mask[r, self._seen_items[torch.repeat_interleave(starts, lengths) + offsets]] = True
        return mask

    @torch.no_grad()
    def topk(self, inputs: np.ndarray, k: int) -> np.ndarray:
        """Ranked top-``k`` item ids ``int64 [B, k]`` for validated inputs (see ``validate``).

        Excluded (seen) items are never returned: a row with fewer than ``k`` candidates ends in
        ``-1`` (as ``raysteal.metrics.topk_items`` pads short rows)."""
        out = np.empty((len(inputs), k), dtype=np.int64)
        for start in range(0, len(inputs), self.chunk_size):
            chunk = torch.as_tensor(inputs[start : start + self.chunk_size])
            scores = self.model.score(chunk.to(self.device)).float()
            mask = self._exclusion_mask(chunk)
            if mask is not None:
                scores = scores.masked_fill(mask.to(self.device), float("-inf"))
            values, items = ranked_top(scores, k)  # equal scores: the lowest item id first
            items = items.masked_fill(values == float("-inf"), PAD)  # no candidate left at that rank
            out[start : start + len(chunk)] = items.cpu().numpy()
        return out
