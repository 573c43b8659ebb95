"""Train target models on a dataset with the leave-one-out protocol and report their accuracy.

    python benchmarks/targets.py --dataset ml-1m --models sasrec,neumf,bpr --json PATH

For each model (its paper settings, :mod:`raysteal.training.presets`): train with early stopping
on validation NDCG@10, then report test HR@10 / NDCG@10 against 100 sampled negatives and with
full ranking (seen items excluded), the training time, the training throughput (sampler rows per
second of optimisation steps) and, where DESIGN.md lists a raw limit for that workload on an
H100, the ratio to it. Beside each model, the popularity guard (:mod:`raysteal.training.guard`):
the popularity recommender on the same users and protocol, and the lift (``target_lift``: the
model's full-ranking NDCG@10 over popularity's); and whether its validation curve had flattened
when training stopped (``stopped_early`` by patience, ``last_validation_gain``: what its last
three validations gained on the best before them). ``--json`` writes one object per model with at
least ``model, dataset, hr@10_100neg, ndcg@10_100neg, ndcg@10_full, target_lift, train_seconds,
device``.
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

# Published anchors on ML-1M, 100-negative protocol (the issue's list).
ANCHORS: dict[str, dict[str, Any]] = {
    "sasrec": {"hr@10_100neg": 0.8245, "ndcg@10_100neg": 0.5905, "source": "Kang & McAuley 2018"},
    "neumf": {"hr@10_100neg": 0.73, "ndcg@10_100neg": 0.45, "source": "He et al. 2017"},
    "narm": {"ndcg@10_100neg": 0.625, "source": "Yue et al. 2021 (teacher)"},
    "bert4rec": {"ndcg@10_100neg": 0.602, "source": "Yue et al. 2021 (teacher)"},
}

# Raw limits measured on one H100 (DESIGN.md, "Practical facts"), training rows per second.
RAW_LIMITS: dict[str, dict[str, Any]] = {
    "bpr": {"samples_per_second": 38e6, "what": "BPR-MF training triples/s, H100, batch 65k (1.7M at batch 2048)"},
}


def _canonical(name: str) -> str:
    from raysteal.models import model_class

    return model_class(name.strip()).name


def _parse_epochs(spec: str | None, models: list[str]) -> dict[str, int]:
    """``"40"`` (every model) or ``"bpr=40,neumf=10"`` into a per-model dict."""
    if not spec:
        return {}
    if "=" not in spec:
        return {m: int(spec) for m in models}
    out = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        out[_canonical(name)] = int(value)
    return out


def _parse_sets(pairs: list[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """``model.key=value`` / ``model.train.key=value`` overrides (YAML values)."""
    import yaml

    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        name, _, rest = key.partition(".")
        if not sep or not rest:
            raise SystemExit(f"--set expects MODEL.key=value or MODEL.train.key=value, got {pair!r}")
        model_over, train_over = out.setdefault(_canonical(name), ({}, {}))
        if rest.startswith("train."):
            train_over[rest[len("train.") :]] = yaml.safe_load(raw)
        else:
            model_over[rest] = yaml.safe_load(raw)
    return out


def _row_key(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What a JSON row stands for: one model on one dataset under one ``--label`` (or none)."""
    return row.get("model"), row.get("dataset"), row.get("label")


def last_validation_gain(history: list[dict[str, Any]], window: int = 3) -> float | None:
    """How much the training's last ``window`` validations improved on the best before them
    (relative validation NDCG@10; 0 or below: the curve had flattened), ``None`` with fewer
    validations than ``window + 1``."""
    values = [float(h["valid_ndcg@10"]) for h in history if h.get("valid_ndcg@10") is not None]
    if len(values) <= window:
        return None
    before = max(values[:-window])
    return (max(values[-window:]) - before) / before if before > 0 else None


def _kept_row(earlier: list[dict[str, Any]], args: argparse.Namespace, model_config: dict, train_config: dict) -> dict[str, Any] | None:
    """The row an earlier invocation wrote to ``--json`` for this very training (same dataset,
    preprocessing, seed, model and train config), if any."""
    from raysteal.training.target_cache import without_added_fields

    def settled(config: Any) -> Any:  # settings added since the row was written count at their defaults
        return without_added_fields(config) if isinstance(config, dict) else config

    for row in earlier:
        same = (row.get("dataset"), row.get("preprocess", "none"), row.get("seed")) == (args.dataset, args.preprocess, args.seed)
        same = same and settled(row.get("model_config")) == settled(model_config)
        if same and settled(row.get("train_config")) == settled(train_config):
            return row
    return None


def log_pretraining_epoch(log: dict[str, Any]) -> None:
    """With ``--progress``: print each pre-training epoch (NeuMF's GMF and MLP parts, He et al.
    §3.4.1), which the progress bar of the model's own training does not show."""
    if "phase" not in log:
        return
    valid = f"  valid NDCG@10 {log['valid_ndcg@10']:.4f}" if "valid_ndcg@10" in log else ""
    print(
        f"{log['phase']}  epoch {int(log['epoch'])}  loss {log['loss']:.4f}  {log['step_seconds']:.1f}s{valid}", file=sys.stderr, flush=True
    )


def bench_model(
    name: str,
    log: Any,
    split: Any,
    args: argparse.Namespace,
    epochs: int | None,
    overrides: tuple[dict[str, Any], dict[str, Any]],
    earlier: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and time one model; the JSON row for it. A row of ``earlier`` (what
    ``--json`` held) for the same training is returned as it is; ``--state-dir`` keeps each
    training's per-epoch state, so a killed invocation goes on from its last epoch."""
    from raysteal.models import make_config
    from raysteal.training import evaluate, fit, make_train_config, seeded_model
    from raysteal.training.config import epoch_scale, scaled_to_log
    from raysteal.training.guard import guard_figures
    from raysteal.training.presets import preset_with

    train_overrides = {**overrides[1], **({"epochs": epochs} if epochs is not None else {})}
    model_cfg, train_cfg = preset_with(name, overrides[0], train_overrides)
    cfg, asked = make_config(model_cfg), make_train_config(train_cfg)
    model = seeded_model(cfg, log.num_users, log.num_items, args.seed)
    steps_per_epoch = len(model.make_sampler(split.train, asked.batch_size))
    tcfg = scaled_to_log(asked, steps_per_epoch, log.num_users)  # what fit trains with: the row names it
    kept = _kept_row(earlier or [], args, cfg.model_dump(mode="json"), tcfg.model_dump(mode="json"))
    if kept is not None:
        print(f"{cfg.model}: kept from {args.json} (same model, training and seed)", file=sys.stderr)
        return kept
    state = None if args.state_dir is None else args.state_dir / f"{args.dataset}-{cfg.model}-seed{args.seed}.state.pt"
    first_pass: dict[str, Any] = {}

    def on_epoch(entry: dict[str, Any]) -> None:
        if entry.get("phase") == "chosen":  # a refit comes next: the first pass's model, scored as the row's model is
            scored = evaluate(model, split, "test", k=10, num_negatives=100, seed=args.seed)
            first_pass.update({key: scored[key] for key in ("hr@10_100neg", "ndcg@10_100neg", "hr@10_full", "ndcg@10_full")})
            model.train()
        elif args.progress:
            log_pretraining_epoch(entry)

    t0 = time.perf_counter()
    result = fit(
        model,
        split,
        tcfg,
        seed=args.seed,
        device=args.device,
        progress=True if args.progress else None,
        state_path=state,
        restart_if_unusable=True,
        on_epoch=on_epoch,
    )
    train_seconds = time.perf_counter() - t0
    if state is not None:
        state.unlink(missing_ok=True)  # the model is done: its row holds what remains
    test = evaluate(model, split, "test", k=10, num_negatives=100, seed=args.seed)
    guard, _ = guard_figures(model, split, seed=args.seed, device=result.device)
    row: dict[str, Any] = {
        "model": cfg.model,
        "dataset": args.dataset,
        "preprocess": args.preprocess,
        "hr@10_100neg": test["hr@10_100neg"],
        "ndcg@10_100neg": test["ndcg@10_100neg"],
        "hr@10_full": test["hr@10_full"],
        "ndcg@10_full": test["ndcg@10_full"],
        "train_seconds": train_seconds,
        "device": result.device if result.device == "cpu" else torch.cuda.get_device_name(torch.device(result.device)),
        "samples_per_second": result.samples_per_second,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_valid_ndcg@10": result.best_valid_ndcg,
        "stopped_by_time": result.stopped_by_time,
        "epoch_scale": epoch_scale(asked, steps_per_epoch),
        "steps_per_epoch": steps_per_epoch,
        "stopped_early": bool(tcfg.early_stopping and result.epochs_run < tcfg.epochs and not result.stopped_by_time),
        "last_validation_gain": last_validation_gain(result.history),
        "popularity_ndcg@10_full": guard["popularity_ndcg@10_full"],
        "popularity_ndcg@10_100neg": guard["popularity_ndcg@10_100neg"],
        "target_lift": guard["target_lift"],
        "amp_bf16": result.amp,
        "test_users": test["users"],
        "seed": args.seed,
        "model_config": cfg.model_dump(mode="json"),
        "train_config": tcfg.model_dump(mode="json"),
    }
    if result.pretrain:  # each pre-trained part's best epoch and validation, and the fused model's
        row["pretrain"] = result.pretrain
    if result.refit:  # trained again on the validation items for the chosen epochs: the row's test figures are that model's
        row["refit"] = {**result.refit, "first_pass": first_pass}
    if args.save_dir is not None:  # the trained model, reusable as a target (weights + config + metrics)
        from raysteal.training.checkpoint import save_checkpoint

        path = args.save_dir / f"{args.dataset}-{cfg.model}-seed{args.seed}.pt"
        save_checkpoint(
            path,
            model,
            fingerprint=log.fingerprint(),
            metrics={"train": result.summary(), "test": {k: v for k, v in test.items() if k != "per_user"}},
            extra={"dataset": args.dataset, "preprocess": args.preprocess, "seed": args.seed, "train_config": tcfg.model_dump(mode="json")},
        )
        row["checkpoint"] = str(path)
    limit = RAW_LIMITS.get(cfg.model)
    if limit is not None:
        on_gpu = result.device != "cpu"
        row["raw_limit_samples_per_second"] = limit["samples_per_second"]
        row["raw_limit"] = limit["what"]
        row["ratio_to_raw_limit"] = result.samples_per_second / limit["samples_per_second"] if on_gpu else None
    if cfg.model in ANCHORS:
        row["anchor"] = ANCHORS[cfg.model]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--preprocess", default="none")
    parser.add_argument("--models", default="bpr,lmf,neumf", help="comma-separated registered names")
    parser.add_argument("--epochs", default=None, help="N for all, or MODEL=N,MODEL=N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None, help="dataset directory (default: $RAYSTEAL_DATA, then the cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="MODEL.KEY=VALUE")
    parser.add_argument("--progress", action="store_true", help="log every epoch's loss and validation NDCG@10")
    parser.add_argument("--save-dir", type=Path, default=None, help="write each trained model's checkpoint here")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the results as a JSON list (rewritten after each model; its rows for the same trainings are kept)",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="name these rows' setting (the docs table's settings column); a row replaces only its model's row of the same label",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="keep each training's per-epoch state here (a killed run resumes)")
    args = parser.parse_args(argv)
    earlier = read_json_rows(args.json)

    from raysteal.data import load_dataset
    from raysteal.training import make_split

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # canonical names (aliases such as ncf -> neumf); unknown names fail fast, listing the known ones
    models = [_canonical(m) for m in args.models.split(",") if m.strip()]
    epochs = _parse_epochs(args.epochs, models)
    sets = _parse_sets(args.sets)
    t0 = time.perf_counter()
    log = load_dataset(args.dataset, data_dir=args.data_dir, preprocess=args.preprocess)
    split = make_split(log, "leave_one_out")
    print(
        f"{args.dataset}: {log.num_users} users, {log.num_items} items, {log.num_interactions} rows "
        f"(loaded + split in {time.perf_counter() - t0:.1f}s)",
        file=sys.stderr,
    )
    rows = []
    for m in models:
        row = bench_model(m, log, split, args, epochs.get(m), sets.get(m, ({}, {})), earlier)
        if args.label is not None:
            row = {**row, "label": args.label}
        rows.append(row)
        ratio = row.get("ratio_to_raw_limit")
        print(
            f"{row['model']:>9}  HR@10 {row['hr@10_100neg']:.4f}  NDCG@10 {row['ndcg@10_100neg']:.4f} (100 neg)  "
            f"HR@10 {row['hr@10_full']:.4f}  NDCG@10 {row['ndcg@10_full']:.4f} (full)  "
            f"lift {row['target_lift']:.2f}x popularity  "
            f"{row['train_seconds']:.0f}s  {row['epochs_run']} ep (best {row['best_epoch']})  "
            f"{row['samples_per_second']:,.0f} samples/s"
            + (f" = {ratio:.2f} x raw limit" if ratio is not None else "")
            + f"  [{row['device']}]",
            flush=True,
        )
        if args.json is not None:  # rewrite after every model so a long run keeps what it has
            from raysteal.atomic import write_text_atomically

            args.json.parent.mkdir(parents=True, exist_ok=True)
            # a model's new row replaces its earlier one of the same label; models not reached yet keep
            # theirs (a killed run loses none)
            fresh = {_row_key(r) for r in rows}
            others = [r for r in earlier if _row_key(r) not in fresh]
            write_text_atomically(args.json, json.dumps(others + rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
