"""The seam between attacks and the black box: what an attack may ask of its client.

An attack receives a :class:`BlackBoxClient` and nothing else of the target. The oracle's own
:class:`~raysteal.oracle.client.QueryClient` is one; so are the wrappers that keep its shape —
:class:`~raysteal.oracle.cache.CachingClient` (answers it already bought come from memory) and
the simulator's ``PatientClient`` (splits requests, waits out rate limits) — and any test double
that answers the same five things.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from raysteal.oracle.core import TargetInfo


class BlackBoxClient(Protocol):
    """Ranked answers for one attacker, charged against its budget.

    ``query(inputs, k)`` takes user ids (collaborative target) or item sequences (sequential
    target: ragged lists, or a left-padded array with -1) and returns ranked item ids,
    ``int64 [B, <=k]`` (a shorter answer ends in -1). No scores, no model.
    """

    def query(self, inputs: Any, k: int) -> np.ndarray:
        """The black box's top-``k`` for each input row; raises ``QueryBudgetExceeded`` (nothing
        charged), ``RateLimitExceeded``, or ``ConfigError`` for bad input."""
        ...

    @property
    def remaining_budget(self) -> int:
        """Queries left (-1 when unlimited)."""
        ...

    @property
    def spent(self) -> int:
        """Queries charged so far."""
        ...

    @property
    def num_items(self) -> int:
        """The catalogue's size."""
        ...

    @property
    def info(self) -> TargetInfo:
        """What an attacker may know of the black box: its shape, never its model."""
        ...


class ClientWrapper:
    """Base of the clients that wrap another and keep its shape (:class:`~raysteal.oracle.cache.CachingClient`,
    the simulator's ``PatientClient``): the black box's facts — budget left, queries charged,
    catalogue, public info — are the wrapped client's; a subclass overrides ``query``."""

    def __init__(self, client: BlackBoxClient):
        self.wrapped = client

    def query(self, inputs: Any, k: int) -> np.ndarray:
        return self.wrapped.query(inputs, k)

    @property
    def remaining_budget(self) -> int:
        return self.wrapped.remaining_budget

    @property
    def spent(self) -> int:
        return self.wrapped.spent

    @property
    def num_items(self) -> int:
        return self.wrapped.num_items

    @property
    def info(self) -> TargetInfo:
        return self.wrapped.info
