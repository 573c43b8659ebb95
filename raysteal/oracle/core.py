"""The oracle core: validation, admission (rate limit, budget), ranking, defenses and logging.

Used as is by the in-process oracle and by the ``TargetServer`` actor, so both behave the same.
One query = one user id or one sequence; a request is a batch of queries from one attacker.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from raysteal.errors import RaystealError
from raysteal.oracle.accounts import AccountKeys
from raysteal.oracle.defenses import DefenseChain
from raysteal.oracle.engine import RankingEngine
from raysteal.oracle.ledger import UNLIMITED, BudgetLedger, session_charges
from raysteal.oracle.querylog import QueryLog, journal_name, new_session


@dataclass(frozen=True)
class TargetInfo:
    """What an attacker may know about the black box: its shape, never its model."""

    num_users: int
    num_items: int
    sequential: bool
    max_len: int | None
    defense: str


def _request_size(inputs: object) -> int:
    """How many queries a (possibly malformed) request holds, for the log; 0 if it has no length."""
    try:
        return len(inputs)  # type: ignore[arg-type]
    except TypeError:  # a scalar or a 0-d array
        return 0


def logged_k(k: object) -> int:
    """``k`` as the log records it: the int asked for, or -1 when it is not one (a bool included)."""
    return int(k) if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else -1


def request_digest(inputs: np.ndarray, k: int) -> str:
    """A digest of a validated request (its int64 inputs, their shape, and ``k``): a retried
    request after a server restart must be the very request that was charged."""
    arr = np.ascontiguousarray(inputs, dtype=np.int64)
    digest = hashlib.blake2b(np.asarray(arr.shape + (int(k),), dtype=np.int64).tobytes(), digest_size=16)
    digest.update(arr.tobytes())
    return digest.hexdigest()


class OracleCore:
    """Everything a black box does, minus transport. Thread-safe.

    With a ``state_dir`` the ledger and the query log are journaled there; ``session`` (one per
    server start, the same across its restarts) names this start's log, which a restart replays.
    """

    def __init__(
        self,
        engine: RankingEngine,
        defenses: DefenseChain | None = None,
        state_dir: str | Path | None = None,
        seed: int = 0,
        secret: bytes | None = None,
        session: str | None = None,
    ):
        self.engine = engine
        self.accounts = AccountKeys(secret)
        self.defenses = defenses or DefenseChain()
        self._rng = np.random.default_rng(seed)
        self.info = TargetInfo(
            num_users=engine.num_users,
            num_items=engine.num_items,
            sequential=engine.sequential,
            max_len=engine.max_len,
            defense=self.defenses.describe(),
        )
        self.session = session or new_session()
        ledger_path = Path(state_dir) / "ledger.jsonl" if state_dir else None
        self.ledger = BudgetLedger(ledger_path, session=self.session)
        self.log = QueryLog(Path(state_dir) / journal_name(self.session) if state_dir else None, self.session, self.info.defense)
        if ledger_path is not None:  # charges a crash kept from the log (after a restart)
            self.log.reconcile(session_charges(ledger_path, self.session))

    def register(self, attacker: str, budget: int = UNLIMITED) -> str:
        """Open (or confirm) ``attacker``'s account; returns its key (:mod:`raysteal.oracle.accounts`)."""
        self.ledger.register(attacker, budget)
        return self.accounts.key_for(attacker)

    def admit(self, attacker: str, key: str, inputs, k: int, request_id: str) -> np.ndarray:
        """Validate and admit a request (account key, defenses' width check, rate limit, then
        budget), or raise and log the refusal; a refused request is never charged."""
        try:
            self.accounts.check_key(attacker, key)
            self.ledger.check(attacker)
            arr = self.engine.validate(inputs, k)
            self.defenses.check(k)  # e.g. popular mixing of n > k items: refuse before any charge
            self.defenses.admit(attacker, len(arr))
            self.ledger.charge(attacker, len(arr), request_id, request_digest(arr, k) if self.ledger.journaled else None, k=k)
        except RaystealError as err:
            self.log.append(attacker, request_id, _request_size(inputs), logged_k(k), False, type(err).__name__, self.info.defense)
            raise
        return arr

    def fail(self, attacker: str, request_id: str, count: int, k: int, err: BaseException) -> None:
        """A charged request failed before its answer left: refund it and log it refused."""
        self.ledger.refund(attacker, request_id)
        self.log.append(attacker, request_id, count, logged_k(k), False, type(err).__name__, self.info.defense, settles=True)

    def defend(self, lists: np.ndarray) -> np.ndarray:
        return self.defenses.apply(lists, self._rng)

    def record(
        self,
        attacker: str,
        request_id: str,
        count: int,
        k: int,
        started: float,
        inputs: np.ndarray | None = None,
        answers: np.ndarray | None = None,
    ) -> None:
        """Log an answered request (with what was asked and answered, for query-log detection)."""
        self.log.append(
            attacker,
            request_id,
            count,
            k,
            True,
            "",
            self.info.defense,
            (time.perf_counter() - started) * 1e3,
            inputs=inputs,
            answers=answers,
        )

    def query(self, attacker: str, key: str, inputs, k: int, request_id: str | None = None) -> np.ndarray:
        """Answer one request synchronously (the in-process path)."""
        request_id = request_id or uuid.uuid4().hex
        started = time.perf_counter()
        arr = self.admit(attacker, key, inputs, k, request_id)
        try:
            lists = self.defend(self.engine.topk(arr, k))
        except Exception as err:  # nothing answered: nothing charged
            self.fail(attacker, request_id, len(arr), k, err)
            raise
        self.record(attacker, request_id, len(arr), k, started, arr, lists)
        return lists

    def remaining(self, attacker: str, key: str) -> int:
        self.accounts.check_key(attacker, key)
        return self.ledger.remaining(attacker)

    def spent(self, attacker: str, key: str) -> int:
        self.accounts.check_key(attacker, key)
        return self.ledger.spent(attacker)

    def query_log(self) -> pa.Table:
        return self.log.to_arrow()

    def close(self) -> None:
        """Close the journals (the in-process oracle's end; an actor's go with its process)."""
        self.ledger.close()
        self.log.close()
