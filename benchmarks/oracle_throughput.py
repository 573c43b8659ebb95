"""Black-box throughput: raw torch score+top-k vs the in-process oracle vs the TargetServer actor.

    python benchmarks/oracle_throughput.py [--quick] [--json PATH]

Targets: an MF (BPR) model with ML-1M's shape and seen items (3,706 items, K=50), and a SASRec
model (L=200) queried with ML-1M users' last 200 items (full run only). Throughput does not depend
on the weights, so the targets are freshly initialised. Every figure is printed as a ratio to
(a), the raw rate on the same device in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_name, load_actors, rate, write_json  # noqa: E402


def load_log():
    from raysteal.data import load_dataset

    try:
        return load_dataset("ml-1m")
    except Exception as err:  # no data here: same shape, synthetic interactions
        print(f"ML-1M unavailable ({err}); using a synthetic log of ML-1M's shape", file=sys.stderr)
        return load_dataset("synthetic", num_users=6040, num_items=3706)


def make_target(kind: str, log):
    from raysteal.models import build_model

    torch.manual_seed(0)
    if kind == "mf":
        return build_model({"model": "bpr", "embedding_dim": 64}, log.num_users, log.num_items).eval()
    return build_model({"model": "sasrec", "max_len": 200, "embedding_dim": 64}, log.num_users, log.num_items).eval()


def request_inputs(kind: str, log, size: int, rng) -> np.ndarray:
    users = rng.integers(0, log.num_users, size)
    return users if kind == "mf" else log.padded_sequences(200, users)


def raw_rate(model, kind: str, log, device: str, k: int, batch: int) -> float:
    rng = np.random.default_rng(0)
    inputs = torch.as_tensor(request_inputs(kind, log, batch, rng), device=device)
    model = model.to(device)

    @torch.no_grad()
    def step() -> int:
        torch.topk(model.score(inputs), k, dim=1)
        return batch

    return rate(step, device)


def inprocess_rate(spec, kind: str, log, k: int, request: int) -> float:
    from raysteal.oracle import in_process_oracle

    client = in_process_oracle(spec).register_attacker("bench")
    rng = np.random.default_rng(1)
    inputs = request_inputs(kind, log, request, rng)
    return rate(lambda: len(client.query(inputs, k)), "cpu", warmup=1)


def actor_rate(server, kind: str, log, k: int, request: int, clients: int, seconds: float) -> float:
    """Total queries/s of ``clients`` load-generating actors, each with one request in flight.

    The load actors are started (processes up, imports done) before the clock starts."""
    import ray

    from raysteal.oracle.server import client_for

    rng = np.random.default_rng(2)
    loads = load_actors(clients)
    handles = [client_for(server, f"c{clients}-{request}-{i}") for i in range(clients)]
    inputs = [ray.put(request_inputs(kind, log, request, rng)) for _ in range(clients)]
    ray.get([a.run.remote(h, x, k, time.time() + 0.5) for a, h, x in zip(loads, handles, inputs)])  # warm up
    start = time.time()
    done = ray.get([a.run.remote(h, x, k, start + seconds) for a, h, x in zip(loads, handles, inputs)])
    elapsed = time.time() - start
    for a in loads:
        ray.kill(a)
    return sum(done) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MF target, request 1,024, 1 and 8 clients")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each actor case")
    args = parser.parse_args()

    import ray

    from raysteal.distributed.runtime import init_ray
    from raysteal.oracle import TargetSpec
    from raysteal.oracle.server import start_target_server, stop_target_server

    device = "cuda" if torch.cuda.is_available() else "cpu"
    log = load_log()
    kinds = ["mf"] if args.quick else ["mf", "sasrec"]
    sizes = [1024] if args.quick else [1, 64, 1024]
    client_counts = [1, 8] if args.quick else [1, 8, 32]
    raw_batch = 65536 if device == "cuda" else 8192

    init_ray(num_cpus=max(os.cpu_count() or 2, 4), object_store_mb=500)
    report = {"device": device_name(device), "k": args.k, "targets": {}}
    for kind in kinds:
        model = make_target(kind, log)
        raw = raw_rate(model, kind, log, device, args.k, raw_batch if kind == "mf" else raw_batch // 16)
        spec = TargetSpec.from_training_log(model.cpu(), log)
        cases = []
        for request in sizes:
            qps = inprocess_rate(spec, kind, log, args.k, request)
            cases.append({"mode": "inprocess", "clients": 1, "request": request, "qps": qps, "ratio_to_raw": qps / raw})
        server = start_target_server(spec)
        for request in sizes:
            for clients in client_counts:
                qps = actor_rate(server, kind, log, args.k, request, clients, args.seconds)
                cases.append({"mode": "actor", "clients": clients, "request": request, "qps": qps, "ratio_to_raw": qps / raw})
        batch_stats = ray.get(server.stats.remote())
        stop_target_server(server)
        report["targets"][kind] = {"raw_qps": raw, "cases": cases, "server_batches": batch_stats}
        print(f"\n{kind} target on {report['device']}: raw score+top-{args.k} = {raw:,.0f} queries/s")
        print(f"{'mode':<10}{'clients':>8}{'request':>9}{'queries/s':>14}{'ratio':>8}")
        for c in cases:
            print(f"{c['mode']:<10}{c['clients']:>8}{c['request']:>9}{c['qps']:>14,.0f}{c['ratio_to_raw']:>8.2f}")
        sys.stdout.flush()
        mf = report["targets"]["mf"]  # written after every target, so a cut-short run keeps its figures
        write_json(args.json, {"raw_qps": mf["raw_qps"], "cases": mf["cases"], "device": report["device"], "targets": report["targets"]})
    ray.shutdown()


if __name__ == "__main__":
    main()
