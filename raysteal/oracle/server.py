"""``TargetServer``: a deployed recommender as a Ray actor answering top-k queries only.

Concurrent requests from many attackers are merged into one forward pass (dynamic batching up
to ``max_batch`` rows or ``max_wait_ms``). Budgets and the query log live server-side; the budget
ledger is journaled under ``state_dir`` so a restarted actor (``max_restarts``) keeps every
charge, and a retried request (same request id) is never charged twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from raysteal.oracle.client import QueryClient
from raysteal.oracle.core import OracleCore, TargetInfo
from raysteal.oracle.target import TargetSpec, build_oracle_core


class _TargetServer:
    """Actor body (decorated below); async so requests overlap while a batch computes."""

    def __init__(self, spec: TargetSpec, state_dir: str | None = None, seed: int = 0, max_batch: int = 16384, max_wait_ms: float = 2.0):
        self._core: OracleCore = build_oracle_core(spec, state_dir=state_dir, seed=seed)
        self._max_batch = int(max_batch)
        self._max_wait = float(max_wait_ms) / 1e3
        self._queue: asyncio.Queue | None = None
        self._batcher: asyncio.Task | None = None
        self._batches = 0
        self._rows = 0

    # ------------------------------------------------------------------ API
    def info(self) -> TargetInfo:
        return self._core.info

    def register_attacker(self, attacker: str, budget: int = -1) -> TargetInfo:
        self._core.register(attacker, budget)
        return self._core.info

    def remaining(self, attacker: str) -> int:
        return self._core.remaining(attacker)

    def spent(self, attacker: str) -> int:
        return self._core.spent(attacker)

    def ledger(self) -> dict:
        return self._core.ledger.snapshot()

    def query_log(self):
        return self._core.query_log()

    def stats(self) -> dict:
        return {"batches": self._batches, "rows": self._rows, "mean_batch_rows": self._rows / max(self._batches, 1)}

    def pid(self) -> int:
        import os

        return os.getpid()

    async def query(self, attacker: str, inputs: Any, k: int, request_id: str) -> np.ndarray:
        started = time.perf_counter()
        arr = self._core.admit(attacker, inputs, k, request_id)  # raises (and logs) on refusal
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.get_running_loop().create_task(self._run_batches())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((arr, k, future))
        lists = await future
        lists = self._core.defend(lists)
        self._core.record(attacker, request_id, len(arr), k, started)
        return lists

    # ------------------------------------------------------------- batching
    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            rows = len(batch[0][0])
            deadline = loop.time() + self._max_wait
            while rows < self._max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    item = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(item)
                rows += len(item[0])
            try:
                results = await asyncio.to_thread(self._compute, [b[0] for b in batch], max(b[1] for b in batch))
                offset = 0
                for arr, k, future in batch:
                    future.set_result(results[offset : offset + len(arr), :k])
                    offset += len(arr)
            except Exception as err:  # surface to every waiting caller
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)

    def _compute(self, parts: list[np.ndarray], k: int) -> np.ndarray:
        if self._core.engine.sequential:
            width = max(p.shape[1] for p in parts)
            merged = np.concatenate([np.pad(p, ((0, 0), (width - p.shape[1], 0)), constant_values=-1) for p in parts])
        else:
            merged = np.concatenate(parts)
        self._batches += 1
        self._rows += len(merged)
        return self._core.engine.topk(merged, k)


TargetServer = ray.remote(_TargetServer)


def start_target_server(
    spec: TargetSpec,
    state_dir: str | Path | None = None,
    seed: int = 0,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    max_batch: int = 16384,
    max_wait_ms: float = 2.0,
    max_restarts: int = 3,
    name: str | None = None,
):
    """Start a ``TargetServer`` actor (on a GPU share when the cluster has GPUs).

    ``state_dir`` must be a path every node can reach when the actor may restart elsewhere.
    """
    if num_gpus is None:
        num_gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    options = dict(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_restarts=max_restarts,
        max_task_retries=-1 if max_restarts else 0,
        max_concurrency=1024,
    )
    if name:
        options["name"] = name
    # the spec lives in the object store, pinned here, so a restarted actor can rebuild from it
    spec_ref = ray.put(spec)
    handle = TargetServer.options(**options).remote(spec_ref, str(state_dir) if state_dir else None, seed, max_batch, max_wait_ms)
    _PINNED_SPECS[handle._actor_id.hex()] = spec_ref
    return handle


_PINNED_SPECS: dict[str, "ray.ObjectRef"] = {}


def stop_target_server(server) -> None:
    """Kill a server for good and release its pinned spec."""
    ray.kill(server)
    _PINNED_SPECS.pop(server._actor_id.hex(), None)


def client_for(server, attacker: str, budget: int = -1) -> QueryClient:
    """Register ``attacker`` with ``budget`` queries on ``server`` and return its client."""
    info = ray.get(server.register_attacker.remote(attacker, budget))
    return QueryClient(attacker, info, actor=server)
