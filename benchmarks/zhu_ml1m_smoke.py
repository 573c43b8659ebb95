"""One seed of Zhu et al.'s attacks against a BPR target on ML-1M, in-process (no Ray), beside the
paper's Table 4 / Table 5 values.

    RAYSTEAL_DATA=../shared/data python benchmarks/zhu_ml1m_smoke.py --seed 0 --json out.json

Protocol (Zhu et al. §5, App. A.1): ML-1M split 50/50 by users into target and auxiliary halves
(seeded); the target is BPR-MF (``raysteal.training.presets``) trained with the generic trainer on
the leave-one-out training rows of the target half for the preset's 60 epochs (best validation
NDCG@10 every 5 epochs kept; cached by ``get_or_train_target``); the
attacker holds 10% of the target users' training rows and queries the top-50 lists of 80% of
them. Agreement@50 (Eq. 3) compares the clone's and the target's top-50 over all items with each
user's seen items excluded, on the queried users (the paper's protocol: its lists were fitted),
on the held-out 20% (never queried), and on all known users. The popularity clone is the floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name, write_json  # noqa: E402

from raysteal.attacks import Knowledge, run_attack, top_k_lists, train_auxiliary_model  # noqa: E402
from raysteal.data import attacker_users, leave_one_out, load_dataset, split_target_auxiliary  # noqa: E402
from raysteal.metrics import agreement_at_k  # noqa: E402
from raysteal.oracle import TargetSpec, in_process_oracle  # noqa: E402
from raysteal.training import get_or_train_target, preset  # noqa: E402

# Zhu et al. Table 4 (ML-1M, BPR target) and Table 5 (Pre variants), Agr@50.
PAPER_BPR = {"qsd": 0.0533, "ptd": 0.4987, "ptq": 0.5107, "pta": 0.6280, "ptaq": 0.6506, "pta_pre": 0.4900, "ptaq_pre": 0.4833}
K = 50


def _data_dir(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("RAYSTEAL_DATA"):
        return os.environ["RAYSTEAL_DATA"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def _mean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if x.size else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attacks", default="popularity,ptd,ptq,pta,ptaq")
    ap.add_argument("--clone", default="bpr")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--query-fraction", type=float, default=0.8)
    ap.add_argument("--set", action="append", default=[], help="attack config override key=value (YAML value)")
    ap.add_argument("--no-share-aux", action="store_true", help="train the auxiliary model inside every recipe")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    started = time.perf_counter()

    log = load_dataset("ml-1m", data_dir=_data_dir(args.data_dir))
    split = split_target_auxiliary(log, seed=args.seed)
    loo = leave_one_out(split.target)
    model_cfg, train_cfg = preset("bpr")
    # The preset's epoch budget, validated every 5 epochs, no early stopping (best weights kept):
    # patience 3 on per-epoch validation stops at epoch 9 on this split (test HR@10 0.52 vs 0.68).
    train_cfg = {**train_cfg, "early_stopping": False, "eval_every": 5}
    t0 = time.perf_counter()
    target, meta = get_or_train_target(
        split.target,
        model_cfg,
        train_cfg,
        seed=args.seed,
        dataset="ml-1m",
        preprocess=f"none/target-half-seed{args.seed}",
        device=args.device,
        progress=False,
    )
    target_seconds = time.perf_counter() - t0
    test = meta["metrics"]["test"]
    print(
        f"target: BPR on {loo.train.num_users} users / {loo.train.num_interactions} rows; "
        f"test HR@10 (100 neg) {test['hr@10_100neg']:.4f}, NDCG@10 full {test['ndcg@10_full']:.4f}; "
        f"{'cached' if meta['cache_hit'] else f'trained in {target_seconds:.0f}s'}"
    )

    known = attacker_users(loo.train, 0.1, seed=args.seed)
    knowledge = Knowledge.from_split(loo.train, known, split.auxiliary, args.query_fraction, seed=args.seed)
    queried = knowledge.queryable()
    held = np.setdiff1d(np.arange(knowledge.num_users), queried)
    oracle = in_process_oracle(TargetSpec.from_training_log(target, loo.train), device=args.device)
    truth = top_k_lists(target, known, K, loo.train, device=args.device)
    print(
        f"attacker: {knowledge.num_users} known users ({knowledge.target_data.num_interactions} rows), "
        f"{queried.size} queried, {held.size} held out; auxiliary {split.auxiliary.num_users} users / "
        f"{split.auxiliary.num_interactions} rows; device {device_name(args.device)}, {torch.get_num_threads()} threads"
    )

    aux_seconds = None
    if not args.no_share_aux:  # one auxiliary model for every recipe that uses one, as the runner does
        t0 = time.perf_counter()
        knowledge.auxiliary_model = train_auxiliary_model(
            {"attack": "pta", "clone": args.clone, **overrides}, split.auxiliary, seed=args.seed, device=args.device
        )
        aux_seconds = time.perf_counter() - t0
        print(f"auxiliary model trained once in {aux_seconds:.0f}s (shared by the recipes below)")

    rows: list[dict[str, Any]] = []
    header = f"{'attack':<11}{'agr@50':>8}{'heldout':>9}{'all':>8}{'agr@10':>8}{'paper':>8}{'queries':>9}{'seconds':>9}"
    print(header)
    for attack in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        config = {"attack": attack, "clone": args.clone, "k": K, **overrides}
        client = oracle.register_attacker(f"{attack}-{args.seed}")
        t0 = time.perf_counter()
        out = run_attack(config, knowledge, client, seed=args.seed, device=args.device)
        seconds = time.perf_counter() - t0
        lists = top_k_lists(out.clone, np.arange(knowledge.num_users), K, knowledge.target_data, device=args.device)
        agr = agreement_at_k(truth, lists)
        agr10 = agreement_at_k(truth[:, :10], lists[:, :10])
        row = {
            "attack": attack,
            "clone": args.clone,
            "seed": args.seed,
            "k": K,
            "agr@k": _mean(agr[queried]),
            "agr@k/heldout": _mean(agr[held]),
            "agr@k/all": _mean(agr),
            "agr@10": _mean(agr10[queried]),
            "paper": PAPER_BPR.get(attack),
            "queries": out.queries,
            "wall_s": seconds,
            "info": out.info,
        }
        rows.append(row)
        paper = f"{row['paper']:.4f}" if row["paper"] is not None else "-"
        print(
            f"{attack:<11}{row['agr@k']:>8.4f}{row['agr@k/heldout']:>9.4f}{row['agr@k/all']:>8.4f}"
            f"{row['agr@10']:>8.4f}{paper:>8}{out.queries:>9d}{seconds:>9.1f}",
            flush=True,
        )
    total = time.perf_counter() - started
    print(f"total {total:.0f}s (target {'cached' if meta['cache_hit'] else f'{target_seconds:.0f}s'})")
    write_json(
        args.json,
        {
            "dataset": "ml-1m",
            "target": "bpr",
            "seed": args.seed,
            "device": device_name(args.device),
            "threads": torch.get_num_threads(),
            "target_metrics": test,
            "target_cache_hit": meta["cache_hit"],
            "target_seconds": target_seconds,
            "aux_seconds": aux_seconds,
            "total_seconds": total,
            "overrides": overrides,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
