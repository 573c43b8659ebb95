"""An attacker's memory of the answers it already bought (the design: query counting, budget and
caching live in the oracle client; TextAttack's goal function caches its model queries).

:class:`CachingClient` wraps a :class:`~raysteal.oracle.protocol.BlackBoxClient`: the rows of a request
it has answered before (same input, same ``k``) come from memory and cost nothing; only the
others reach the black box, as one request, and are charged there. A cached answer is the first
one: an attacker re-asking a randomising defense (rank shuffle) keeps what it already holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raysteal.models.base import PAD
from raysteal.oracle.engine import checked_k, pad_sequences, user_ids
from raysteal.oracle.protocol import BlackBoxClient, ClientWrapper

_PASSED_ON = frozenset({"attacker_id", "num_users", "sequential"})


class CachingClient(ClientWrapper):
    """``query(inputs, k)`` as the wrapped client's, with repeated rows answered from memory.

    ``hits`` counts rows served from memory; ``spent`` and ``remaining_budget`` are the black
    box's (charged queries only). Inputs are checked as the black box checks them (integer ids,
    one dimension per user list / sequence) before any row is looked up.
    """

    def __init__(self, client: BlackBoxClient):
        super().__init__(client)
        self._memory: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self.hits = 0

    def query(self, inputs: Any, k: int) -> np.ndarray:
        keys, rows = self._keys(inputs, checked_k(k))  # a bad k is refused, never served from memory
        missing = [i for i, key in enumerate(keys) if key not in self._memory]
        first = {}  # a row asked twice in one request is bought once
        for i in missing:
            first.setdefault(keys[i], i)
        if first:
            asked = list(first.values())
            answers = np.asarray(self.wrapped.query(rows[asked], k))
            for i, answer in zip(asked, answers):
                self._memory[keys[i]] = answer
        self.hits += len(keys) - len(first)
        answers = [self._memory[key] for key in keys]
        width = max((len(a) for a in answers), default=0)
        out = np.full((len(answers), width), PAD, dtype=np.int64)
        for i, answer in enumerate(answers):
            out[i, : len(answer)] = answer
        return out

    def _keys(self, inputs: Any, k: int) -> tuple[list[tuple[int, tuple[int, ...]]], np.ndarray]:
        """One hashable key per row (``k`` and the row's ids) and the rows as the request to send."""
        if self.wrapped.info.sequential:
            rows = pad_sequences(inputs)
            return [(k, tuple(int(x) for x in row[row != PAD])) for row in rows], rows
        rows = user_ids(inputs)
        return [(k, (int(u),)) for u in rows], rows

    def __getattr__(self, name: str) -> Any:
        """The wrapped client's other read-only facts (attacker id, users, kind), where it has them."""
        if name in _PASSED_ON:
            return getattr(self.wrapped, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"CachingClient({self.wrapped!r}, {len(self._memory)} answers held, {self.hits} hits)"
