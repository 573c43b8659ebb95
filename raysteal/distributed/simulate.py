"""``raysteal simulate``: hundreds of concurrent attackers against shared ``TargetServer``s.

The target is prepared once (the runner's Ray task) and deployed as one server per defense
setting; the prepared data goes into the object store once. Each attacker is a light Ray task
(fractional CPUs) holding its own account on its server (budget enforced server-side, journaled)
and its own knowledge (seeded from its index). Its queries go out as requests of
``request_size`` users, retried after the server's ``retry_after`` when rate-limited
(:class:`PatientClient`). Per-attacker rows land in the ResultStore, the servers' query logs
beside them, and ``summary.json`` holds what the servers saw: queries, queries/s, latency
percentiles, budget overspend (always 0 unless the ledger is broken) and the agreement reached.

With ``simulation.benign``, real users' histories are replayed beside the attackers
(:mod:`raysteal.distributed.benign`); ``accounts.parquet`` labels every account (attacker or
benign, attack, budget). With ``simulation.detection``, every account is then scored from the
query log alone (:mod:`raysteal.detection`): ``OUT/detection/`` holds the scores, ROC/AUC per
attack and budget and the fidelity each attacker reached before it was flagged.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysteal.atomic import write_atomically, write_text_atomically
from raysteal.detection import evaluate_detection, render_detection
from raysteal.distributed.benign import benign_accounts, drive, schedule
from raysteal.distributed.deploy import (
    deploy_defense,
    execute_one,
    ledger_budget,
    open_accounts,
    prepare_one_target,
    prepare_task,
    query_log,
    server_ledger,
    start_ray,
)
from raysteal.distributed.progress import RunProgress
from raysteal.distributed.runtime import check_fits
from raysteal.errors import RaystealError
from raysteal.experiment.run import Run, SimulationRole
from raysteal.experiment.simulate_config import SimulationConfig
from raysteal.oracle.errors import RateLimitExceeded
from raysteal.oracle.protocol import ClientWrapper
from raysteal.results.store import ResultStore

if TYPE_CHECKING:  # annotations only: Ray and the servers are imported where a simulation runs
    from ray import ObjectRef

    from raysteal.distributed.benign import BenignAccount
    from raysteal.oracle.client import QueryClient
    from raysteal.oracle.server import TargetServerHandle


class PatientClient(ClientWrapper):
    """An attacker's side of the wire: splits each query batch into requests of
    ``request_size`` and, when refused by a rate limit, waits ``retry_after`` and retries (for at
    most ``patience_s``). Records each request's round trip. Same interface as ``QueryClient``."""

    def __init__(self, client: QueryClient, request_size: int, patience_s: float = 120.0):
        super().__init__(client)
        self.client = client  # the QueryClient itself: query_async
        self.request_size = int(request_size)
        self.patience_s = float(patience_s)
        self.latencies_ms: list[float] = []
        self.rate_limited = 0
        self.waited_s = 0.0

    def query(self, inputs, k: int) -> np.ndarray:
        parts = [self._request(inputs[start : start + self.request_size], k) for start in range(0, len(inputs), self.request_size)]
        if not parts:
            return self.client.query(inputs, k)
        width = max(p.shape[1] for p in parts)
        return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-1) for p in parts])

    def _request(self, chunk, k: int) -> np.ndarray:
        deadline = time.monotonic() + self.patience_s
        while True:
            started = time.perf_counter()
            try:
                answer = self.client.query(chunk, k)
            except RateLimitExceeded as err:
                self.rate_limited += 1
                wait = err.retry_after_s + 1e-3
                if time.monotonic() + wait > deadline:
                    raise
                time.sleep(wait)
                self.waited_s += wait
                continue
            self.latencies_ms.append((time.perf_counter() - started) * 1e3)
            return np.asarray(answer)

    def query_async(self, inputs, k: int):
        return self.client.query_async(inputs, k)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    def __getattr__(self, name: str):  # attacker_id, info, remaining_budget, spent, num_items, ...
        if name in ("client", "wrapped"):  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.client, name)


def role(run: Run) -> SimulationRole:
    """Which attacker of the simulation ``run`` is (every run :meth:`SimulationConfig.attacker_runs` builds has one)."""
    if run.simulation is None:
        raise ValueError(f"run {run.id} is not an attacker of a simulation")
    return run.simulation


def _attacker(run: Run, data, client: QueryClient, request_size: int, patience_s: float, aux_cache: str | None) -> tuple[dict, list[float]]:
    """Ray task body: one attacker's whole attack, through a :class:`PatientClient`."""
    patient = PatientClient(client, request_size, patience_s)
    started = time.time()
    row = execute_one(run, data, patient, aux_cache)
    lat = np.asarray(patient.latencies_ms) if patient.latencies_ms else np.asarray([math.nan])
    row.update(
        simulation=role(run).name,
        attacker=role(run).attacker,
        server=role(run).server,
        requests=patient.requests,
        rate_limited=patient.rate_limited,
        rate_wait_s=patient.waited_s,
        client_latency_ms_p50=float(np.nanpercentile(lat, 50)),
        started_at=started,
        finished_at=time.time(),
    )
    return row, patient.latencies_ms


def _percentiles(values: np.ndarray, qs=(50, 99)) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {f"p{q}": math.nan for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


def summarize_simulation(
    rows: list[dict],
    ledgers: list[dict[str, dict[str, int]]],
    logs: list,
    client_latencies: list[float],
    wall_s: float,
    attackers: int,
    failures: int,
    servers: list[dict[str, Any]],
) -> dict[str, Any]:
    """``summary.json``: the contract keys first (attackers, queries, qps, latency_ms, budget_overspend)."""
    import pandas as pd

    accounts = {a: acct for ledger in ledgers for a, acct in ledger.items()}
    spent = np.array([acct["spent"] for acct in accounts.values()], dtype=np.int64)
    budgets = np.array([acct["budget"] for acct in accounts.values()], dtype=np.int64)
    limited = budgets >= 0
    overspend = int(np.clip(spent[limited] - budgets[limited], 0, None).sum()) if limited.any() else 0
    log = pd.concat([t.to_pandas() for t in logs], ignore_index=True) if logs else pd.DataFrame()
    granted = log[log["granted"]] if not log.empty else log
    if not granted.empty:
        end = granted["time"].astype("int64") / 1e6  # UTC microseconds -> seconds
        begin = end - granted["latency_ms"] / 1e3
        span = float(end.max() - begin.min())
        qps = float(granted["count"].sum()) / span if span > 0 else math.nan
    else:
        span, qps = 0.0, math.nan
    frame = pd.DataFrame(rows)
    agreement = {}
    for metric in ("agr@k/heldout", "agr@k", "agr@10"):
        if metric in frame.columns:
            v = frame[metric].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            agreement[metric] = {"mean": float(v.mean()) if v.size else math.nan, **_percentiles(v, (10, 50, 90))}
    refused = log[~log["granted"]]["reason"].value_counts().to_dict() if not log.empty else {}
    return {
        "attackers": int(attackers),
        "queries": int(spent.sum()),
        "qps": qps,
        "latency_ms": _percentiles(granted["latency_ms"].to_numpy() if not granted.empty else np.array([])),
        "budget_overspend": overspend,
        "completed": len(rows),
        "failed": int(failures),
        "requests": int(len(granted)),
        "refused": {str(k): int(v) for k, v in refused.items()},
        "client_latency_ms": _percentiles(np.asarray(client_latencies)),
        "budget_exhausted": int(((spent == budgets) & limited).sum()),
        "query_span_s": span,
        "wall_s": float(wall_s),
        "attackers_per_min": 60.0 * len(rows) / wall_s if wall_s > 0 else math.nan,
        "agreement": agreement,
        "servers": servers,
    }


def run_simulation(
    sim: SimulationConfig,
    out_dir: str | Path,
    address: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every attacker of ``sim`` at once; returns (and writes) ``OUT/summary.json``."""
    # loads Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import stop_target_server

    out = Path(out_dir).resolve()
    store = ResultStore(out)
    runs = sim.attacker_runs()
    settings = sim.simulation
    share = start_ray(address, num_cpus)
    import ray

    check_fits(
        settings.cpus_per_attacker,
        settings.gpus_per_attacker if settings.gpus_per_attacker is not None else (share / 4 if share else 0.0),
        "simulation.cpus_per_attacker / gpus_per_attacker: an attacker",
    )
    base = runs[0]
    max_k = max(max(r.k for r in runs), 10)
    target_args = (base.spec["dataset"], base.spec["split"], base.spec["target"], max_k, data_dir, cache_dir)
    spec, data = prepare_one_target(prepare_task(share), target_args, show=progress)
    data_ref = ray.put(data)
    session = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    servers, names = [], []
    for d, defense in enumerate(sim.experiment.defenses):
        names.append(f"sim-{sim.name}-{session}-{d}")
        servers.append(deploy_defense(spec, data, list(defense), [], out / "ledgers" / names[-1], share)[0])
    try:
        ids = [r.id for r in runs]
        owned = [servers[role(r).server] for r in runs]
        clients = open_accounts(owned, ids, [ledger_budget(r) for r in runs])
        gpus = settings.gpus_per_attacker if settings.gpus_per_attacker is not None else (share / 4 if share else 0.0)
        task = ray.remote(_attacker).options(num_cpus=settings.cpus_per_attacker, num_gpus=gpus, max_retries=0)
        aux_cache = str(Path(cache_dir) if cache_dir else out / "cache")
        benign, benign_refs = _start_benign(sim, data, runs, servers, ray.get(servers[0].info.remote()))
        started = time.perf_counter()
        pending = {
            task.remote(r, data_ref, c, settings.request_size, settings.rate_limit_patience_s, aux_cache): r for r, c in zip(runs, clients)
        }
        rows, latencies, failures = _collect(pending, store, progress)
        benign_stats = [ray.get(ref) for ref in benign_refs]
        wall = time.perf_counter() - started
        ledgers = [server_ledger(s) for s in servers]
        logs = [query_log(s) for s in servers]
        stats = ray.get([s.stats.remote() for s in servers])
        info = ray.get([s.info.remote() for s in servers])
    finally:
        for server in servers:
            stop_target_server(server)
    for name, table in zip(names, logs):
        store.write_query_log(name, table)
    per_server = _per_server(names, runs, info, ledgers, stats)
    summary = summarize_simulation(rows, ledgers, logs, latencies, wall, len(runs), len(failures), per_server)
    summary.update(experiment=sim.name, dataset=base.dataset.name, target=base.target.model, session=session)
    labels = account_labels(runs, benign, len(servers))
    write_table_atomically(out / "accounts.parquet", labels)
    if benign:
        summary["benign"] = _benign_summary(benign, benign_stats, settings)
    summary["catalogue"] = int(info[0].num_items if info[0].sequential else info[0].num_users)  # inputs the server accepts
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=2, default=float))
    if settings.detection is not None:  # after the summary is safe: the log and the labels are written
        summary["detection"] = detect(out, settings.detection.fpr)
        write_text_atomically(out / "summary.json", json.dumps(summary, indent=2, default=float))
    if failures:
        lines = "\n".join(f"  attacker {role(r).attacker}: {e}" for r, e in failures[:10])
        raise RaystealError(f"{len(failures)} of {len(runs)} attacker(s) failed (summary.json covers the others):\n{lines}")
    return summary


def _collect(pending: dict[Any, Run], store: ResultStore, progress: bool) -> tuple[list[dict], list[float], list[tuple[Run, str]]]:
    """Wait for every attacker of ``pending`` (task -> run): its row into ``store`` as it ends (one
    failing does not stop the others); the rows, the client latencies and the failures."""
    import ray

    rows, latencies, failures = [], [], []
    with RunProgress(total=len(pending), enabled=progress) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=min(len(pending), 16), timeout=1.0)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    row, lat = ray.get(ref)
                except Exception as err:  # one attacker failing does not stop the others
                    failures.append((run, repr(err)))
                    bar.advance(f"FAILED attacker {role(run).attacker}: {err}")
                    continue
                store.write_row(row["run_id"], row)
                rows.append(row)
                latencies.extend(lat)
                bar.advance(f"attacker {row['attacker']}: {row['queries']} queries, agr@k={row['agr@k']:.4f}")
    return rows, latencies, failures


def _per_server(names: list[str], runs: list[Run], info: list, ledgers: list[dict], stats: list[dict]) -> list[dict[str, Any]]:
    """``summary.json``'s ``servers``: each server's defense, attackers, queries and own stats."""
    return [
        {
            "server": name,
            "defense": inf.defense,
            "attackers": sum(1 for r in runs if role(r).server == d),
            "queries": int(sum(a["spent"] for a in led.values())),
            **st,
        }
        for d, (name, inf, led, st) in enumerate(zip(names, info, ledgers, stats))
    ]


def attack_label(run: Run) -> str:
    """An attacker's attack as the detection tables name it (``dfme`` / ``dfme-random``, ``seq_ptq``)."""
    attack = run.spec["attack"]
    name = str(attack["attack"])
    return f"{name}-{attack['synthesis']}" if attack.get("synthesis", "autoregressive") != "autoregressive" else name


def planned_queries(run: Run) -> int:
    """The queries an attacker may spend: the least of its account's budget and its attack's own
    ``budget_queries`` / ``budget_sequences`` (-1: unlimited)."""
    caps = [
        b
        for b in (ledger_budget(run), run.spec["attack"].get("budget_queries"), run.spec["attack"].get("budget_sequences"))
        if b is not None and b >= 0
    ]
    return int(min(caps)) if caps else -1


def account_labels(runs: list[Run], benign: list, servers: int):
    """``accounts.parquet``: every account's ground truth (never shown to the detector): ``account,
    role`` (attacker / benign), ``attack``, ``budget`` (:func:`planned_queries`; a benign account's
    queries), ``server``, ``user`` (the replayed user)."""
    import pandas as pd

    rows = [
        {
            "account": r.id,
            "role": "attacker",
            "attack": attack_label(r),
            "budget": planned_queries(r),
            "server": role(r).server,
            "user": -1,
        }
        for r in runs
    ]
    rows += [
        {"account": b.account, "role": "benign", "attack": "benign", "budget": len(b.inputs), "server": i % servers, "user": b.user}
        for i, b in enumerate(benign)
    ]
    return pd.DataFrame(rows)


def write_table_atomically(path: Path, frame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomically(path, lambda fh: pq.write_table(table, fh))


def _start_benign(
    sim: SimulationConfig, data, runs: list[Run], servers: list[TargetServerHandle], target
) -> tuple[list[BenignAccount], list[ObjectRef[dict]]]:
    """Open the benign accounts (account ``i`` on server ``i % S``) and start their drivers."""
    import ray

    traffic = sim.simulation.benign
    if traffic is None:
        return [], []
    accounts = benign_accounts(data, traffic, bool(target.sequential), target.max_len)
    owned = [servers[i % len(servers)] for i in range(len(accounts))]
    clients = open_accounts(owned, [a.account for a in accounts], [len(a.inputs) for a in accounts])
    events = schedule(accounts, traffic.rate, traffic.seed)
    k = runs[0].k
    task = ray.remote(drive).options(num_cpus=traffic.cpus_per_driver, max_retries=0)
    refs: list[ObjectRef[dict]] = []
    for d in range(traffic.drivers):
        mine = [e for e in events if e[1] % traffic.drivers == d]
        refs.append(task.remote(clients, accounts, mine, k))
    return accounts, refs


def _benign_summary(benign: list, stats: list[dict], settings) -> dict[str, Any]:
    requests = sum(s["requests"] for s in stats)
    return {
        "accounts": len(benign),
        "requests": requests,
        "failed": sum(s["failed"] for s in stats),
        "offered_qps": settings.benign.rate * len(benign),
        "span_s": max((s["span_s"] for s in stats), default=0.0),
        "max_lag_s": max((s["max_lag_s"] for s in stats), default=0.0),
        "source": settings.benign.source,
    }


def detect(out_dir: str | Path, fpr: float) -> list[dict]:
    """Score every account of a finished simulation's query logs (:mod:`raysteal.detection`),
    each server's log on its own; writes ``OUT/detection/{scores,results}.parquet`` and
    ``report.md`` and returns the per-group rows. Reads ``OUT/query_logs``, ``OUT/accounts.parquet``
    (the labels, joined after scoring) and the attackers' rows (their agreement), so a finished
    run can be scored again (``raysteal simulate FILE --out OUT --rescore``)."""
    import pandas as pd

    out = Path(out_dir)
    store = ResultStore(out)
    if not (out / "accounts.parquet").is_file():
        raise RaystealError(f"{out}: no accounts.parquet; not the output of a simulation with benign traffic")
    labels = pd.read_parquet(out / "accounts.parquet")
    logs = store.load_query_logs()
    if logs.empty:
        raise RaystealError(f"{out}: no query log to score")
    frame = store.load()
    metric = "agr@k" if "agr@k" in frame.columns else "agr@10"
    outcomes = (
        pd.DataFrame(
            {"account": frame["run_id"].astype(str), "queries": frame["queries"].astype(int), "fidelity": frame[metric].astype(float)}
        )
        if not frame.empty
        else pd.DataFrame(columns=["account", "queries", "fidelity"])
    )
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    scores, results = [], []
    for name, table in logs.groupby("server", sort=True):
        d = int(str(name).rsplit("-", 1)[-1])
        catalogue = int(summary.get("catalogue") or _largest_input(table) + 1)
        per_account, per_group, _ = evaluate_detection(
            table.drop(columns=["server"]), labels[labels["server"] == d], outcomes, catalogue, fpr=fpr
        )
        scores.append(per_account.assign(server=name))
        results.append(per_group.assign(server=name, metric=metric))
    scores_frame = pd.concat(scores, ignore_index=True)
    scores_frame["flagged_at"] = pd.to_numeric(scores_frame["flagged_at"], errors="coerce")
    results_frame = pd.concat(results, ignore_index=True)
    (out / "detection").mkdir(parents=True, exist_ok=True)
    write_table_atomically(out / "detection" / "scores.parquet", scores_frame)
    write_table_atomically(out / "detection" / "results.parquet", results_frame)
    write_text_atomically(
        out / "detection" / "report.md", render_detection(results_frame, note=f"Fidelity: {metric} (agreement with the target).")
    )
    return results_frame.to_dict("records")


def _largest_input(log) -> int:
    """The largest item (or user) id any query of ``log`` ended with (catalogue size of an older summary)."""
    items = [max(v) for v in log["last_items"] if v is not None and len(v)]
    return int(max(items)) if items else 0
