"""The budget ledger: exact per-attacker query accounting that survives a server restart.

Every charge is appended to a write-ahead journal (one JSON line, flushed and fsynced) *before*
the answer leaves the server, so a restarted server replays the journal and never grants spent
queries again. A charge carries the request id: a request charged before a restart and retried
after it (Ray resends an actor call whose actor died) is answered once more without a second
charge, provided it is the same attacker's request of the same size and, where the charge
recorded one, the same inputs (a digest of the request); any other reuse of an id (a repeat to a
live server, another attacker, other inputs, a second retry-free answer) is refused.

Policy: all-or-nothing. A request that would pass the budget is refused whole; partial answers
are never given (an attacker cannot learn where its budget ends by probing with big requests). A
charged request that then fails (nothing answered) is refunded, journaled as such.

A ledger opened with a ``session`` (one per server start, kept across its restarts) tags each
charge with it, its ``k`` and its time: the query log of that session is rebuilt from these
charges after any crash (:func:`session_charges`, :mod:`raysteal.oracle.querylog`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from raysteal.errors import ConfigError, DataFileError
from raysteal.oracle.errors import QueryBudgetExceeded, UnknownAttacker

UNLIMITED = -1
"""Budget value meaning "no limit"."""


@dataclass
class _Account:
    budget: int
    spent: int = 0

    @property
    def remaining(self) -> int:
        return 2**62 if self.budget == UNLIMITED else self.budget - self.spent


def _same_request(charged: tuple[str, int, str | None], attacker: str, count: int, digest: str | None) -> bool:
    """Whether a retry matches the request charged before the restart (a charge journaled
    without a digest, by an older server, is matched on attacker and size alone)."""
    who, size, recorded = charged
    return who == attacker and size == int(count) and (recorded is None or recorded == digest)


def _entries(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of each complete line of a journal (a torn last line, a write
    that never completed, is left out)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return
            yield number, raw


def _decode(raw: bytes, where: str) -> dict:
    """One journal line as a dict, or ``DataFileError`` naming ``where``."""
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFileError(f"{where}: not a JSON entry ({err}); the journal is corrupt") from None
    if not isinstance(entry, dict):
        raise DataFileError(f"{where}: not a JSON object; the journal is corrupt")
    return entry


def session_charges(journal_path: str | os.PathLike, session: str) -> dict[str, dict]:
    """The charges ``session`` made that were not refunded, by request id (each: the journal's
    entry, with ``attacker``, ``count``, ``k`` and ``t``); empty when there is no journal."""
    path = Path(journal_path)
    if not path.exists():
        return {}
    charges: dict[str, dict] = {}
    for number, raw in _entries(path):
        entry = _decode(raw, f"budget ledger journal {path}, line {number}")
        if entry.get("op") == "charge" and entry.get("session") == session:
            charges[str(entry["request"])] = entry
        elif entry.get("op") == "refund":
            charges.pop(str(entry.get("request")), None)
    return charges


class BudgetLedger:
    """Thread-safe budgets and spend per attacker, optionally journaled to ``journal_path``
    (``session``: the server start whose charges are tagged, for its query log)."""

    def __init__(self, journal_path: str | os.PathLike | None = None, session: str | None = None):
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._answered: dict[str, tuple[str, int]] = {}  # request ids seen since this ledger opened: (attacker, queries charged)
        self._retry_exempt: dict[str, tuple[str, int, str | None]] = {}  # charged before a restart: (attacker, count, digest)
        self._session = session
        self._journal_path = Path(journal_path) if journal_path else None
        self._journal = None
        if self._journal_path is not None:
            self._journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._replay(self._journal_path)
            self._journal = open(self._journal_path, "a", encoding="utf-8")

    # ------------------------------------------------------------- journal
    def _replay(self, path: Path) -> None:
        """Rebuild accounts from the journal; a torn last line (a write that never completed, so
        never answered) is cut off so the next entry starts on a line of its own. Any other bad
        line raises ``DataFileError`` naming the file and line."""
        if not path.exists():
            return
        complete = 0  # bytes up to the end of the last complete line
        for number, raw in _entries(path):
            self._apply(raw, number)
            complete += len(raw)
        if complete < path.stat().st_size:
            with open(path, "r+b") as fh:
                fh.truncate(complete)
                fh.flush()
                os.fsync(fh.fileno())

    def _apply(self, raw: bytes, number: int) -> None:
        """Replay one journal line (``number``: 1-based, for the error message)."""
        where = f"budget ledger journal {self._journal_path}, line {number}"
        entry = _decode(raw, where)
        op = entry.get("op")
        try:
            if op == "register":
                acct = self._accounts.setdefault(entry["attacker"], _Account(int(entry["budget"])))
                acct.budget = int(entry["budget"])
            elif op == "charge":
                acct = self._accounts.get(entry["attacker"])
                if acct is None:
                    raise DataFileError(f"{where}: charge for attacker {entry['attacker']!r}, who was never registered before it")
                acct.spent += int(entry["count"])
                digest = entry.get("digest")
                self._retry_exempt[str(entry["request"])] = (
                    str(entry["attacker"]),
                    int(entry["count"]),
                    None if digest is None else str(digest),
                )
            elif op == "refund":
                self._accounts[entry["attacker"]].spent -= int(entry["count"])
                self._retry_exempt.pop(str(entry["request"]), None)
                self._answered[str(entry["request"])] = (str(entry["attacker"]), 0)  # its id stays used
            else:
                raise DataFileError(
                    f"{where}: unknown entry {raw.decode('utf-8').strip()[:80]!r} (op must be 'register', 'charge' or 'refund')"
                )
        except (KeyError, TypeError, ValueError) as err:
            raise DataFileError(f"{where}: malformed {op} entry ({type(err).__name__}: {err})") from None

    def _write(self, entry: dict) -> None:
        if self._journal is None:
            return
        self._journal.write(json.dumps(entry) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    # ------------------------------------------------------------- public
    def register(self, attacker: str, budget: int) -> None:
        """Open (or re-open with a new budget) an attacker's account; spend is kept."""
        if not isinstance(budget, int) or (budget < 0 and budget != UNLIMITED):
            raise ConfigError(f"budget for attacker {attacker!r} must be a non-negative int (or {UNLIMITED} for unlimited), got {budget!r}")
        with self._lock:
            acct = self._accounts.setdefault(attacker, _Account(budget))
            acct.budget = budget
            self._write({"op": "register", "attacker": attacker, "budget": budget})

    @property
    def journaled(self) -> bool:
        """Whether charges are journaled (only then does a request's digest serve: after a restart)."""
        return self._journal is not None

    def charge(self, attacker: str, count: int, request_id: str, digest: str | None = None, k: int | None = None) -> None:
        """Charge ``count`` queries, or raise ``QueryBudgetExceeded`` charging nothing.

        A request charged before a restart and retried after it (same id, attacker and size, and
        the same ``digest`` of its inputs when the charge recorded one) is accepted once without a
        second charge; any other reuse of a request id raises ``ConfigError``, charging nothing.
        ``k`` is journaled with the charge (for the query log of the ledger's session).
        """
        with self._lock:
            acct = self._accounts.get(attacker)
            if acct is None:
                raise UnknownAttacker(attacker)
            exempt = self._retry_exempt.get(request_id)
            if request_id in self._answered or (exempt is not None and not _same_request(exempt, attacker, count, digest)):
                raise ConfigError(f"request id {request_id!r} was already answered: every request needs an id of its own")
            if exempt is not None:  # the retry of a request charged before the restart
                del self._retry_exempt[request_id]
                self._answered[request_id] = (attacker, exempt[1])
                return
            if count > acct.remaining:
                raise QueryBudgetExceeded(attacker, count, acct.remaining)
            self._write(
                {
                    "op": "charge",
                    "attacker": attacker,
                    "count": int(count),
                    "request": request_id,
                    **({} if digest is None else {"digest": digest}),
                    **self._log_fields(k),
                }
            )
            acct.spent += count
            self._answered[request_id] = (attacker, int(count))

    def _log_fields(self, k: int | None) -> dict:
        """What a charge carries for its session's query log (nothing without a session)."""
        if self._session is None:
            return {}
        return {"session": self._session, "k": None if k is None else int(k), "t": time.time()}

    def refund(self, attacker: str, request_id: str) -> int:
        """Give back what ``request_id`` was charged (it failed: nothing was answered); returns
        the queries refunded, 0 when it charged ``attacker`` nothing (or was refunded already)."""
        with self._lock:
            who, count = self._answered.get(request_id, (None, 0))
            if who != attacker or count == 0:
                return 0
            self._write({"op": "refund", "attacker": attacker, "count": count, "request": request_id})
            self._accounts[attacker].spent -= count
            self._answered[request_id] = (attacker, 0)
            return count

    def check(self, attacker: str) -> None:
        """Raise ``UnknownAttacker`` unless ``attacker`` is registered."""
        if attacker not in self._accounts:
            raise UnknownAttacker(attacker)

    def remaining(self, attacker: str) -> int:
        with self._lock:
            if attacker not in self._accounts:
                raise UnknownAttacker(attacker)
            acct = self._accounts[attacker]
            return UNLIMITED if acct.budget == UNLIMITED else acct.remaining

    def spent(self, attacker: str) -> int:
        with self._lock:
            if attacker not in self._accounts:
                raise UnknownAttacker(attacker)
            return self._accounts[attacker].spent

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{attacker: {"budget", "spent"}}`` for reporting."""
        with self._lock:
            return {a: {"budget": acct.budget, "spent": acct.spent} for a, acct in self._accounts.items()}

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
