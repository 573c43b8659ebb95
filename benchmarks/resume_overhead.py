"""What resumable runs cost: the student state written after every epoch, the gathered data
written once, and a target's training state written after every epoch, against the training
they protect.

    python benchmarks/resume_overhead.py --sequences 2000 --length 50 --epochs 2 --threads 1 \\
        --target-model sasrec --target-dataset ml-1m --json results/resume_overhead.json

A DFME/BAHSD run under ``raysteal run`` keeps its answers (``extraction.npz``) and its student's
state (``student.state``, every epoch) in its run directory (:mod:`raysteal.extraction.resume`).
Here a SASRec student is trained with ``state_path`` on a DFME-shaped extraction set (defaults:
``experiments/bahsd/ml1m.yaml``'s 2,000 sequences of 50, top-100 lists, ML-1M's 3,706 items).
Each save the training loop makes is timed where it happens; the figure of merit is the mean
save over one epoch's training (same process, same load). The extraction set is then written and read back once, timed, with its size.

``--target-model`` (with ``--target-dataset``, a dataset name under ``$RAYSTEAL_DATA`` or
``synthetic``) also trains that target with its paper preset for ``--target-epochs`` epochs with
``state_path`` (:func:`raysteal.training.fit`, as the target cache does) and times its per-epoch
saves (weights, AdamW, the best weights so far) against its epochs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, write_json  # noqa: E402

ML1M_ITEMS = 3706


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import raysteal.extraction.student as student_module
    from raysteal.extraction.resume import load_extraction_set, save_extraction_set
    from raysteal.extraction.student import dfme_objective, train_student
    from raysteal.extraction.types import ExtractionSet
    from raysteal.training.trainer import seeded_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--items", type=int, default=ML1M_ITEMS)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--target-model", default=None, help="also time a target's training state (e.g. sasrec)")
    parser.add_argument("--target-dataset", default="ml-1m", help="dataset of --target-model ('synthetic' needs no data)")
    parser.add_argument("--target-epochs", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if min(args.sequences, args.length, args.k, args.items, args.epochs, args.target_epochs) < 1:
        parser.error("--sequences, --length, --k, --items, --epochs and --target-epochs must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    data = ExtractionSet(
        rng.integers(0, args.items, (args.sequences, args.length)),
        rng.integers(0, args.items, (args.sequences, args.length, args.k)).astype(np.int32),
        args.sequences * args.length,
    )
    student = seeded_model({"model": "sasrec", "max_len": args.length}, 0, args.items, 0)
    with tempfile.TemporaryDirectory(prefix="resume-bench-") as tmp:
        state = Path(tmp) / "student.state"
        saves: list[float] = []

        def timed_save(*a, **kw):
            t0 = time.perf_counter()
            real_save(*a, **kw)
            saves.append(time.perf_counter() - t0)

        real_save = student_module.save_training_state
        student_module.save_training_state = timed_save  # the loop's own calls, timed where they happen
        try:
            stats = train_student(
                student, data, dfme_objective(), epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, state_path=state
            )
        finally:
            student_module.save_training_state = real_save
        epoch_seconds = sum(h["epoch_seconds"] for h in stats["history"]) / args.epochs
        save_seconds = sum(saves) / len(saves)
        state_mb = state.stat().st_size / 2**20

        path = Path(tmp) / "extraction.npz"
        t0 = time.perf_counter()
        save_extraction_set(path, "bench", data, {"synthesis_seconds": 0.0})
        data_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_extraction_set(path, "bench")
        data_load = time.perf_counter() - t0
        data_mb = path.stat().st_size / 2**20

    result = {
        "benchmark": "resume_overhead",
        "device": device_name("cpu"),
        "threads": torch.get_num_threads(),
        "sequences": args.sequences,
        "length": args.length,
        "k": args.k,
        "items": args.items,
        "epochs": args.epochs,
        "epoch_seconds": epoch_seconds,
        "state_save_seconds_per_epoch": save_seconds,
        "state_mb": state_mb,
        "overhead_ratio": save_seconds / epoch_seconds if epoch_seconds > 0 else None,
        "data_save_seconds": data_save,
        "data_load_seconds": data_load,
        "data_mb": data_mb,
    }
    print(
        f"{result['device']}, {result['threads']} thread(s): epoch {epoch_seconds:.2f}s; state {state_mb:.1f} MB "
        f"saved in {save_seconds:.3f}s an epoch ({100 * (result['overhead_ratio'] or 0):.2f}% of an epoch); "
        f"extraction set {data_mb:.1f} MB: save {data_save:.2f}s, load {data_load:.2f}s"
    )
    if args.target_model:
        target = target_state_overhead(args.target_model, args.target_dataset, args.target_epochs)
        result["target"] = target
        print(
            f"target {args.target_model} on {args.target_dataset}: epoch {target['epoch_seconds']:.2f}s; state "
            f"{target['state_mb']:.1f} MB saved in {target['state_save_seconds_per_epoch']:.3f}s an epoch "
            f"({100 * target['overhead_ratio']:.2f}% of an epoch)"
        )
    write_json(args.json, result)
    return result


def target_state_overhead(model: str, dataset: str, epochs: int) -> dict[str, Any]:
    """Train ``model`` (paper preset) on ``dataset`` for ``epochs`` epochs with a training state,
    timing the trainer's own per-epoch saves."""
    import raysteal.training.trainer as trainer_module
    from raysteal.data import load_dataset
    from raysteal.data.splits import leave_one_out
    from raysteal.training.presets import preset_with
    from raysteal.training.trainer import fit, seeded_model

    log = load_dataset(dataset, preprocess="paper") if dataset != "synthetic" else load_dataset("synthetic")
    model_cfg, train_cfg = preset_with(model, {}, {"epochs": epochs, "eval_every": 1, "min_epochs": 1})
    split = leave_one_out(log)
    target = seeded_model(model_cfg, log.num_users, log.num_items, 0)
    saves: list[float] = []
    real_save = trainer_module.save_loop_state

    def timed_save(*a, **kw):
        t0 = time.perf_counter()
        real_save(*a, **kw)
        saves.append(time.perf_counter() - t0)

    with tempfile.TemporaryDirectory(prefix="resume-bench-target-") as tmp:
        state = Path(tmp) / "target.training-state"
        trainer_module.save_loop_state = timed_save
        try:
            result = fit(target, split, train_cfg, seed=0, progress=False, state_path=state)
        finally:
            trainer_module.save_loop_state = real_save
        state_mb = state.stat().st_size / 2**20
    epoch_seconds = result.step_seconds / result.epochs_run  # optimisation steps only: the smaller, stricter base
    save_seconds = sum(saves) / len(saves)
    return {
        "model": model,
        "dataset": dataset,
        "users": log.num_users,
        "items": log.num_items,
        "epochs": result.epochs_run,
        "epoch_seconds": epoch_seconds,
        "state_save_seconds_per_epoch": save_seconds,
        "state_mb": state_mb,
        "overhead_ratio": save_seconds / epoch_seconds,
    }


if __name__ == "__main__":
    main()
