"""Benign traffic for ``raysteal simulate``: real users' histories replayed through the black box.

Each benign account is one real user (``benign-<i>``). A sequential target is asked, after each of
the user's last ``queries`` interactions, for recommendations on the history up to it (the
server's window: its last ``max_len`` items), oldest first, one query a request, ``1 / rate``
seconds apart from a random start; a collaborative target is asked for the user's own id each
time. Whose histories: ``source: auxiliary`` replays users held out of the target's training (the
split's user-disjoint half), ``source: target`` the target's own users. A driver task sends the
requests at their scheduled times without waiting for answers (an open-loop load).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from raysteal.errors import RaystealError
from raysteal.experiment.simulate_config import BenignTraffic

PREFIX = "benign-"
"""Benign account names: ``benign-<i>`` (zero-padded)."""


@dataclass(frozen=True)
class BenignAccount:
    """One replayed user: its account name, the user it replays and the inputs it sends, in order."""

    account: str
    user: int
    inputs: list[np.ndarray]


def replay_inputs(sequence: np.ndarray, queries: int, max_len: int | None) -> list[np.ndarray]:
    """The inputs a real user with ``sequence`` sends: its history up to each of its last
    ``queries`` interactions, oldest first, each cut to the server's window ``max_len``."""
    sequence = np.asarray(sequence, dtype=np.int64)
    ends = range(max(1, len(sequence) - int(queries) + 1), len(sequence) + 1)
    return [sequence[max(0, end - max_len) if max_len else 0 : end] for end in ends]


def benign_accounts(data, traffic: BenignTraffic, sequential: bool, max_len: int | None) -> list[BenignAccount]:
    """The benign accounts of a simulation (users drawn with ``traffic.seed``); ``RaystealError``
    when the chosen source holds fewer users than ``traffic.accounts``."""
    if not sequential and traffic.source == "auxiliary":
        raise RaystealError(
            "simulation.benign.source: auxiliary users are unknown to a collaborative target (it answers its "
            "own user ids only); use source: target"
        )
    log = data.auxiliary if traffic.source == "auxiliary" else data.train
    lengths = log.user_lengths
    pool = np.flatnonzero(lengths >= (2 if sequential else 1))
    if len(pool) < traffic.accounts:
        hint = " (split.aux_fraction 0 leaves none; use source: target)" if traffic.source == "auxiliary" and len(pool) == 0 else ""
        raise RaystealError(
            f"simulation.benign.accounts: {traffic.accounts} accounts, but the {traffic.source} users hold only "
            f"{len(pool)} histories to replay{hint}"
        )
    rng = np.random.default_rng(traffic.seed)
    users = np.sort(rng.choice(pool, size=traffic.accounts, replace=False))
    width = len(str(traffic.accounts - 1))
    out = []
    for i, user in enumerate(users):
        if sequential:
            inputs = replay_inputs(log.sequence(int(user)), traffic.queries, max_len)
        else:
            inputs = [np.array([int(user)], dtype=np.int64)] * traffic.queries
        out.append(BenignAccount(f"{PREFIX}{i:0{width}d}", int(user), inputs))
    return out


def schedule(accounts: list[BenignAccount], rate: float, seed: int) -> list[tuple[float, int, int]]:
    """``(seconds from start, account index, query index)`` of every benign query, in time order:
    account ``a``'s queries ``1 / rate`` apart from a start drawn uniformly in ``[0, 1 / rate)``."""
    rng = np.random.default_rng(seed)
    gap = 1.0 / float(rate)
    starts = rng.uniform(0.0, gap, size=len(accounts))
    events = [(float(starts[a] + q * gap), a, q) for a, acct in enumerate(accounts) for q in range(len(acct.inputs))]
    return sorted(events)


def drive(clients: list, accounts: list[BenignAccount], events: list[tuple[float, int, int]], k: int) -> dict:
    """Ray task body: send each event's query at its time (``query_async``, open loop), then wait
    for every answer. Returns requests sent, failures, the span and how late the last send was."""
    import ray

    started = time.monotonic()
    pending, failed, late = [], 0, 0.0
    for offset, a, q in events:
        delay = started + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
        pending.append(clients[a].query_async([accounts[a].inputs[q]], k))
        if len(pending) >= 512:  # keep the in-flight list short
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            failed += _failures(done)
    failed += _failures(pending)
    return {"requests": len(events), "failed": failed, "span_s": time.monotonic() - started, "max_lag_s": late}


def _failures(refs: list) -> int:
    import ray

    failed = 0
    for ref in refs:
        try:
            ray.get(ref)
        except Exception:  # a refused or failed request: the server logged it
            failed += 1
    return failed
