"""What holding out the validation item costs: test accuracy every epoch, with and without it.

    python benchmarks/holdout_protocol.py --dataset ml-1m --model neumf --set variant=gmf \\
        --set embedding_dim=32 --epochs 20 --lr 1e-3 --batch-size 256 \\
        --json docs/results/targets/ml-1m-holdout-protocol.json

Leave-one-out here holds out two items a user (the last for test, the one before it for
validation); He et al. 2017 (§4.1) hold out only the last and train on the rest. The same model
(same seed, same settings, early stopping off) is trained on each split and scored on the same
test items after every epoch (HR/NDCG@10 with 99 and with 100 sampled negatives: He et al. draw
99): ``two-held-out`` trains without the validation item (the validation figures are kept
too), ``test-held-out`` with it. The gap at the plateau is what a refit
(:attr:`raysteal.training.TrainConfig.refit`) recovers without choosing anything on test items.
``--json`` writes one row per split and epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from _common import write_json

SPLITS = ("two-held-out", "test-held-out")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--preprocess", default="none")
    parser.add_argument("--model", default="neumf")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE", help="a model setting (JSON value)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from raysteal.data import load_dataset
    from raysteal.data.splits import leave_one_out, with_validation_items
    from raysteal.errors import RaystealError
    from raysteal.models import make_config
    from raysteal.training import evaluate, fit, make_train_config, seeded_model

    torch.set_num_threads(args.threads)
    model_config: dict[str, Any] = {"model": args.model}
    for pair in args.sets:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            model_config[key] = json.loads(value)
        except json.JSONDecodeError:
            model_config[key] = value
    try:  # bad settings or data: one line, before any training (nothing is written until the end)
        make_config(model_config)
        train_config = make_train_config(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, early_stopping=False)
        log = load_dataset(args.dataset, preprocess=args.preprocess)
    except RaystealError as err:
        raise SystemExit(f"error: {err}") from None
    two = leave_one_out(log)
    one = with_validation_items(two)
    rows: list[dict[str, Any]] = []
    for name, split in zip(SPLITS, (two, one)):
        model = seeded_model(model_config, log.num_users, log.num_items, args.seed)

        def score(entry: dict[str, Any], name: str = name, model: Any = model) -> None:
            if "phase" in entry:
                return
            row: dict[str, Any] = {"split": name, "epoch": int(entry["epoch"]), "dataset": args.dataset, "model_config": model_config}
            for negatives in (99, 100):
                # scored on the two-held-out split whichever the model trained on: the same negatives and exclusions
                test = evaluate(model, two, "test", k=10, num_negatives=negatives, seed=args.seed)
                row[f"hr@10_{negatives}neg"] = test[f"hr@10_{negatives}neg"]
                row[f"ndcg@10_{negatives}neg"] = test[f"ndcg@10_{negatives}neg"]
            if name == "two-held-out":
                valid = evaluate(model, two, "valid", k=10, num_negatives=100, seed=args.seed)
                row["valid_hr@10_100neg"], row["valid_ndcg@10_100neg"] = valid["hr@10_100neg"], valid["ndcg@10_100neg"]
            rows.append(row)
            print(
                f"{name:>14}  epoch {row['epoch']:>3}  HR@10 {row['hr@10_100neg']:.4f}  NDCG@10 {row['ndcg@10_100neg']:.4f} (100 neg)",
                file=sys.stderr,
                flush=True,
            )
            model.train()

        t0 = time.perf_counter()
        fit(model, split, train_config, seed=args.seed, device="cpu", progress=False, on_epoch=score)
        print(f"{name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    plateau = {name: float(np.mean([r["hr@10_100neg"] for r in rows if r["split"] == name][-10:])) for name in SPLITS}
    print(f"mean HR@10 (100 neg) over the last 10 epochs: {plateau}", file=sys.stderr)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
