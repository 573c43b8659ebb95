"""Time for DFME (Yue et al. 2021) to reach a target Agr@10 against a SASRec teacher on ML-1M.

    python benchmarks/dfme.py --teacher ~/.cache/raysteal/targets/sasrec-XXXX.pt \\
        --sequences 5000 --epochs 30 --target-agr 0.66 --json results/dfme.json

The teacher (a ``raysteal.training.checkpoint`` file) is deployed as an in-process black box
returning top-``k`` ids only. DFME grows ``--sequences`` synthetic sequences against it (timed),
then trains a student of the teacher's architecture on every prefix; after each epoch the student
is scored on real ML-1M users (their history before the held-out test item, all users or
``--eval-users`` of them) and training stops once Agr@10 reaches ``--target-agr``. Reported:
synthesis seconds, seconds per epoch, Agr@1/Agr@10 per epoch, the time to target (synthesis +
training, evaluation excluded), and the popularity clone's Agr@10 (the floor that makes an
agreement meaningful).

``--synthesis-cache PATH`` keeps the grown sequences and their answers (``.npz``, written
atomically) and reuses them on a later run with the same teacher, budget, length, k, strategy and
seed: a CPU run whose synthesis takes the better part of an hour (NARM, 1M queries) can then be
cut short and restarted without paying for it again. The reused run reports the original
synthesis time.

``--state PATH`` writes the student's training state after every epoch and, when the file is
there, goes on from it (the epochs already scored are taken from ``--json``); together with
``--synthesis-cache`` a run of several hours can be stopped and resumed and still ends where an
uninterrupted run would.

``--quick`` trains a small SASRec teacher on ML-1M for a few epochs first (no checkpoint
needed): a smoke test of the pipeline, not a fidelity figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, sync, write_json  # noqa: E402

from raysteal.errors import ConfigError  # noqa: E402


def _eval_data(dataset: str, data_dir: str | None, preprocess: str, max_len: int, users: int | None, seed: int):
    """Real sequences (history before each user's test item), test items, head flags, popularity."""
    from raysteal.data import load_dataset
    from raysteal.data.splits import head_tail_groups, leave_one_out

    log = load_dataset(dataset, data_dir=data_dir, preprocess=preprocess)
    split = leave_one_out(log)
    keep = np.ones(log.num_interactions, dtype=bool)
    keep[log.indptr[1:][log.user_lengths > 0] - 1] = False
    history = log.select_rows(keep, name=f"{log.name}/history")
    evaluable = split.evaluable_users
    is_head = head_tail_groups(history.user_lengths[evaluable]).is_head
    if users is not None and users < len(evaluable):
        pick = np.sort(np.random.default_rng(seed).choice(len(evaluable), users, replace=False))
        evaluable, is_head = evaluable[pick], is_head[pick]
    return log, split, history.padded_sequences(max_len, evaluable), split.test[evaluable], is_head, split.train.item_counts


def _synthesis_key(args: argparse.Namespace, max_len: int, k: int) -> str:
    """What a cached synthesis must match to be reused (teacher file, budget, length, k, strategy, seed)."""
    teacher = Path(args.teacher).expanduser().resolve()
    return f"{teacher}|{teacher.stat().st_mtime_ns}|{args.sequences}|{max_len}|{k}|{args.synthesis}|{args.seed}"


def _load_synthesis(path: str | None, key: str):
    """``(ExtractionSet, seconds)`` from the cache at ``path`` when there is one, else ``None``;
    a cache made for another run or an unreadable one stops the benchmark (it is never overwritten)."""
    from raysteal.extraction.resume import load_extraction_set

    try:
        saved = load_extraction_set(path, key)
    except ConfigError as err:
        raise SystemExit(f"synthesis cache: {err}") from None
    return None if saved is None else (saved[0], float(saved[1]["synthesis_seconds"]))


def _save_synthesis(path: str | None, key: str, data, seconds: float) -> None:
    """Write the synthesis to ``path`` atomically."""
    from raysteal.extraction.resume import save_extraction_set

    if path:
        save_extraction_set(path, key, data, {"synthesis_seconds": seconds})


def _scored_epochs(path: str | None) -> list[dict[str, Any]]:
    """The per-epoch rows an earlier sitting of this run wrote to ``--json`` (none without one)."""
    if not path or not Path(path).exists():
        return []
    return list(json.loads(Path(path).read_text()).get("epochs", []))


def _popularity_lists(popularity: np.ndarray, sequences: np.ndarray, k: int) -> np.ndarray:
    """Most popular training items not in each input sequence (the popularity clone)."""
    order = np.argsort(-popularity, kind="stable")[: k + sequences.shape[1]]
    seen = (order[None, :, None] == sequences[:, None, :]).any(-1)
    pick = np.argsort(np.where(seen, len(order), np.arange(len(order))[None, :]), axis=1, kind="stable")[:, :k]
    return order[pick]


def _quick_teacher(split, device: str, seed: int, epochs: int) -> str:
    from raysteal.training import fit, save_checkpoint, seeded_model

    teacher = seeded_model({"model": "sasrec", "embedding_dim": 32, "max_len": 50}, split.train.num_users, split.train.num_items, seed)
    result = fit(
        teacher, split, {"epochs": epochs, "batch_size": 256, "lr": 3e-3, "eval_users": 1000}, seed=seed, device=device, progress=False
    )
    path = Path(tempfile.mkdtemp(prefix="dfme-bench-")) / "quick-sasrec.pt"
    save_checkpoint(path, result.model, metrics={"valid_ndcg@10": result.best_valid_ndcg})
    print(f"quick teacher: {epochs} epochs, valid NDCG@10 {result.best_valid_ndcg:.4f} -> {path}", flush=True)
    return str(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", help="checkpoint of the SASRec teacher (raysteal.training.checkpoint)")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data-dir", default=None, help="dataset directory (default: $RAYSTEAL_DATA, then the cache)")
    parser.add_argument("--preprocess", default="paper", help="dataset recipe, as the teacher was trained (default: paper)")
    parser.add_argument("--sequences", type=int, default=5000)
    parser.add_argument("--max-len", type=int, default=None, help="synthetic length (default: the teacher's)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--target-agr", type=float, default=0.66)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--positions-per-sequence", type=int, default=None)
    parser.add_argument("--num-negatives", type=int, default=100)
    parser.add_argument("--realign", type=float, default=0.0)
    parser.add_argument("--synthesis", default="autoregressive", choices=["autoregressive", "random"])
    parser.add_argument("--student", default=None, help="student model name (default: the teacher's)")
    parser.add_argument("--query-batch", type=int, default=4096)
    parser.add_argument("--eval-users", type=int, default=None, help="score this many real users per epoch (default all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="train a small teacher first (smoke test)")
    parser.add_argument("--quick-teacher-epochs", type=int, default=3)
    parser.add_argument("--no-stop", action="store_true", help="run all epochs even after reaching the target")
    parser.add_argument("--json", default=None)
    parser.add_argument("--synthesis-cache", default=None, help=".npz to reuse the synthetic data from (written when absent)")
    parser.add_argument("--state", default=None, help="student training state: written every epoch, resumed from when present")
    args = parser.parse_args(argv)
    if args.state and not args.json:
        parser.error("--state needs --json: a resumed run takes the epochs it already scored from there")
    if args.threads:
        torch.set_num_threads(args.threads)

    from raysteal.extraction.dfme import DFMEConfig
    from raysteal.extraction.evaluate import extraction_metrics, student_lists
    from raysteal.extraction.student import dfme_objective, train_student
    from raysteal.extraction.synthesis import synthesize
    from raysteal.oracle import TargetSpec, in_process_oracle
    from raysteal.training import load_checkpoint, resolve_device, seeded_model

    device = str(resolve_device(args.device))
    if args.quick and not args.teacher:
        from raysteal.data import load_dataset
        from raysteal.data.splits import leave_one_out

        log = load_dataset(args.dataset, data_dir=args.data_dir, preprocess=args.preprocess)
        args.teacher = _quick_teacher(leave_one_out(log), device, args.seed, args.quick_teacher_epochs)
    if not args.teacher:
        parser.error("--teacher PATH is required (or --quick)")
    teacher, meta = load_checkpoint(Path(args.teacher).expanduser(), device=device)
    teacher_max_len = int(teacher.config.max_len)
    max_len = args.max_len or teacher_max_len
    log, _, eval_seqs, test_items, is_head, popularity = _eval_data(
        args.dataset, args.data_dir, args.preprocess, teacher_max_len, args.eval_users, args.seed
    )
    if log.num_items != teacher.num_items:
        raise SystemExit(f"teacher knows {teacher.num_items} items, {args.dataset} has {log.num_items}")

    oracle = in_process_oracle(TargetSpec(model=teacher), device=device)
    attacker = oracle.register_attacker("dfme")
    judge = oracle.register_attacker("evaluator")  # privileged ground truth, not the attacker's budget
    teacher_lists = judge.query(eval_seqs, 10)
    floor = extraction_metrics(_popularity_lists(popularity, eval_seqs, 10), teacher_lists, head=is_head, test_items=test_items)

    config = DFMEConfig(
        student={"model": args.student or teacher.config.model, **({} if args.student else _arch(teacher))},
        k=args.k,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        positions_per_sequence=args.positions_per_sequence,
        num_negatives=args.num_negatives,
        budget_sequences=args.sequences,
        max_len=max_len,
        synthesis=args.synthesis,
        query_batch=args.query_batch,
        realign=args.realign,
    )
    print(
        f"device {device_name(device)}; teacher {args.teacher} ({teacher.config.model}, max_len {teacher_max_len}); "
        f"{len(eval_seqs)} eval users; popularity floor agr@10 {floor['agr@10']:.4f}",
        flush=True,
    )

    cache_key = _synthesis_key(args, max_len, config.k)
    cached = _load_synthesis(args.synthesis_cache, cache_key)
    if cached is None:
        sync(device)
        t0 = time.perf_counter()
        data = synthesize(
            attacker,
            strategy=config.synthesis,
            num_sequences=args.sequences,
            max_len=max_len,
            k=config.k,
            rng=np.random.default_rng(args.seed),
            query_batch=config.query_batch,
        )
        sync(device)
        synthesis_seconds = time.perf_counter() - t0
        _save_synthesis(args.synthesis_cache, cache_key, data, synthesis_seconds)
    else:
        data, synthesis_seconds = cached
    reused = " (reused from the cache)" if cached is not None else ""
    print(f"synthesis: {data.num_sequences} sequences, {data.queries} queries in {synthesis_seconds:.1f}s{reused}", flush=True)

    student = seeded_model(config.student_config(max_len), 0, log.num_items, args.seed)
    epochs = _scored_epochs(args.json) if args.state and Path(args.state).exists() else []
    reached: dict[str, Any] = {}
    for row in epochs:  # a resumed run: the target may have been reached before
        if not reached and row["agr@10"] >= args.target_agr:
            reached.update(epoch=row["epoch"], seconds=synthesis_seconds + row["train_seconds"], agr10=row["agr@10"])

    def on_epoch(epoch: int, stats: dict[str, float]) -> bool:
        sync(device)
        t_eval = time.perf_counter()
        metrics = extraction_metrics(
            student_lists(student, eval_seqs, 10, device=device), teacher_lists, head=is_head, test_items=test_items
        )
        epochs[:] = [e for e in epochs if e["epoch"] < epoch]  # rows scored after the state was saved are redone
        train_seconds = sum(e["epoch_seconds"] for e in epochs) + stats["epoch_seconds"]
        figures = {k: v for k, v in stats.items() if k != "model"}  # stats also carry the student itself
        row = {"epoch": epoch, **figures, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t_eval, **metrics}
        epochs.append(row)
        print(
            f"epoch {epoch}: loss {stats['loss']:.4f} {stats['epoch_seconds']:.1f}s  agr@1 {metrics['agr@1']:.4f} "
            f"agr@10 {metrics['agr@10']:.4f} (head {metrics['agr@10/head']:.4f} tail {metrics['agr@10/tail']:.4f})",
            flush=True,
        )
        newly = not reached and metrics["agr@10"] >= args.target_agr
        if newly:
            reached.update(epoch=epoch, seconds=synthesis_seconds + train_seconds, agr10=metrics["agr@10"])
        write_json(args.json, summary(finished=False))  # a run cut short keeps its epochs
        return bool(reached) and not args.no_stop

    def summary(finished: bool) -> dict[str, Any]:
        best = max(epochs, key=lambda e: e["agr@10"]) if epochs else {}
        return {
            "benchmark": "dfme",
            "finished": finished,
            "device": device_name(device),
            "dataset": args.dataset,
            "teacher": str(args.teacher),
            "teacher_model": teacher.config.model_dump(),
            "teacher_metrics": meta.get("metrics", {}),
            "quick": bool(args.quick),
            "config": config.model_dump(mode="json"),
            "eval_users": int(len(eval_seqs)),
            "popularity_floor": floor,
            "sequences": data.num_sequences,
            "queries": int(data.queries),
            "synthesis_seconds": synthesis_seconds,
            "synthesis_reused": cached is not None,
            "synthesis_queries_per_s": data.queries / synthesis_seconds if synthesis_seconds > 0 else None,
            "epochs": epochs,
            "target_agr@10": args.target_agr,
            "reached_target": bool(reached),
            "time_to_target_s": reached.get("seconds"),
            "epochs_to_target": reached.get("epoch"),
            "best_agr@10": best.get("agr@10"),
            "best_epoch": best.get("epoch"),
        }

    if not reached or args.no_stop:  # a resumed run that had reached its target is done
        train_student(
            student,
            data,
            dfme_objective(config.margin),
            seed=args.seed,
            device=device,
            on_epoch=on_epoch,
            state_path=args.state,
            **config.training_options(),
        )
    result = summary(finished=True)
    status = (
        f"reached agr@10 {reached['agr10']:.4f} >= {args.target_agr} after {reached['epoch']} epochs in {reached['seconds']:.1f}s"
        if reached
        else f"did not reach agr@10 {args.target_agr}; best {result['best_agr@10']}"
    )
    print(status, flush=True)
    write_json(args.json, result)
    return result


def _arch(teacher) -> dict[str, Any]:
    """The teacher's architecture hyperparameters (not its training-only ones) for a same-family student."""
    cfg = teacher.config.model_dump()
    cfg.pop("model", None)
    cfg.pop("max_len", None)
    return cfg


if __name__ == "__main__":
    main()
