"""``TargetServer``: a deployed recommender as a Ray actor answering top-k queries only.

Concurrent requests from many attackers are merged into one forward pass (dynamic batching up
to ``max_batch`` rows or ``max_wait_ms``); a request is validated and charged alone before it
joins a batch, and a batch that fails is answered request by request, so one attacker's bad
request never fails or charges another's. Budgets and the query log live server-side, both
journaled under ``state_dir`` so a restarted actor (``max_restarts``) keeps every charge and
every log row, and a retried request (same request id) is never charged twice; without a
``state_dir`` nothing survives the process, so such a server is never restarted. Each attacker's client
queries with its account key; opening accounts and reading the ledger or the query log take the
owner's token, which only the process that started the server holds (:func:`owner_token`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import ray
from ray.actor import ActorHandle

from raysteal.errors import ConfigError, RaystealError
from raysteal.oracle.accounts import AccountKeys
from raysteal.oracle.client import QueryClient
from raysteal.oracle.core import OracleCore, TargetInfo
from raysteal.oracle.querylog import new_session
from raysteal.oracle.target import TargetSpec, build_oracle_core

_Request = tuple[np.ndarray, int, asyncio.Future[np.ndarray]]
"""A queued request: its admitted inputs, its k, and the future its caller awaits."""


class _TargetServer:
    """Actor body (decorated below); async so requests overlap while a batch computes."""

    def __init__(
        self,
        spec: TargetSpec,
        state_dir: str | None = None,
        seed: int = 0,
        max_batch: int = 16384,
        max_wait_ms: float = 2.0,
        secret: bytes | None = None,
        session: str | None = None,
    ):
        self._core: OracleCore = build_oracle_core(spec, state_dir=state_dir, seed=seed, secret=secret, session=session)
        self._max_batch = int(max_batch)
        self._max_wait = float(max_wait_ms) / 1e3
        self._queue: asyncio.Queue[_Request] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._batches = 0
        self._rows = 0

    # ------------------------------------------------------------------ API
    def info(self) -> TargetInfo:
        return self._core.info

    def register_attacker(self, attacker: str, budget: int, owner: str) -> tuple[TargetInfo, str]:
        """Open ``attacker``'s account (owner only); returns the target's info and the account key."""
        self._core.accounts.check_owner(owner, "opening accounts")
        return self._core.info, self._core.register(attacker, budget)

    def remaining(self, attacker: str, key: str) -> int:
        return self._core.remaining(attacker, key)

    def spent(self, attacker: str, key: str) -> int:
        return self._core.spent(attacker, key)

    def ledger(self, owner: str) -> dict:
        self._core.accounts.check_owner(owner, "the ledger")
        return self._core.ledger.snapshot()

    def query_log(self, owner: str):
        self._core.accounts.check_owner(owner, "the query log")
        return self._core.query_log()

    def stats(self) -> dict:
        return {"batches": self._batches, "rows": self._rows, "mean_batch_rows": self._rows / max(self._batches, 1)}

    def pid(self) -> int:
        import os

        return os.getpid()

    async def query(self, attacker: str, key: str, inputs: Any, k: int, request_id: str) -> np.ndarray:
        started = time.perf_counter()
        arr = self._core.admit(attacker, key, inputs, k, request_id)  # raises (and logs) on refusal
        try:
            lists = self._core.defend(await self._ranked(arr, k))
        except (Exception, asyncio.CancelledError) as err:  # nothing answered: refunded, logged refused
            self._core.fail(attacker, request_id, len(arr), k, err)
            raise
        self._core.record(attacker, request_id, len(arr), k, started, arr, lists)
        return lists

    async def _ranked(self, arr: np.ndarray, k: int) -> np.ndarray:
        """The top-``k`` lists of an admitted request, computed in the next dynamic batch."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.get_running_loop().create_task(self._run_batches(self._queue))
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((arr, k, future))
        return await future

    # ------------------------------------------------------------- batching
    async def _run_batches(self, queue: asyncio.Queue[_Request]) -> None:
        while True:
            batch = await self._next_batch(queue)
            try:
                await self._answer(batch)
            except Exception as err:  # a bug in answering: fail this batch's callers, keep serving
                for _, _, future in batch:
                    _settle(future, error=err)

    async def _next_batch(self, queue: asyncio.Queue[_Request]) -> list[_Request]:
        """Requests queued on ``queue`` up to ``max_batch`` rows, waiting at most ``max_wait_ms`` for more."""
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        rows = len(batch[0][0])
        deadline = loop.time() + self._max_wait
        while rows < self._max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0 and queue.empty():
                break
            try:
                item = queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(queue.get(), timeout)
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            batch.append(item)
            rows += len(item[0])
        return batch

    async def _answer(self, batch: list[_Request]) -> None:
        """Answer a batch in one forward pass; if that fails, each request alone (a request that
        fails alone fails only its own caller)."""
        try:
            results = await asyncio.to_thread(self._compute, [arr for arr, _, _ in batch], max(k for _, k, _ in batch))
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0][2], error=err)
                return
            for item in batch:
                await self._answer([item])
            return
        offset = 0
        for arr, k, future in batch:
            _settle(future, results[offset : offset + len(arr), :k])
            offset += len(arr)

    def _compute(self, parts: list[np.ndarray], k: int) -> np.ndarray:
        if self._core.engine.sequential:
            width = max(p.shape[1] for p in parts)
            merged = np.concatenate([np.pad(p, ((0, 0), (width - p.shape[1], 0)), constant_values=-1) for p in parts])
        else:
            merged = np.concatenate(parts)
        lists = self._core.engine.topk(merged, k)
        self._batches += 1
        self._rows += len(merged)
        return lists


def _settle(future: asyncio.Future[np.ndarray], result: Any = None, error: Exception | None = None) -> None:
    """Give a waiting caller its answer or error (a caller gone meanwhile is skipped)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


TargetServer = ray.remote(_TargetServer)

TargetServerHandle = ActorHandle[_TargetServer]
"""A started ``TargetServer`` (:func:`start_target_server`); call its methods as ``server.info.remote()``."""


def start_target_server(
    spec: TargetSpec,
    state_dir: str | Path | None = None,
    seed: int = 0,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    max_batch: int = 16384,
    max_wait_ms: float = 2.0,
    max_restarts: int | None = None,
    name: str | None = None,
) -> TargetServerHandle:
    """Start a ``TargetServer`` actor (on a GPU share when the cluster has GPUs).

    ``state_dir`` (the ledger and query-log journals) must be a path every node can reach when the
    actor may restart elsewhere. ``max_restarts``: 3 by default with a ``state_dir``, 0 without
    (an in-memory ledger would grant spent budgets again after a restart; asking for restarts
    without a ``state_dir`` raises ``ConfigError``).
    """
    max_restarts = _restarts(max_restarts, state_dir)
    if num_gpus is None:
        num_gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    options: dict[str, Any] = dict(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_restarts=max_restarts,
        max_task_retries=-1 if max_restarts else 0,
        max_concurrency=1024,
    )
    if name:
        options["name"] = name
    # the spec lives in the object store, pinned here, so a restarted actor can rebuild from it; the
    # secret goes with the constructor's arguments, so a restarted actor derives the same keys
    spec_ref = ray.put(spec)
    secret = secrets.token_bytes(32)
    # cast: Ray's stubs type .remote() as the handle or the actor class (ActorProxy); it returns the handle
    handle = cast(
        TargetServerHandle,
        TargetServer.options(**options).remote(
            spec_ref, str(state_dir) if state_dir else None, seed, max_batch, max_wait_ms, secret, new_session()
        ),
    )
    _STARTED[handle._actor_id.hex()] = (spec_ref, AccountKeys(secret).owner_token)
    return handle


def _restarts(max_restarts: int | None, state_dir: str | Path | None) -> int:
    """The restarts a server may have: none without a ledger directory to restart from."""
    if max_restarts is None:
        return 3 if state_dir else 0
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
        raise ConfigError(f"max_restarts must be an int >= -1 (-1: unlimited), got {max_restarts!r}")
    if max_restarts and not state_dir:
        raise ConfigError(
            f"max_restarts={max_restarts} needs a state_dir: without one the ledger lives in memory and a restarted "
            "server would grant spent budgets again"
        )
    return max_restarts


_STARTED: dict[str, tuple[ray.ObjectRef[TargetSpec], str]] = {}
"""Servers this process started: their pinned spec and owner token, by actor id."""


def owner_token(server: TargetServerHandle) -> str:
    """The owner's token of a server this process started (to open accounts from another process,
    pass it to :func:`client_for` there; never give it to attack code)."""
    started = _STARTED.get(server._actor_id.hex())
    if started is None:
        raise RaystealError("this process did not start that target server: pass its owner token explicitly")
    return started[1]


def stop_target_server(server: TargetServerHandle) -> None:
    """Kill a server for good and release its pinned spec."""
    ray.kill(server)
    _STARTED.pop(server._actor_id.hex(), None)


def client_for(server: TargetServerHandle, attacker: str, budget: int = -1, owner: str | None = None) -> QueryClient:
    """Register ``attacker`` with ``budget`` queries on ``server`` and return its client
    (``owner``: the server's owner token, by default the one this process holds)."""
    info, key = ray.get(server.register_attacker.remote(attacker, budget, owner or owner_token(server)))
    return QueryClient(attacker, info, key, actor=server)
