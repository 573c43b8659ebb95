"""The TargetServer's saturation curve: throughput and p50/p99 latency against offered load and
against the number of clients, each as a ratio to raw score + top-k on the same machine, same run.

    python benchmarks/saturation.py [--target sasrec|mf] [--quick] [--json PATH]

Open-loop load: ``clients`` load actors each send requests of ``--request`` queries at fixed
times (offered load / clients requests per second between them), without waiting for answers,
as many independent users would; every request's latency is its send-to-answer time. The
offered loads are fractions of the raw rate measured first (``--loads``; raw is measured at a batch of 2,048 sequences / 16,384 users, one thread
like the server actor), so the curve shows
where the server stops keeping up (achieved < offered, latency climbing). A second sweep holds
the offered load at ``--clients-load`` of raw and varies the number of clients. The target is
freshly initialised with ML-1M's shape (throughput does not depend on the weights); a sequential
target is queried with ML-1M users' last ``--seq-len`` items (DFME's prefixes are up to 50).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_name, rate, write_json  # noqa: E402
from oracle_throughput import load_log  # noqa: E402


def make_target(kind: str, log, seq_len: int):
    from raysteal.models import build_model

    torch.manual_seed(0)
    if kind == "mf":
        return build_model({"model": "bpr", "embedding_dim": 64}, log.num_users, log.num_items).eval()
    return build_model({"model": "sasrec", "max_len": 200, "embedding_dim": 50}, log.num_users, log.num_items).eval()


def inputs_for(kind: str, log, size: int, seq_len: int, rng) -> np.ndarray:
    users = rng.integers(0, log.num_users, size)
    return users if kind == "mf" else log.padded_sequences(seq_len, users)


def raw_figures(model, kind: str, log, k: int, request: int, seq_len: int) -> tuple[float, float]:
    """(raw queries/s at a large batch, raw milliseconds for one request of ``request`` queries)."""
    rng = np.random.default_rng(0)
    big = torch.as_tensor(inputs_for(kind, log, 16384 if kind == "mf" else 2048, seq_len, rng))
    one = torch.as_tensor(inputs_for(kind, log, request, seq_len, rng))

    @torch.no_grad()
    def step(x) -> int:
        torch.topk(model.score(x), k, dim=1)
        return len(x)

    qps = rate(lambda: step(big), "cpu")
    per_request = rate(lambda: step(one), "cpu") / request  # requests/s
    return qps, 1e3 / per_request


def open_load_actors(count: int) -> list:
    import ray

    @ray.remote(num_cpus=0)
    class OpenLoad:
        def ready(self) -> bool:
            import raysteal.oracle  # noqa: F401  (imports paid before any clock starts)

            return True

        async def run(self, client, inputs, k: int, start: float, per_second: float, seconds: float) -> list[tuple[float, float]]:
            """Send a request every ``1 / per_second`` s from ``start`` for ``seconds``; returns
            (sent, answered) wall times of every answered request."""
            import asyncio

            async def one() -> tuple[float, float]:
                sent = time.time()
                await client.query_async(inputs, k)
                return sent, time.time()

            tasks = []
            for i in range(max(1, int(seconds * per_second))):
                delay = start + i / per_second - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one()))
            done = await asyncio.gather(*tasks, return_exceptions=True)
            return [d for d in done if not isinstance(d, BaseException)]

    actors = [OpenLoad.options(max_concurrency=1000).remote() for _ in range(count)]
    ray.get([a.ready.remote() for a in actors])
    return actors


def measure(server, actors: list, kind: str, log, k: int, request: int, seq_len: int, offered_qps: float, seconds: float, tag: str) -> dict:
    """One point of the curve: ``len(actors)`` clients offering ``offered_qps`` queries/s in all."""
    import ray

    from raysteal.oracle.server import client_for

    rng = np.random.default_rng(3)
    clients = [client_for(server, f"{tag}-{i}") for i in range(len(actors))]
    inputs = [ray.put(inputs_for(kind, log, request, seq_len, rng)) for _ in actors]
    per_client = offered_qps / request / len(actors)  # requests/s per client
    start = time.time() + 1.0
    parts = ray.get([a.run.remote(c, x, k, start, per_client, seconds) for a, c, x in zip(actors, clients, inputs)])
    times = np.array([t for p in parts for t in p], dtype=np.float64).reshape(-1, 2)
    sent = max(1, int(seconds * per_client)) * len(actors)
    offered_qps = sent * request / seconds  # what was really sent (whole requests)
    if len(times) == 0:
        return {"offered_qps": offered_qps, "clients": len(actors), "requests": sent, "answered": 0}
    latency = (times[:, 1] - times[:, 0]) * 1e3
    span = max(float(times[:, 1].max() - start), seconds)  # the offered window, or longer when answers lag behind it
    return {
        "offered_qps": offered_qps,
        "clients": len(actors),
        "requests": sent,
        "answered": int(len(times)),
        "achieved_qps": len(times) * request / span,
        "p50_ms": float(np.percentile(latency, 50)),
        "p99_ms": float(np.percentile(latency, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["sasrec", "mf"], default="sasrec")
    parser.add_argument("--quick", action="store_true", help="3 loads, 1 and 4 clients, 2 s each")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--request", type=int, default=64, help="queries per request")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each point")
    parser.add_argument(
        "--loads", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0], help="offered load / raw rate"
    )
    parser.add_argument("--load-clients", type=int, default=4, help="clients of the offered-load sweep")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64], help="clients of the second sweep")
    parser.add_argument("--clients-load", type=float, default=0.5, help="offered load / raw rate of the clients sweep")
    args = parser.parse_args()
    if args.quick:
        args.loads, args.clients, args.seconds = [0.1, 0.5, 1.0], [1, 4], 2.0

    import ray

    from raysteal.distributed.runtime import init_ray
    from raysteal.oracle import TargetSpec
    from raysteal.oracle.server import start_target_server, stop_target_server

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    log = load_log()
    model = make_target(args.target, log, args.seq_len)
    raw_qps, raw_request_ms = raw_figures(model, args.target, log, args.k, args.request, args.seq_len)
    init_ray(num_cpus=max(os.cpu_count() or 2, 4), object_store_mb=500)
    server = start_target_server(TargetSpec.from_training_log(model, log))
    report = {
        "device": device_name("cpu"),
        "target": args.target,
        "k": args.k,
        "request": args.request,
        "seq_len": args.seq_len,
        "raw_qps": raw_qps,
        "raw_request_ms": raw_request_ms,
        "load_curve": [],
        "clients_curve": [],
    }
    actors = open_load_actors(max(args.load_clients, max(args.clients)))

    def add(point: dict, curve: str) -> None:
        point.update(
            ratio_to_raw=point.get("achieved_qps", float("nan")) / raw_qps,
            offered_ratio=point["offered_qps"] / raw_qps,
            p50_ratio_to_raw=point.get("p50_ms", float("nan")) / raw_request_ms,
            p99_ratio_to_raw=point.get("p99_ms", float("nan")) / raw_request_ms,
        )
        report[curve].append(point)
        print(
            f"{curve:<14}{point['clients']:>8}{point['offered_qps']:>12,.0f}{point.get('achieved_qps', float('nan')):>12,.0f}"
            f"{point['ratio_to_raw']:>8.2f}{point.get('p50_ms', float('nan')):>10.1f}{point.get('p99_ms', float('nan')):>10.1f}"
            f"{point['p50_ratio_to_raw']:>8.1f}{point['p99_ratio_to_raw']:>8.1f}",
            flush=True,
        )
        write_json(args.json, report)  # after every point: a cut-short run keeps its figures

    print(
        f"{args.target} target on {report['device']}: raw score+top-{args.k} {raw_qps:,.0f} queries/s; one request of "
        f"{args.request} queries {raw_request_ms:.1f} ms"
    )
    print(f"{'curve':<14}{'clients':>8}{'offered':>12}{'achieved':>12}{'xraw':>8}{'p50 ms':>10}{'p99 ms':>10}{'p50 x':>8}{'p99 x':>8}")
    for i, load in enumerate(args.loads):
        add(
            measure(
                server,
                actors[: args.load_clients],
                args.target,
                log,
                args.k,
                args.request,
                args.seq_len,
                load * raw_qps,
                args.seconds,
                f"load{i}",
            ),
            "load_curve",
        )
    for n in args.clients:
        add(
            measure(
                server,
                actors[:n],
                args.target,
                log,
                args.k,
                args.request,
                args.seq_len,
                args.clients_load * raw_qps,
                args.seconds,
                f"clients{n}",
            ),
            "clients_curve",
        )
    report["server_batches"] = ray.get(server.stats.remote())
    write_json(args.json, report)
    stop_target_server(server)
    for a in actors:
        ray.kill(a)
    ray.shutdown()


if __name__ == "__main__":
    main()
