"""The query client: the only thing an attack receives.

It carries the attacker's id, that attacker's account key (:mod:`raysteal.oracle.accounts`) and a
handle to a black box (a ``TargetServer`` actor, or an in-process oracle looked up by key in this
process), and exposes ranked answers only: no scores, no model, no weights. Its attributes and
its pickled bytes hold no tensors, and its key opens no account but its own.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from raysteal.errors import RaystealError
from raysteal.oracle.core import OracleCore, TargetInfo

_LOCAL_ORACLES: dict[str, OracleCore] = {}
"""In-process oracles by key; an entry lives until its ``InProcessOracle.close()``."""


def _unwrap_ray_error(err: Exception) -> Exception:
    """Ray wraps actor-side exceptions; hand the attacker the original (e.g. QueryBudgetExceeded)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, Exception) else err


class QueryClient:
    """Black-box access for one attacker: ``query(inputs, k)`` → ranked item ids ``int64 [B, <=k]``
    (the oracle's :class:`~raysteal.oracle.protocol.BlackBoxClient`).

    ``inputs`` are user ids (collaborative target) or item sequences (sequential target; ragged
    lists or a left-padded array with -1). Raises ``QueryBudgetExceeded`` (nothing answered or
    charged), ``RateLimitExceeded``, or ``ConfigError`` for bad input.
    """

    __slots__ = ("attacker_id", "_account_key", "_local_key", "_actor", "info")

    def __init__(self, attacker_id: str, info: TargetInfo, account_key: str, local_key: str | None = None, actor: Any = None):
        if (local_key is None) == (actor is None):
            raise ValueError("a QueryClient needs exactly one of local_key or actor")
        self.attacker_id = attacker_id
        self.info = info
        self._account_key = account_key
        self._local_key = local_key
        self._actor = actor

    # -------------------------------------------------------------- queries
    def query(self, inputs: Any, k: int) -> np.ndarray:
        request_id = uuid.uuid4().hex
        if self._local_key is not None:
            return self._local().query(self.attacker_id, self._account_key, inputs, k, request_id)
        import ray  # the actor path only: an in-process client never loads Ray (heavy)
        from ray.exceptions import RayTaskError

        payload = inputs if isinstance(inputs, np.ndarray) else _as_payload(inputs, self.info.sequential)
        try:
            return ray.get(self._actor.query.remote(self.attacker_id, self._account_key, payload, _wire_k(k), request_id))
        except RayTaskError as err:
            raise _unwrap_ray_error(err) from None

    def query_async(self, inputs: Any, k: int) -> Any:
        """Actor clients only: an ``ObjectRef`` to the answer (for many requests in flight)."""
        if self._actor is None:
            raise RaystealError("query_async needs a client of a TargetServer actor")
        payload = inputs if isinstance(inputs, np.ndarray) else _as_payload(inputs, self.info.sequential)
        return self._actor.query.remote(self.attacker_id, self._account_key, payload, _wire_k(k), uuid.uuid4().hex)

    @property
    def remaining_budget(self) -> int:
        """Queries left (-1 when unlimited)."""
        return self._call("remaining")

    @property
    def spent(self) -> int:
        """Queries charged so far."""
        return self._call("spent")

    @property
    def num_items(self) -> int:
        return self.info.num_items

    @property
    def num_users(self) -> int:
        return self.info.num_users

    @property
    def sequential(self) -> bool:
        return self.info.sequential

    # -------------------------------------------------------------- plumbing
    def _local(self) -> OracleCore:
        oracle = None if self._local_key is None else _LOCAL_ORACLES.get(self._local_key)
        if oracle is None:
            raise RaystealError("this client's in-process oracle does not exist in this process (use a TargetServer across processes)")
        return oracle

    def _call(self, method: str) -> int:
        if self._local_key is not None:
            return getattr(self._local(), method)(self.attacker_id, self._account_key)
        import ray  # the actor path only, as in query()
        from ray.exceptions import RayTaskError

        try:
            return ray.get(getattr(self._actor, method).remote(self.attacker_id, self._account_key))
        except RayTaskError as err:
            raise _unwrap_ray_error(err) from None

    def __getstate__(self):
        return {
            "attacker_id": self.attacker_id,
            "info": self.info,
            "_account_key": self._account_key,
            "_local_key": self._local_key,
            "_actor": self._actor,
        }

    def __setstate__(self, state):
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        where = "in-process" if self._local_key else "actor"
        return f"QueryClient(attacker={self.attacker_id!r}, {where}, items={self.info.num_items})"


def _wire_k(k: Any) -> Any:
    """``k`` for the actor: numpy ints as ``int``, anything else as given (``int(2.5)`` would hide a bad k)."""
    return int(k) if isinstance(k, np.integer) else k


def _as_payload(inputs: Any, sequential: bool) -> Any:
    """Inputs as numpy for the wire, dtype and shape kept so the server validates (and refuses)
    what the caller sent: never cast here (a cast would truncate float ids unseen)."""
    try:
        if sequential:
            return [np.asarray(s) for s in inputs]
        return np.asarray(inputs)
    except (ValueError, TypeError):  # ragged or not iterable: the server's validation names the problem
        return inputs


class InProcessOracle:
    """The black box in this process (unit tests, single-process use); same API as the server."""

    def __init__(self, core: OracleCore):
        self._core = core
        self._key = uuid.uuid4().hex
        _LOCAL_ORACLES[self._key] = core

    @property
    def info(self) -> TargetInfo:
        return self._core.info

    def register_attacker(self, attacker: str, budget: int = -1) -> QueryClient:
        """Open an account and return the attacker's client."""
        key = self._core.register(attacker, budget)
        return QueryClient(attacker, self._core.info, key, local_key=self._key)

    def query_log(self):
        return self._core.query_log()

    def ledger(self) -> dict:
        return self._core.ledger.snapshot()

    def close(self) -> None:
        """Retire this oracle: its clients stop answering and its memory can be freed."""
        _LOCAL_ORACLES.pop(self._key, None)
        self._core.close()
