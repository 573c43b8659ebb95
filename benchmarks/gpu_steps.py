"""The measuring steps of ``benchmarks/gpu_suite.py``, each run in its own process.

Every step takes the suite's sizes (``Sizes``: the GPU run's or the smoke test's) and a ``Part``
(a JSON file it rewrites after every figure, so a step stopped at its time cap keeps what it
measured). Steps write raw measurements; ``gpu_suite.py`` turns them into figures and ratios.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, load_actors, max_overlap, rate, topk_agreement, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the GPU run's (:data:`FULL`) or the CPU smoke test's (:data:`SMOKE`)."""

    dataset: str = "ml-1m"
    preprocess: str = "paper"
    # serving
    mf_k: int = 50
    mf_requests: tuple[int, ...] = (1024, 65536)
    mf_raw_batch: int = 65536
    seq_k: int = 100
    seq_requests: tuple[int, ...] = (1024, 8192)
    seq_raw_batch: int = 8192
    clients: tuple[int, ...] = (1, 8, 64)
    load_actors: int = 8
    actor_seconds: float = 2.0
    min_seconds: float = 1.0
    agreement_rows: int = 8192
    # target training
    train_batches: tuple[int, ...] = (0, 65536)  # 0: the preset's batch
    train_epochs: tuple[int, ...] = (6, 20)  # per batch; the first epoch is warm-up, not timed
    eval_users: int = 1000
    # DFME
    dfme_sequences: int = 5000
    dfme_epochs: int = 30
    dfme_eval_users: int = 2000
    dfme_batch_size: int = 64
    dfme_lr: float = 3e-3
    dfme_target_agr: float = 0.66
    # Table 4 (None: the file's epochs)
    table4_overrides: dict[str, Any] | None = None
    table4_target_train: dict[str, Any] | None = None
    # Tune
    tune_trials: int = 4
    tune_gpu: float = 0.25
    tune_cpu: float = 1.0
    tune_attack: dict[str, Any] = field(default_factory=lambda: {"epochs": 40, "finetune_epochs": 40, "aux_epochs": 20})
    threads: int | None = None


FULL = Sizes()
SMOKE = Sizes(
    mf_requests=(64, 256),
    mf_raw_batch=256,
    seq_k=10,
    seq_requests=(16, 64),
    seq_raw_batch=64,
    clients=(1, 2),
    load_actors=2,
    actor_seconds=0.2,
    min_seconds=0.1,
    agreement_rows=64,
    train_batches=(0, 1024),
    train_epochs=(2, 2),
    eval_users=50,
    dfme_sequences=12,
    dfme_epochs=1,
    dfme_eval_users=30,
    dfme_batch_size=8,
    table4_overrides={"epochs": 1, "finetune_epochs": 1, "aux_epochs": 1, "batch_size": 512},
    table4_target_train={"epochs": 1, "batch_size": 1024, "eval_users": 50, "min_epochs": 1},
    tune_trials=2,
    tune_gpu=0.0,
    tune_cpu=0.5,
    tune_attack={"epochs": 1, "finetune_epochs": 1, "aux_epochs": 1, "batch_size": 512},
    threads=1,
)


class Part:
    """A step's raw JSON, rewritten atomically after every ``put``."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.data: dict[str, Any] = {}

    def put(self, **values: Any) -> None:
        self.data.update(values)
        write_json(self.path, self.data)

    def append(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        write_json(self.path, self.data)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _log(sizes: Sizes):
    from raysteal.data import load_dataset

    return load_dataset(sizes.dataset, preprocess=sizes.preprocess)


def _counts(log) -> dict[str, int]:
    return {"users": int(log.num_users), "items": int(log.num_items), "interactions": int(log.num_interactions)}


def _precision(name: str, device: str):
    """The autocast context of a precision: fp32 (none) or bf16."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=name == "bf16")


def _say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------ training
def step_training(sizes: Sizes, part: Part, work: Path) -> None:
    """BPR-MF training throughput: the raw limit (the model's loss and an AdamW step on triples
    already on the device) against the generic trainer (its sampler, ``fit``), at the preset's
    batch and at 65k, fp32 and bf16 autocast; both precisions' validation NDCG@10 and loss after
    the same epochs (whether bf16 keeps the accuracy). The preset-batch fp32 model is saved for
    the serving step (a trained MF answers like a deployed one)."""
    from raysteal.models import build_model
    from raysteal.training import fit, make_split, preset, save_checkpoint, seeded_model
    from raysteal.training.config import with_overrides
    from raysteal.training.step import bf16_autocast, training_step

    device = _device()
    log = _log(sizes)
    split = make_split(log, "leave_one_out")
    model_cfg, train_cfg = preset("bpr")
    batches = [train_cfg["batch_size"] if b == 0 else b for b in sizes.train_batches]
    part.put(device=device_name(device), dataset=_counts(log), preset_batch=train_cfg["batch_size"], preset=train_cfg)

    # as many negatives per triple as the preset's sampler draws (DNS: the candidates of each)
    draws = int(model_cfg.get("num_negatives", 1)) * int(model_cfg.get("negative_candidates", 1))
    gen = torch.Generator(device=device).manual_seed(0)
    for batch in batches:
        for precision in ("fp32", "bf16"):
            model = build_model(model_cfg, log.num_users, log.num_items).to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=0.0)
            drawn = [
                {
                    "users": torch.randint(0, log.num_users, (batch,), device=device, generator=gen),
                    "pos": torch.randint(0, log.num_items, (batch,), device=device, generator=gen),
                    "neg": torch.randint(0, log.num_items, (batch, draws), device=device, generator=gen),
                }
                for _ in range(4)
            ]
            turn = [0]

            amp = bf16_autocast(precision == "bf16", torch.device(device))  # as fit decides: bf16 on a CUDA device only

            def one_step() -> int:
                b = drawn[turn[0] % len(drawn)]
                turn[0] += 1
                training_step(optimizer, model.parameters(), lambda: model.loss(b), device=torch.device(device), amp=amp)
                return batch

            per_s = rate(one_step, device, min_seconds=sizes.min_seconds, warmup=3)
            part.append("raw", {"batch": batch, "precision": precision, "amp_used": amp, "triples_per_s": per_s})
            _say(f"training raw  batch {batch:>6} {precision}: {per_s:,.0f} triples/s")

    for batch, epochs in zip(batches, sizes.train_epochs):
        for precision in ("fp32", "bf16"):
            model = seeded_model(model_cfg, log.num_users, log.num_items, 0)
            timed = {
                "epochs": epochs,
                "batch_size": batch,
                "amp": "off" if precision == "fp32" else "bf16",
                "eval_every": epochs,
                "eval_users": sizes.eval_users,
                "min_epochs": 1,
                "patience": 1,
            }
            config = with_overrides(train_cfg, timed)  # the epochs timed, not scaled to the log
            result = fit(model, split, config, seed=0, device=device, progress=False)
            rows_per_epoch = result.samples / max(result.epochs_run, 1)
            timed = result.history[1:] or result.history  # the first epoch warms up (kernels, allocator)
            seconds = sum(h["step_seconds"] for h in timed)
            part.append(
                "fit",
                {
                    "batch": batch,
                    "precision": precision,
                    "epochs": result.epochs_run,
                    "amp_used": result.amp,
                    "triples_per_s": rows_per_epoch * len(timed) / seconds if seconds > 0 else None,
                    "epoch_seconds": [h["step_seconds"] for h in result.history],
                    "valid_ndcg@10": result.history[-1].get("valid_ndcg@10"),
                    "last_loss": result.history[-1]["loss"],
                },
            )
            _say(
                f"training fit  batch {batch:>6} {precision}: {part.data['fit'][-1]['triples_per_s'] or 0:,.0f} triples/s, "
                f"valid NDCG@10 {part.data['fit'][-1]['valid_ndcg@10']}"
            )
            if batch == batches[0] and precision == "fp32":
                path = save_checkpoint(
                    work / "bpr-trained.pt",
                    model.cpu(),
                    fingerprint=split.train.fingerprint(),
                    metrics={"epochs": result.epochs_run, "valid_ndcg@10": result.history[-1].get("valid_ndcg@10")},
                )
                part.put(checkpoint=str(path))


# ------------------------------------------------------------------------------------------- serving
class Bf16Scores(torch.nn.Module):
    """A target whose scores are computed under bf16 autocast (the ranking engine has no precision
    option: this wraps the model so the in-process oracle can be timed in bf16)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.sequential, self.num_items, self.num_users, self.config = model.sequential, model.num_items, model.num_users, model.config

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
            return self.inner.score(inputs)


def _raw_lists(model, inputs: torch.Tensor, k: int, precision: str, device: str) -> torch.Tensor:
    with torch.no_grad(), _precision(precision, device):
        return torch.topk(model.score(inputs), k, dim=1).indices


def _serving_target(kind: str, sizes: Sizes, log, work: Path, carry: Path):
    """``(model, train log for seen items or None, where the weights came from)``."""
    from raysteal.models import build_model
    from raysteal.training import load_checkpoint, make_split

    if kind == "sasrec":
        manifest = json.loads((carry / "MANIFEST.json").read_text())
        model, _ = load_checkpoint(carry / manifest["teacher"]["file"])
        return model.eval(), None, f"carried teacher {manifest['teacher']['file']}"
    train = make_split(log, "leave_one_out").train
    path = work / "bpr-trained.pt"
    if path.is_file():
        model, meta = load_checkpoint(path)
        return model.eval(), train, f"BPR trained by the training step ({meta.get('metrics', {}).get('epochs')} epochs)"
    torch.manual_seed(0)
    return build_model({"model": "bpr", "embedding_dim": 64}, log.num_users, log.num_items).eval(), train, "random init (no trained BPR)"


def _inputs(kind: str, log, n: int, rng: np.random.Generator, max_len: int) -> np.ndarray:
    users = rng.integers(0, log.num_users, n)
    return users if kind == "mf" else log.padded_sequences(max_len, users)


def _load_pool(n_actors: int, threads: int):
    """``n_actors`` load-generating actors, each running up to ``threads`` clients at once."""
    return load_actors(n_actors, threads)


def _actor_rate(pool, server, tag: str, inputs_ref, k: int, clients: int, seconds: float) -> float:
    """Total queries/s of ``clients`` concurrent clients (spread over the pool's actors)."""
    import ray

    from raysteal.oracle.server import client_for

    handles = [client_for(server, f"{tag}-c{clients}-{i}") for i in range(clients)]
    owners = [pool[i % len(pool)] for i in range(clients)]
    ray.get([a.run.remote(h, inputs_ref, k, time.time() + min(0.5, seconds)) for a, h in zip(owners, handles)])  # warm up
    start = time.time()
    done = ray.get([a.run.remote(h, inputs_ref, k, start + seconds) for a, h in zip(owners, handles)])
    return sum(done) / (time.time() - start)


def step_serving(sizes: Sizes, part: Part, work: Path, carry: Path) -> None:
    """Black-box throughput, MF (K=50) and SASRec (K=100): raw score + top-k on the device (fp32 and
    bf16, with the two precisions' top-k agreement), the in-process oracle (fp32, and bf16 through
    :class:`Bf16Scores`), and the ``TargetServer`` actor with 1 / 8 / 64 concurrent clients."""
    import ray

    from raysteal.distributed.runtime import init_ray
    from raysteal.oracle import TargetSpec, in_process_oracle
    from raysteal.oracle.server import start_target_server, stop_target_server

    device = _device()
    log = _log(sizes)
    part.put(device=device_name(device), dataset=_counts(log), targets={})
    init_ray(object_store_mb=512)
    threads = max(1, math.ceil(max(sizes.clients) / sizes.load_actors))
    pool = _load_pool(min(sizes.load_actors, max(sizes.clients)), threads)
    for kind, k, requests, raw_batch in (
        ("mf", sizes.mf_k, sizes.mf_requests, sizes.mf_raw_batch),
        ("sasrec", sizes.seq_k, sizes.seq_requests, sizes.seq_raw_batch),
    ):
        model, train, weights = _serving_target(kind, sizes, log, work, carry)
        max_len = int(getattr(model.config, "max_len", 0) or 0)
        entry: dict[str, Any] = {
            "k": k,
            "weights": weights,
            "model": model.config.model,
            "max_len": max_len or None,
            "raw": [],
            "cases": [],
        }
        part.data["targets"][kind] = entry
        rng = np.random.default_rng(0)
        model = model.to(device)
        for precision in ("fp32", "bf16"):
            for batch in sorted({raw_batch, *requests}):
                x = torch.as_tensor(_inputs(kind, log, batch, rng, max_len), device=device)
                per_s = rate(lambda: (_raw_lists(model, x, k, precision, device), batch)[1], device, min_seconds=sizes.min_seconds)
                entry["raw"].append({"precision": precision, "batch": batch, "qps": per_s})
                part.put()
                _say(f"serving {kind} raw {precision} batch {batch}: {per_s:,.0f} queries/s")
        x = torch.as_tensor(_inputs(kind, log, sizes.agreement_rows, rng, max_len), device=device)
        entry["bf16_agreement"] = topk_agreement(
            _raw_lists(model, x, k, "fp32", device).cpu().numpy(), _raw_lists(model, x, k, "bf16", device).cpu().numpy()
        )
        part.put()
        model = model.cpu()
        seen = {} if train is None else {"seen_indptr": train.indptr, "seen_items": train.items, "item_popularity": train.item_counts}
        for precision in ("fp32", "bf16"):
            served = model if precision == "fp32" else Bf16Scores(model)
            client = in_process_oracle(TargetSpec(model=served, **seen), device=device).register_attacker(f"bench-{precision}")
            for request in requests:
                inputs = _inputs(kind, log, request, rng, max_len)
                per_s = rate(lambda: len(client.query(inputs, k)), device, min_seconds=sizes.min_seconds, warmup=1)
                entry["cases"].append({"mode": "inprocess", "precision": precision, "clients": 1, "request": request, "qps": per_s})
                part.put()
                _say(f"serving {kind} in-process {precision} request {request}: {per_s:,.0f} queries/s")
        model = model.cpu()  # the oracles moved it to the device: the server's spec travels from the CPU
        server = start_target_server(TargetSpec(model=model, **seen))
        try:
            for request in requests:
                inputs_ref = ray.put(_inputs(kind, log, request, rng, max_len))
                for clients in sizes.clients:
                    per_s = _actor_rate(pool, server, f"{kind}-{request}", inputs_ref, k, clients, sizes.actor_seconds)
                    entry["cases"].append({"mode": "actor", "precision": "fp32", "clients": clients, "request": request, "qps": per_s})
                    part.put()
                    _say(f"serving {kind} actor request {request} clients {clients}: {per_s:,.0f} queries/s")
            entry["server_batches"] = ray.get(server.stats.remote())
            part.put()
        finally:
            stop_target_server(server)
    for actor in pool:
        ray.kill(actor)


# ---------------------------------------------------------------------------------------------- DFME
def step_dfme(sizes: Sizes, part: Part, work: Path, carry: Path) -> None:
    """``benchmarks/dfme.py`` in Yue et al.'s setting against the carried teacher (its JSON, written
    after every epoch, is this step's part)."""
    import dfme

    manifest = json.loads((carry / "MANIFEST.json").read_text())
    args = [
        "--teacher",
        str(carry / manifest["teacher"]["file"]),
        "--dataset",
        sizes.dataset,
        "--preprocess",
        manifest["teacher"].get("preprocess", sizes.preprocess),
        "--sequences",
        str(sizes.dfme_sequences),
        "--epochs",
        str(sizes.dfme_epochs),
        "--target-agr",
        str(sizes.dfme_target_agr),
        "--eval-users",
        str(sizes.dfme_eval_users),
        "--batch-size",
        str(sizes.dfme_batch_size),
        "--lr",
        str(sizes.dfme_lr),
        "--json",
        part.path,
    ]
    if sizes.threads:
        args += ["--threads", str(sizes.threads)]
    dfme.main(args)


# ------------------------------------------------------------------------------------------- Table 4
def _shrunk(raw: dict[str, Any], attack: dict[str, Any] | None, target: dict[str, Any] | None) -> dict[str, Any]:
    """The experiment with every learned attack's epochs and the targets' training cut (smoke)."""
    if attack:
        raw["attacks"] = [a if a["attack"] == "popularity" else {**a, **attack} for a in raw["attacks"]]
    if target:
        raw["targets"] = [{**t, "train": {**(t.get("train") or {}), **target}} for t in raw["targets"]]
    return raw


def step_table4(sizes: Sizes, part: Part, work: Path) -> None:
    """One seed of Zhu et al.'s Table 4 on ML-1M, BPR target, every attack of the file, through
    the same runner as ``raysteal run`` (the target trained here, into a fresh cache)."""
    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.experiment.config import load_experiment, parse_experiment

    config = load_experiment(REPO / "experiments" / "zhu2023" / "table4-ml1m.yaml", seeds=1)
    raw = config.model_dump(mode="json")
    raw["targets"] = [t for t in raw["targets"] if t["model"] == "bpr"]
    raw["grid"] = {}  # our protocol only: the paper's column would add a second target and double the runs
    raw = _shrunk(raw, sizes.table4_overrides, sizes.table4_target_train)
    config = parse_experiment(raw, source="table4-ml1m (BPR, one seed)")
    out = work / "table4"
    cached = any((work / "cache").glob("bpr-*.pt"))
    part.put(
        runs_planned=len(config.attacks),
        attacks=[a["attack"] for a in config.attacks],
        out=str(out),
        target_cached=cached,
        shrunk=bool(sizes.table4_overrides),
    )
    started = time.perf_counter()
    store = run_experiment(config, out, cache_dir=str(work / "cache"), progress=False)
    wall = time.perf_counter() - started
    frame = store.load()
    cols = [c for c in ("attack", "agr@k", "agr@k/heldout", "agr@10", "wall_s", "device", "queries") if c in frame.columns]
    part.put(wall_s=wall, runs=len(frame), finished=True, rows=json.loads(frame[cols].to_json(orient="records")))
    _say(f"table4: {len(frame)} runs in {wall:.1f} s")


# ---------------------------------------------------------------------------------------------- Tune
def step_tune(sizes: Sizes, part: Part, work: Path) -> None:
    """Four trials of ``raysteal tune`` (PTAQ on ML-1M / BPR, FIFO) at a quarter GPU each on one
    GPU: whether they ran at once, each on the GPU, and what sharing cost."""
    import ray
    import yaml

    from raysteal.distributed.runtime import gpu_share, init_ray
    from raysteal.distributed.tune import run_tune
    from raysteal.experiment.tune_config import parse_tune
    from raysteal.results import ResultStore

    init_ray()
    gpus, server_share = float(ray.cluster_resources().get("GPU", 0)), gpu_share()  # the sweep's TargetServer holds a share too
    trial_gpu = sizes.tune_gpu if gpus else 0.0  # no GPU in the cluster: trials asking for one would wait forever
    raw = yaml.safe_load((REPO / "experiments" / "zhu2023" / "tune-ptaq-ml1m.yaml").read_text())
    raw["experiment"] = "gpu-suite-tune"
    raw["attacks"] = [{**a, **sizes.tune_attack} for a in raw["attacks"]]
    raw = _shrunk(raw, None, sizes.table4_target_train)  # Table 4's very target: found in the cache it left
    raw["tune"].update(
        num_samples=sizes.tune_trials,
        max_concurrent=sizes.tune_trials,
        scheduler=None,
        searcher=None,
        resources={"cpu": sizes.tune_cpu, "gpu": trial_gpu or None},
    )
    tune_exp = parse_tune(raw, source="tune-ptaq-ml1m (gpu suite)")
    out = work / "tune"
    part.put(
        trials_planned=sizes.tune_trials,
        gpu_per_trial=trial_gpu,
        cpu_per_trial=sizes.tune_cpu,
        out=str(out),
        attack=sizes.tune_attack,
        target_cached=any((work / "cache").glob("bpr-*.pt")),
    )
    started = time.perf_counter()
    outcome = run_tune(tune_exp, out, cache_dir=str(work / "cache"), verbose=0)
    wall = time.perf_counter() - started
    fit = sizes.tune_trials if not trial_gpu else min(sizes.tune_trials, int((gpus - server_share) / trial_gpu + 1e-9))
    frame = ResultStore(out).load()
    rows = [
        {
            "run_id": r["run_id"],
            "device": r.get("device"),
            "started_at": float(r["started_at"]),
            "wall_s": float(r["wall_s"]),
            "agr@k/heldout": float(r["agr@k/heldout"]),
        }
        for r in frame.to_dict("records")
    ]
    spans = [(r["started_at"], r["started_at"] + r["wall_s"]) for r in rows]
    part.put(
        wall_s=wall,
        trials=outcome.trials,
        completed=outcome.completed,
        rows=rows,
        max_concurrent_seen=max_overlap(spans),
        cluster_gpus=gpus,
        server_gpu=server_share,
        trials_that_fit=fit,
        trial_seconds=sum(r["wall_s"] for r in rows),
        finished=True,
    )
    _say(f"tune: {outcome.completed}/{outcome.trials} trials in {wall:.1f} s, at most {max_overlap(spans)} at once")


STEPS = {"training": step_training, "serving": step_serving, "dfme": step_dfme, "table4": step_table4, "tune": step_tune}
NEEDS_CARRY = {"serving", "dfme"}


def run_step(name: str, sizes: Sizes, part_path: str, work: Path, carry: Path) -> None:
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    part = Part(part_path)
    part.put(step=name, sizes=asdict(sizes), started=time.time())
    fn = STEPS[name]
    if name in NEEDS_CARRY:
        fn(sizes, part, work, carry)
    else:
        fn(sizes, part, work)
