"""Item-kNN and EASE beside popularity on a dataset: does the log hold more than popularity?

    python benchmarks/reference_recommenders.py --dataset tafeng --preprocess paper \\
        --json docs/results/targets/references.json

When a target's lift over popularity is small (the guard, :mod:`raysteal.training.guard`), this
tells a popularity-bound log from a target recipe that misses what the log holds. Each reference
(:mod:`raysteal.training.reference`) is fitted in closed form on the leave-one-out training part
for every setting of its grid (``--ease-l2``, ``--knn-neighbours``), the setting with the best
*validation* NDCG@10 (full ranking) is kept, and only that one is scored on the test items, beside
the popularity recommender on the same users and protocol (HR/NDCG@10 with full ranking and with
100 sampled negatives, and the lift). ``--json`` writes one row per reference, in the shape
``benchmarks/targets.py`` writes (``model, dataset, hr@10_100neg, ndcg@10_100neg, ndcg@10_full,
target_lift, train_seconds``), with ``label`` naming the chosen setting and ``validation`` the grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import read_json_rows


def _grid(text: str, what: str, cast: type) -> list[Any]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part == "all" and cast is int:
            values.append(None)
            continue
        try:
            values.append(cast(part))
        except ValueError:
            raise SystemExit(f"{what}: {part!r} is not a {cast.__name__}") from None
    if not values:
        raise SystemExit(f"{what}: give at least one value")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--preprocess", default="none")
    parser.add_argument("--references", default="itemknn,ease", help="comma-separated: itemknn, ease")
    parser.add_argument("--ease-l2", default="50,200,500,1000,3000", help="EASE's lambda grid (chosen on validation)")
    parser.add_argument("--knn-neighbours", default="all,50,200", help="item-kNN's neighbourhood grid ('all' or a count)")
    parser.add_argument("--max-items", type=int, default=None, help="refuse catalogues above this (default: the module's)")
    parser.add_argument("--seed", type=int, default=0, help="the 100 sampled negatives' seed")
    parser.add_argument("--data-dir", default=None, help="dataset directory (default: $RAYSTEAL_DATA, then the cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here (rows of other datasets or references are kept)")
    args = parser.parse_args(argv)
    earlier = read_json_rows(args.json)

    from raysteal.data import load_dataset
    from raysteal.errors import ConfigError
    from raysteal.training import evaluate, make_split
    from raysteal.training.guard import guard_figures
    from raysteal.training.reference import MAX_ITEMS, REFERENCES

    names = [n.strip() for n in args.references.split(",") if n.strip()]
    unknown = sorted(set(names) - set(REFERENCES))
    if unknown or not names:
        raise SystemExit(f"--references: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(REFERENCES)}")
    grids: dict[str, list[dict[str, Any]]] = {
        "ease": [{"l2": v} for v in _grid(args.ease_l2, "--ease-l2", float)],
        "itemknn": [{"neighbours": v} for v in _grid(args.knn_neighbours, "--knn-neighbours", int)],
    }
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    log = load_dataset(args.dataset, data_dir=args.data_dir, preprocess=args.preprocess)
    split = make_split(log, "leave_one_out")
    print(f"{args.dataset}: {log.num_users} users, {log.num_items} items, {log.num_interactions} rows", file=sys.stderr)
    max_items = MAX_ITEMS if args.max_items is None else args.max_items
    rows: list[dict[str, Any]] = []
    for name in names:
        validation, best, best_model, seconds = [], None, None, 0.0
        for setting in grids[name]:
            t0 = time.perf_counter()
            try:
                model = REFERENCES[name](split.train, max_items=max_items, **setting)
            except ConfigError as err:
                raise SystemExit(str(err)) from None
            seconds += time.perf_counter() - t0
            score = float(evaluate(model, split, "valid", k=10, num_negatives=100, seed=args.seed)["ndcg@10_full"])
            validation.append({**setting, "valid_ndcg@10_full": score})
            print(f"{name:>8} {setting}: validation NDCG@10 (full) {score:.4f}", file=sys.stderr, flush=True)
            if best is None or score > best[1]:
                best, best_model = (setting, score), model
        assert best is not None and best_model is not None
        test = evaluate(best_model, split, "test", k=10, num_negatives=100, seed=args.seed)
        guard, _ = guard_figures(best_model, split, seed=args.seed)
        label = ", ".join(f"{k}={'all' if v is None else v}" for k, v in best[0].items())
        row = {
            "model": name,
            "dataset": args.dataset,
            "preprocess": args.preprocess,
            "label": f"{label} (chosen on validation)",
            "hr@10_100neg": test["hr@10_100neg"],
            "ndcg@10_100neg": test["ndcg@10_100neg"],
            "hr@10_full": test["hr@10_full"],
            "ndcg@10_full": test["ndcg@10_full"],
            "popularity_ndcg@10_full": guard["popularity_ndcg@10_full"],
            "popularity_ndcg@10_100neg": guard["popularity_ndcg@10_100neg"],
            "target_lift": guard["target_lift"],
            "train_seconds": seconds,
            "test_users": test["users"],
            "seed": args.seed,
            "settings": best[0],
            "validation": validation,
        }
        rows.append(row)
        print(
            f"{name:>8}  {label}  HR@10 {row['hr@10_100neg']:.4f}  NDCG@10 {row['ndcg@10_100neg']:.4f} (100 neg)  "
            f"NDCG@10 {row['ndcg@10_full']:.4f} (full)  lift {row['target_lift']:.2f}x popularity",
            flush=True,
        )
        if args.json is not None:
            from raysteal.atomic import write_text_atomically

            done = {(r["model"], r["dataset"], r["preprocess"]) for r in rows}
            others = [r for r in earlier if (r.get("model"), r.get("dataset"), r.get("preprocess")) not in done]
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(args.json, json.dumps(others + rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
