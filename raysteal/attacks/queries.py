"""The query strategy: the only part of an attack that touches the black box.

Zhu et al. §4.3 / Alg. 1 line 15: the attacker asks the target for the top-K list of each user it
may query. Requests are big batches of user ids; the count comes from the client (its ledger),
never from here. A budget smaller than the number of users to query is respected by querying a
seeded random subset of exactly the remaining budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysteal.errors import ConfigError
from raysteal.oracle.errors import QueryBudgetExceeded
from raysteal.oracle.protocol import BlackBoxClient

REQUEST_SIZE = 65_536
"""Users per request (one request answers a whole ML-1M-sized attacker at once)."""


@dataclass(frozen=True)
class QueriedLists:
    """The target's answers: ``lists[r]`` (``int64 [K]``, ``-1`` padded) for known user ``users[r]``."""

    users: np.ndarray
    lists: np.ndarray
    queries: int


def query_top_k(
    client: BlackBoxClient | None,
    target_user_ids: np.ndarray,
    query_users: np.ndarray,
    k: int,
    rng: np.random.Generator,
    request_size: int = REQUEST_SIZE,
) -> QueriedLists:
    """Query the top-``k`` lists of ``query_users`` (indices into ``target_user_ids``).

    Returns the lists in ``query_users`` order (a subset when the budget is short); ``queries``
    is what the client charged for this call.
    """
    if client is None:
        raise ConfigError("this attack needs query access: pass a QueryClient")
    users = np.asarray(query_users, dtype=np.int64).ravel()
    ids = np.asarray(target_user_ids, dtype=np.int64)
    if users.size and (users.min() < 0 or users.max() >= ids.size):
        raise ConfigError(f"query_users must index the {ids.size} known users")
    remaining = client.remaining_budget
    if remaining == 0 and users.size:  # a clone trained on no answer is not this attack's result
        raise QueryBudgetExceeded(str(getattr(client, "attacker_id", "?")), users.size, 0)
    if 0 <= remaining < users.size:
        users = np.sort(rng.choice(users, size=remaining, replace=False))
    spent_before = client.spent
    lists = np.full((users.size, k), -1, dtype=np.int64)
    for start in range(0, users.size, request_size):
        chunk = users[start : start + request_size]
        answer = np.asarray(client.query(ids[chunk], k), dtype=np.int64)
        lists[start : start + chunk.size, : answer.shape[1]] = answer[:, :k]
    return QueriedLists(users=users, lists=lists, queries=int(client.spent - spent_before))
