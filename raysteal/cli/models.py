"""``raysteal models`` (list the model zoo) and ``raysteal train-target`` (train, evaluate, save)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import typer

from raysteal.atomic import write_text_atomically
from raysteal.cli.options import key_values


def _parse_overrides(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` pairs (YAML values) into (model overrides, train overrides ``train.key``)."""
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in key_values(pairs, "--set", yaml_values=True).items():
        if key.startswith("train."):
            train[key[len("train.") :]] = value
        else:
            model[key] = value
    return model, train


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""

    @app.command("models")
    def models_cmd(as_json: bool = typer.Option(False, "--json", help="print a JSON list")) -> None:
        """List the registered model names (collaborative and sequential)."""
        from raysteal.models import model_class, model_names

        names = model_names()
        if as_json:
            typer.echo(json.dumps(names))
            return
        for name in names:
            kind = "sequential" if model_class(name).sequential else "collaborative"
            typer.echo(f"{name}\t{kind}")

    @app.command("train-target")
    def train_target_cmd(
        dataset: str = typer.Option(..., "--dataset", help="registered dataset name, e.g. ml-1m"),
        model: str = typer.Option(..., "--model", help="registered model name (see `raysteal models`)"),
        out: Path = typer.Option(..., "--out", help="directory for checkpoint.pt and metrics.json"),
        epochs: int | None = typer.Option(None, "--epochs", help="maximum epochs (default: the preset)"),
        seed: int = typer.Option(0, "--seed", min=0, help="seed of initialisation, sampling and evaluation"),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]"),
        preprocess: str = typer.Option("none", "--preprocess", help="none, dedupe, kcoreN, paper, ..."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="default $RAYSTEAL_DATA, then the cache"),
        overrides: list[str] = typer.Option([], "--set", help="config override key=value; train.key for the trainer"),
        cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse a target trained before"),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="default $RAYSTEAL_CACHE/targets"),
        threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)"),
        watermark_key: int | None = typer.Option(
            None, "--watermark-key", help="train in the ownership watermark of this secret key (sequential models; see `raysteal verify`)"
        ),
        watermark_sequences: int = typer.Option(8, "--watermark-sequences", help="watermark sequences the key draws"),
        watermark_length: int = typer.Option(12, "--watermark-length", help="items per watermark sequence"),
        watermark_copies: int = typer.Option(20, "--watermark-copies", help="strength: training copies of each watermark sequence"),
        gro_strength: float | None = typer.Option(
            None, "--gro-strength", help="train GRO in at this strength (lambda, 0..1000; not bert4rec; Zhang et al. 2024)"
        ),
        gro_k: int = typer.Option(100, "--gro-k", help="GRO: length of the target lists the simulated student learns from"),
        gro_student: str | None = typer.Option(None, "--gro-student", help="GRO: the simulated student's model (default: the target's)"),
    ) -> None:
        """Train a target on a leave-one-out split, evaluate it and save its checkpoint in OUT."""
        import torch

        from raysteal.cli import directory_option

        if threads is not None:
            torch.set_num_threads(threads)
        directory_option(out, "--out")
        model_cfg, train_cfg = _target_settings(model, overrides, epochs)  # a bad override fails before the data is read
        watermark = None if watermark_key is None else (watermark_key, watermark_sequences, watermark_length, watermark_copies)
        gro = None if gro_strength is None else (gro_strength, gro_k, gro_student)
        train_target_into(out, dataset, preprocess, model_cfg, train_cfg, seed, device, data_dir, cache, cache_dir, watermark, gro)


def _target_settings(model: str, overrides: list[str], epochs: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's preset with the ``--set`` overrides and ``--epochs``, validated."""
    from raysteal.models.base import make_config
    from raysteal.training import make_train_config
    from raysteal.training.presets import preset_with

    model_over, train_over = _parse_overrides(overrides)
    if epochs is not None:
        train_over["epochs"] = epochs
    model_cfg, train_cfg = preset_with(model, model_over, train_over)
    make_config(model_cfg)
    make_train_config(train_cfg)
    return model_cfg, train_cfg


def train_target_into(
    out: Path,
    dataset: str,
    preprocess: str,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    seed: int,
    device: str,
    data_dir: Path | None,
    cache: bool,
    cache_dir: Path | None,
    watermark_args: tuple[int, int, int, int] | None,
    gro_args: tuple[float, int, str | None] | None,
) -> None:
    """``raysteal train-target``'s work: train (or take from the cache) the target, save
    ``OUT/checkpoint.pt`` and ``OUT/metrics.json``, and say its accuracy. ``watermark_args``:
    (key, sequences, length, copies); ``gro_args``: (strength, k, student)."""
    from raysteal.data import load_dataset
    from raysteal.models.base import make_config
    from raysteal.training.target_cache import checked_gro, checked_watermark

    cfg = make_config(model_cfg)
    watermark = gro = None
    if watermark_args is not None:  # a bad watermark fails before the data is read
        key, sequences, length, copies = watermark_args
        watermark = checked_watermark({"key": key, "sequences": sequences, "length": length, "copies": copies}, cfg)
    if gro_args is not None:  # and a bad GRO setting
        strength, k, student = gro_args
        gro = checked_gro({"strength": strength, "k": k, "student": student}, cfg)
    log = load_dataset(dataset, data_dir=data_dir, preprocess=preprocess)
    out.mkdir(parents=True, exist_ok=True)
    run = (log, model_cfg, train_cfg, seed, device, watermark, gro)
    if cache:
        target, metrics, cached = _cached_target(out, dataset, preprocess, cache_dir, *run)
    else:
        target, metrics, cached = _fresh_target(out, dataset, preprocess, *run)
    report = {
        "model": target.name,
        "dataset": dataset,
        "preprocess": preprocess,
        "seed": seed,
        "spec": target.spec(),
        "fingerprint": log.fingerprint(),
        "cache_hit": cached,
        **metrics,
    }
    write_text_atomically(out / "metrics.json", json.dumps(report, indent=2, default=float) + "\n")
    test = metrics["test"]
    how = "from cache" if cached else f"trained in {metrics['train']['train_seconds']:.1f}s"
    if watermark is not None:
        how += f", watermark key {watermark.key} ({watermark.sequences}x{watermark.length} items, {watermark.copies} copies)"
    if gro is not None:
        how += f", GRO strength {gro.strength:g} (top-{gro.k} lists, student {gro.student or target.name})"
    typer.echo(
        f"{target.name} on {dataset}: HR@10 {test['hr@10_100neg']:.4f} NDCG@10 {test['ndcg@10_100neg']:.4f} "
        f"(100 neg), NDCG@10 {test['ndcg@10_full']:.4f} (full); "
        f"{how} -> {out}"
    )


def _cached_target(
    out: Path, dataset: str, preprocess: str, cache_dir: Path | None, log, model_cfg, train_cfg, seed, device, watermark, gro
):
    """The target from the target cache (trained there first when missing), copied to ``OUT/checkpoint.pt``."""
    from raysteal.experiment.config import DatasetEntry, SplitConfig
    from raysteal.experiment.context import target_cache_labels
    from raysteal.training import get_or_train_target

    # the labels `raysteal run` gives a target of the whole log (split.aux_fraction 0), so
    # an experiment with the same model and training settings finds this one
    dataset_label, preprocess_label = target_cache_labels(DatasetEntry(name=dataset, preprocess=preprocess), SplitConfig(aux_fraction=0.0))
    target, meta = get_or_train_target(
        log,
        model_cfg,
        train_cfg,
        seed=seed,
        dataset=dataset_label,
        preprocess=preprocess_label,
        cache_dir=cache_dir,
        device=device,
        watermark=watermark,
        gro=gro,
    )
    shutil.copyfile(meta["path"], out / "checkpoint.pt")
    return target, meta["metrics"], meta["cache_hit"]


def _fresh_target(out: Path, dataset: str, preprocess: str, log, model_cfg, train_cfg, seed, device, watermark, gro):
    """A target trained here (no cache), saved as ``OUT/checkpoint.pt`` with what `raysteal verify` reads."""
    from raysteal.training import save_checkpoint, train_target

    target, metrics = train_target(log, model_cfg, train_cfg, seed=seed, device=device, watermark=watermark, gro=gro)
    extra = {"dataset": dataset, "preprocess": preprocess, "seed": seed}
    if watermark is not None:  # the owner's checkpoint: `raysteal verify --target` reads the watermark here
        extra["watermark"] = watermark.model_dump(mode="json")
    if gro is not None:
        extra["gro"] = gro.model_dump(mode="json")
    save_checkpoint(out / "checkpoint.pt", target, fingerprint=log.fingerprint(), metrics=metrics, extra=extra)
    return target, metrics, False
