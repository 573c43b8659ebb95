"""Watermark ownership verification on ML-1M, in-process (no Ray): true positives on DFME clones,
false positives on independently trained models, survival under fine-tuning, and the
watermark's cost to the target (AOW, Zhang et al., CIKM 2024, arXiv 2407.21034).

    RAYSTEAL_DATA=/path/to/data python benchmarks/watermark.py --out docs/results/defenses/watermark

Protocol. The whole ML-1M log is the target's (Yue et al.'s data-free setting, leave-one-out).
Two SASRec targets are trained with the same seed and epochs, one with the watermark of
``--key`` trained in (``raysteal.watermark``) and one without: the difference of their test
HR@10 / NDCG@10 is the watermark's cost. Suspects, each asked the watermark prefixes through the
black-box top-k API (``raysteal.watermark.verify_watermark``, the code of ``raysteal verify``):

* ``target`` — the watermarked target itself (the ceiling);
* ``clone`` — DFME students (SASRec, Yue et al.'s ranking loss) of the watermarked target, one per
  query budget: true positives;
* ``finetuned`` — each clone fine-tuned on real histories of ``--finetune-users`` users with the
  ordinary next-item loss: does the watermark survive?
* ``independent`` — the clean target, SASRec of other seeds, GRU4Rec and NARM trained on the same
  data without the watermark, and a DFME clone of the clean target: false positives.

A suspect is flagged when the exact test's p-value is under ``--alpha``; every suspect is also
asked ``--decoys`` watermarks of keys never trained in (the empirical null). Rows go to
``results.parquet`` and a table to ``report.md`` (both written atomically).
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name  # noqa: E402

from raysteal.atomic import write_atomically, write_text_atomically  # noqa: E402
from raysteal.data import leave_one_out, load_dataset  # noqa: E402
from raysteal.experiment.config import DatasetEntry, SplitConfig  # noqa: E402
from raysteal.experiment.context import target_cache_labels  # noqa: E402
from raysteal.extraction import SequenceKnowledge, run_extraction  # noqa: E402
from raysteal.extraction.evaluate import extraction_metrics, student_lists  # noqa: E402
from raysteal.oracle import TargetSpec, in_process_oracle  # noqa: E402
from raysteal.training import fit, get_or_train_target  # noqa: E402
from raysteal.training.presets import preset_with  # noqa: E402
from raysteal.watermark import make_watermark_config, verify_watermark  # noqa: E402


def _data_dir(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("RAYSTEAL_DATA"):
        return os.environ["RAYSTEAL_DATA"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def _verify(model, mark, args) -> dict[str, Any]:
    """The watermark test of ``model`` through its black-box top-k lists (what ``raysteal verify`` does)."""
    oracle = in_process_oracle(TargetSpec(model=model, name="suspect"), device="cpu")
    try:
        result = verify_watermark(oracle.register_attacker("verifier"), mark, k=args.k, alpha=args.alpha, decoys=args.decoys)
    finally:
        oracle.close()
    return result.as_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for results.parquet and report.md")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--key", type=int, default=20240731, help="the watermark's secret key")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--length", type=int, default=12)
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=50, help="SASRec/GRU4Rec/NARM window (the paper's 200 is slower on a CPU)")
    ap.add_argument("--target-epochs", type=int, default=12, help="most epochs of each target (early stopping on validation NDCG@10)")
    ap.add_argument(
        "--target-seconds",
        type=float,
        default=None,
        help="optional time box of each target's training (unequal CPU shares make it unfair between twins)",
    )
    ap.add_argument("--independent", default="sasrec:1,gru4rec:0,narm:0", help="model:seed of the unwatermarked models")
    ap.add_argument("--budgets", default="5000,20000", help="DFME query budgets of the clones")
    ap.add_argument("--clone-epochs", type=int, default=10)
    ap.add_argument("--finetune-users", type=int, default=600, help="real users the thief fine-tunes a clone on")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--decoys", type=int, default=2)
    ap.add_argument("--eval-users", type=int, default=2000, help="users on which the clones' Agr@10 is measured")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", default=None, help="target cache (default $RAYSTEAL_CACHE/targets)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    mark = make_watermark_config({"key": args.key, "sequences": args.sequences, "length": args.length, "copies": args.copies})
    log = load_dataset(args.dataset, data_dir=_data_dir(args.data_dir))
    labels = target_cache_labels(DatasetEntry(name=args.dataset), SplitConfig(aux_fraction=0.0))
    loo = leave_one_out(log)
    rng = np.random.default_rng(0)
    eval_users = np.sort(rng.choice(loo.evaluable_users, size=min(args.eval_users, loo.evaluable_users.size), replace=False))
    eval_seqs = loo.train.padded_sequences(args.max_len, eval_users)
    rows: list[dict[str, Any]] = []

    def target(model: str, seed: int, watermark=None):
        model_cfg, train_cfg = preset_with(model, {"max_len": args.max_len}, {"epochs": args.target_epochs, "eval_every": 2, "patience": 3})
        if args.target_seconds:
            train_cfg["max_seconds"] = args.target_seconds
        t0 = time.perf_counter()
        net, meta = get_or_train_target(
            log,
            model_cfg,
            train_cfg,
            seed=seed,
            dataset=labels[0],
            preprocess=labels[1],
            cache_dir=args.cache_dir,
            device="cpu",
            progress=False,
            watermark=watermark,
        )
        print(
            f"{model} seed {seed} watermark {watermark is not None}: {time.perf_counter() - t0:.0f}s (cache hit {meta['cache_hit']})",
            flush=True,
        )
        return net, meta["metrics"]

    def row(kind: str, name: str, model, extra: dict[str, Any], teacher_lists=None) -> None:
        t0 = time.perf_counter()
        found = _verify(model, mark, args)
        agreement = {}
        if teacher_lists is not None:
            agreement = {
                k: v
                for k, v in extraction_metrics(
                    student_lists(model, eval_seqs, 10), teacher_lists, head=np.zeros(len(eval_users), bool)
                ).items()
                if k in ("agr@1", "agr@10")
            }
        rows.append(
            {
                "experiment": f"watermark-{args.dataset}",
                "dataset": args.dataset,
                "kind": kind,
                "suspect": name,
                "model": model.name,
                "defense": "watermark",
                "key": args.key,
                "watermark_sequences": mark.sequences,
                "watermark_length": mark.length,
                "watermark_copies": mark.copies,
                **extra,
                **agreement,
                **{k: v for k, v in found.items() if k != "alpha"},
                "alpha": args.alpha,
                "verify_seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"  {kind:11s} {name:28s} hits {found['hits']}/{found['trials']} p {found['p_value']:.3g} "
            f"decoys {found['decoy_hit_rate']} {agreement}",
            flush=True,
        )

    marked, marked_metrics = target("sasrec", 0, mark)
    clean, clean_metrics = target("sasrec", 0)
    teacher = student_lists(marked, eval_seqs, 10)
    for name, metrics in (("sasrec-0+watermark", marked_metrics), ("sasrec-0", clean_metrics)):
        test = metrics["test"]
        print(
            f"{name}: test HR@10 {test['hr@10_100neg']:.4f} NDCG@10 {test['ndcg@10_100neg']:.4f} (100 neg), "
            f"NDCG@10 {test['ndcg@10_full']:.4f} (full), epochs {metrics['train']['epochs_run']}",
            flush=True,
        )
    accuracy = lambda m: {f"target_{k}": m["test"][k] for k in ("hr@10_100neg", "ndcg@10_100neg", "hr@10_full", "ndcg@10_full")}  # noqa: E731
    row(
        "target",
        "sasrec-0+watermark",
        marked,
        {"seed": 0, "budget": None, **accuracy(marked_metrics), "epochs": marked_metrics["train"]["epochs_run"]},
    )
    row(
        "independent",
        "sasrec-0 (clean twin)",
        clean,
        {"seed": 0, "budget": None, **accuracy(clean_metrics), "epochs": clean_metrics["train"]["epochs_run"]},
        teacher,
    )
    for spec in filter(None, args.independent.split(",")):
        model, seed = spec.split(":")
        net, metrics = target(model, int(seed))
        row(
            "independent",
            f"{model}-{seed}",
            net,
            {"seed": int(seed), "budget": None, **accuracy(metrics), "epochs": metrics["train"]["epochs_run"]},
            teacher,
        )

    real = log.select_users(np.sort(rng.choice(log.num_users, size=args.finetune_users, replace=False)), name="thief")
    thief = leave_one_out(real)
    knowledge = SequenceKnowledge(num_items=log.num_items, max_len=args.max_len)
    for victim_name, victim, budgets, kind in (
        ("sasrec-0+watermark", marked, args.budgets, "clone"),
        ("sasrec-0", clean, args.budgets.split(",")[-1], "independent"),
    ):
        for budget in (int(b) for b in str(budgets).split(",")):
            oracle = in_process_oracle(TargetSpec(model=victim, name=victim_name), device="cpu")
            t0 = time.perf_counter()
            try:
                result = run_extraction(
                    {
                        "attack": "dfme",
                        "budget_queries": budget,
                        "epochs": args.clone_epochs,
                        "student": {"model": "sasrec", "max_len": args.max_len},
                    },
                    knowledge,
                    oracle.register_attacker("thief", budget),
                    seed=0,
                    device="cpu",
                )
            finally:
                oracle.close()
            student = result.clone.cpu().eval()
            seconds = time.perf_counter() - t0
            lists = teacher if kind == "clone" else student_lists(clean, eval_seqs, 10)
            row(
                kind,
                f"dfme-{budget} of {victim_name}",
                student,
                {"seed": 0, "budget": budget, "queries": result.queries, "attack_seconds": seconds},
                lists,
            )
            if kind != "clone":
                continue
            tuned = copy.deepcopy(student)
            t0 = time.perf_counter()
            fit(
                tuned,
                thief,
                {"epochs": args.finetune_epochs, "batch_size": 128, "lr": 1e-3, "early_stopping": False},
                seed=1,
                device="cpu",
                progress=False,
            )
            row(
                "finetuned",
                f"dfme-{budget} + finetune {args.finetune_users}u/{args.finetune_epochs}ep",
                tuned.eval(),
                {"seed": 0, "budget": budget, "queries": result.queries, "finetune_seconds": time.perf_counter() - t0},
                teacher,
            )

    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "results.parquet", lambda fh: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), fh))
    write_text_atomically(
        args.out / "report.md", _report(frame, args, marked_metrics, clean_metrics, time.perf_counter() - started, len(eval_users))
    )
    print(f"wrote {args.out / 'results.parquet'} ({len(frame)} rows) in {time.perf_counter() - started:.0f}s")
    return 0


def _report(frame: pd.DataFrame, args, marked: dict, clean: dict, seconds: float, eval_users: int) -> str:
    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "–"
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if isinstance(value, (float, np.floating)):
            return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
        return str(value)

    cols = ["kind", "suspect", "hits", "trials", "hit_rate", "decoy_hit_rate", "p_value", "carries_watermark", "agr@10"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    flagged = lambda kinds: frame[frame["kind"].isin(kinds)]["carries_watermark"]  # noqa: E731
    tpr, fpr, surv = flagged(["clone"]), flagged(["independent"]), flagged(["finetuned"])
    cost = "\n".join(
        f"| {name} | {m['test']['hr@10_100neg']:.4f} | {m['test']['ndcg@10_100neg']:.4f} | {m['test']['hr@10_full']:.4f} | "
        f"{m['test']['ndcg@10_full']:.4f} | {m['train']['epochs_run']} |"
        for name, m in (("SASRec + watermark", marked), ("SASRec (clean twin)", clean))
    )
    command = "python benchmarks/watermark.py --out docs/results/defenses/watermark " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
        for k, v in sorted(vars(args).items())
        if k not in ("out", "data_dir", "cache_dir", "threads") and v is not None
    )
    return f"""# Watermark ownership verification — {args.dataset}

Regenerate (with `RAYSTEAL_DATA` naming the data folder): `{command}`
({seconds / 60:.0f} min on {device_name("cpu")}, shared with other jobs; targets already in the cache are not retrained).

Watermark: key {args.key}, {args.sequences} sequences × {args.length} items, {args.copies} training copies
each; verification asks every prefix (length 1..{args.length - 1}) for its top-{args.k} and applies the
exact one-sided Poisson-binomial test of `raysteal verify` (alpha {args.alpha}); {args.decoys} decoy keys
per suspect give the empirical null hit rate.

## Decisions

- true-positive rate on DFME clones: {int(tpr.sum())}/{len(tpr)}
- after fine-tuning the clone: {int(surv.sum())}/{len(surv)}
- false-positive rate on independent models: {int(fpr.sum())}/{len(fpr)}

{chr(10).join(lines)}

`agr@10`: the suspect's top-10 agreement with the watermarked target on {eval_users} real users
(the independent DFME clone: with the clean target it copied).

## Cost to the target (test, leave-one-out, same seed, at most {args.target_epochs} epochs, best validation NDCG@10 kept)

| target | HR@10 (100 neg) | NDCG@10 (100 neg) | HR@10 (full) | NDCG@10 (full) | epochs |
|---|---|---|---|---|---|
{cost}
"""


if __name__ == "__main__":
    sys.exit(main())
