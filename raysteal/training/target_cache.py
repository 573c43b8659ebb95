"""Train each target once: a checkpoint cache keyed by everything that determines the weights.

The key hashes (dataset name, preprocessing label, the log's content fingerprint, the validated
model config, the split, the seed, the train config and, when there are, the watermark and the
GRO setting). A
hit loads the checkpoint; a miss trains with :func:`raysteal.training.fit` (its per-epoch state
kept beside the checkpoint, so a killed training goes on from its last epoch), evaluates on the
test items and saves atomically, so concurrent workers may race but never read half a file (the
last writer wins, and both wrote the same deterministic target on a CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import raysteal.models  # noqa: F401  (registers every model)
from raysteal.data.interactions import Interactions
from raysteal.data.splits import LeaveOneOut, leave_one_out, whole_log
from raysteal.errors import ConfigError, UnknownNameError
from raysteal.models.base import ModelConfig, Recommender, make_config, model_class
from raysteal.training.checkpoint import load_checkpoint, save_checkpoint
from raysteal.training.config import TrainConfig, make_train_config, scaled_to_log
from raysteal.training.evaluate import evaluate
from raysteal.training.gro import GROConfig, gro_capable, gro_objective, make_gro_config, student_config
from raysteal.training.trainer import fit, resolve_device, seeded_model
from raysteal.watermark.embed import watermarked_split
from raysteal.watermark.spec import WatermarkConfig, make_watermark_config

SPLITS: dict[str, Callable[[Interactions], LeaveOneOut]] = {"leave_one_out": leave_one_out, "whole": whole_log}


def make_split(log: Interactions, split: str = "leave_one_out") -> LeaveOneOut:
    """Apply the named split (``leave_one_out``; ``whole``: every interaction trains, see
    :func:`~raysteal.data.splits.whole_log`)."""
    if split not in SPLITS:
        raise UnknownNameError("split", split, list(SPLITS))
    return SPLITS[split](log)


_ADDED_FIELDS: dict[str, object] = {
    "length_buckets": 0,
    "max_seconds": None,
    "variant": "neumf",
    "pretrain": False,
    "pretrain_alpha": 0.5,
    "pretrain_epochs": None,
    "pretrain_lr": None,
    "optimizer": "adamw",
    "min_steps": None,
    "refit": False,
    "min_delta": 0.0,
    "reference_steps_per_epoch": None,
    "attention_activation": "sigmoid",
    "attention_softmax": False,
    "init_std": None,
    "negative_candidates": 1,
}
"""Model / train config fields added after targets were cached: left out of the key while at
their default, so a cache written before the field existed still answers."""


def without_added_fields(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not (k in _ADDED_FIELDS and v == _ADDED_FIELDS[k])}


def default_cache_dir() -> Path:
    """``$RAYSTEAL_CACHE/targets``, else ``~/.cache/raysteal/targets``."""
    root = os.environ.get("RAYSTEAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "raysteal")
    return Path(root) / "targets"


def target_key(
    log: Interactions,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    seed: int,
    split: str,
    dataset: str,
    preprocess: str,
    watermark: WatermarkConfig | None = None,
    gro: GROConfig | None = None,
) -> str:
    """Hex digest naming one target (see module docstring for what goes in; no watermark and no
    GRO leave the key as it was before either existed)."""
    model = without_added_fields(model_config.model_dump(mode="json"))
    train = without_added_fields(train_config.model_dump(mode="json"))
    spec = {
        "dataset": dataset,
        "preprocess": preprocess,
        "fingerprint": log.fingerprint(),
        "model": model,
        "split": split,
        "seed": int(seed),
        "train": train,
    }
    if watermark is not None:
        spec["watermark"] = watermark.model_dump(mode="json")
    if gro is not None:
        spec["gro"] = gro.model_dump(mode="json")
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Evaluation figures without the per-user arrays (checkpoint-safe)."""
    return {k: v for k, v in metrics.items() if k != "per_user"}


def train_target(
    log: Interactions,
    model_config: dict[str, Any] | ModelConfig,
    train_config: dict[str, Any] | TrainConfig | None = None,
    *,
    seed: int = 0,
    split: str = "leave_one_out",
    device: str | torch.device = "auto",
    progress: bool | None = None,
    state_path: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    watermark: dict[str, Any] | WatermarkConfig | None = None,
    gro: dict[str, Any] | GROConfig | None = None,
) -> tuple[Recommender, dict[str, Any]]:
    """Train and evaluate one target (no cache): ``(model, metrics)``. ``state_path``: where
    training keeps its per-epoch state and, when it exists, resumes from (see :func:`fit`; an
    unusable file there is replaced with a warning); ``on_epoch``: see :func:`fit`;
    ``watermark``: trained in with the real users (:mod:`raysteal.watermark`; sequential models
    only), who alone are validated and evaluated; ``gro``: the target trained against a simulated
    student (:mod:`raysteal.training.gro`; not BERT4Rec; such a training keeps
    no per-epoch state, the student's not being saved, so a killed one starts over)."""
    cfg, tcfg = make_config(model_config), make_train_config(train_config)
    mark = checked_watermark(watermark, cfg)
    defend = checked_gro(gro, cfg)
    data = make_split(log, split)
    model = seeded_model(cfg, log.num_users, log.num_items, seed)
    objective = None
    if defend is not None:
        device, state_path = resolve_device(device), None
        objective = gro_objective(defend, cfg, tcfg, log.num_users, log.num_items, seed=seed, device=device)
    result = fit(
        model,
        data if mark is None else watermarked_split(data, mark),
        tcfg,
        seed=seed,
        device=device,
        progress=progress,
        state_path=state_path,
        restart_if_unusable=state_path is not None,
        on_epoch=on_epoch,
        objective=objective,
    )
    train_summary = result.summary()
    if objective is not None:
        train_summary["gro"] = objective.summary()
    metrics = {
        "train": train_summary,
        "valid": _plain(evaluate(model, data, "valid", seed=seed)),
        "test": _plain(evaluate(model, data, "test", seed=seed)),
    }
    return model, metrics


def get_or_train_target(
    log: Interactions,
    model_config: dict[str, Any] | ModelConfig,
    train_config: dict[str, Any] | TrainConfig | None = None,
    *,
    seed: int = 0,
    split: str = "leave_one_out",
    dataset: str | None = None,
    preprocess: str = "none",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    watermark: dict[str, Any] | WatermarkConfig | None = None,
    gro: dict[str, Any] | GROConfig | None = None,
) -> tuple[Recommender, dict[str, Any]]:
    """The target for this (dataset, preprocess, model, split, seed, train config, watermark, GRO), trained once.

    Returns ``(model, meta)``; ``meta`` has ``metrics`` (train/valid/test), ``fingerprint``,
    ``spec``, ``extra`` (the key's ingredients), plus ``path`` and ``cache_hit``. ``on_epoch`` is
    called after each training epoch (not on a hit; see :func:`fit`).
    """
    cfg, tcfg = make_config(model_config), make_train_config(train_config)
    mark = checked_watermark(watermark, cfg)
    defend = checked_gro(gro, cfg)
    tcfg = scaled_train_config(log, cfg, tcfg, split, mark)  # keyed as trained: a large log's key is as without scaling
    dataset = dataset or log.name
    key = target_key(log, cfg, tcfg, seed=seed, split=split, dataset=dataset, preprocess=preprocess, watermark=mark, gro=defend)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{cfg.model}-{key[:20]}.pt"
    state = training_state_path(path)
    if path.is_file():
        model, meta = load_checkpoint(path)
        state.unlink(missing_ok=True)  # a crash between saving the checkpoint and removing the state
        return model, {**meta, "path": str(path), "cache_hit": True}
    # a target whose training was killed goes on from its last epoch (the state sits beside the checkpoint)
    model, metrics = train_target(
        log,
        cfg,
        tcfg,
        seed=seed,
        split=split,
        device=device,
        progress=progress,
        state_path=state,
        on_epoch=on_epoch,
        watermark=mark,
        gro=defend,
    )
    extra = {
        "key": key,
        "dataset": dataset,
        "preprocess": preprocess,
        "split": split,
        "seed": int(seed),
        "train_config": tcfg.model_dump(mode="json"),
    }
    if mark is not None:  # the owner's own checkpoint: `raysteal verify --target` reads the watermark here
        extra["watermark"] = mark.model_dump(mode="json")
    if defend is not None:
        extra["gro"] = defend.model_dump(mode="json")
    save_checkpoint(path, model, fingerprint=log.fingerprint(), metrics=metrics, extra=extra)
    state.unlink(missing_ok=True)
    model.to("cpu").eval()
    meta = {"spec": model.spec(), "fingerprint": log.fingerprint(), "metrics": metrics, "extra": extra}
    return model, {**meta, "path": str(path), "cache_hit": False}


def scaled_train_config(
    log: Interactions, cfg: ModelConfig, tcfg: TrainConfig, split: str = "leave_one_out", watermark: WatermarkConfig | None = None
) -> TrainConfig:
    """``tcfg`` as :func:`fit` will train it on this log: its epoch counts scaled to the log's steps
    per epoch when it names a ``reference_steps_per_epoch``, and an ``eval_users`` sample no smaller
    than the log resolved away (:func:`~raysteal.training.config.scaled_to_log`)."""
    if tcfg.reference_steps_per_epoch is None:  # nothing scales with the steps: no sampler to build
        return scaled_to_log(tcfg, steps_per_epoch=0, users=log.num_users)
    data = make_split(log, split)
    if watermark is not None:
        data = watermarked_split(data, watermark)
    sampler = seeded_model(cfg, log.num_users, log.num_items, 0).make_sampler(data.train, tcfg.batch_size)
    return scaled_to_log(tcfg, len(sampler), log.num_users)


def checked_watermark(watermark: dict[str, Any] | WatermarkConfig | None, cfg: ModelConfig) -> WatermarkConfig | None:
    """The validated watermark, or ``None``; refused for a model that is not queried by sequence,
    or whose window (``max_len``) is shorter than the watermark."""
    if watermark is None:
        return None
    mark = make_watermark_config(watermark)
    if not getattr(model_class(cfg.model), "sequential", False):
        raise ConfigError(f"watermark: {cfg.model!r} is not a sequential model; a watermark is a sequence of items")
    max_len = getattr(cfg, "max_len", None)
    if max_len is not None and mark.length > max_len:
        raise ConfigError(f"watermark: length {mark.length} exceeds the model's max_len {max_len}")
    return mark


def checked_gro(gro: dict[str, Any] | GROConfig | None, cfg: ModelConfig) -> GROConfig | None:
    """The validated GRO setting, or ``None``; refused for a sequential target not trained on
    next-item windows (BERT4Rec), or a student of the other kind than the target."""
    if gro is None:
        return None
    defend = make_gro_config(gro)
    problem = gro_capable(cfg.model)
    if problem is not None:
        raise ConfigError(f"gro: {problem}")
    student_config(defend, cfg)
    return defend


def training_state_path(checkpoint: Path) -> Path:
    """Where the training of the target cached at ``checkpoint`` keeps its per-epoch state."""
    return checkpoint.with_name(checkpoint.stem + ".training-state")


def load_trained_target(path: str | os.PathLike, log: Interactions) -> tuple[Recommender, dict[str, Any]]:
    """A target trained elsewhere (``raysteal train-target``, ``benchmarks/targets.py --save-dir``),
    checked against the log it will serve: its data fingerprint and catalogue must be this log's,
    or its recommendations would refer to other users and items. Returns ``(model, meta)`` like
    :func:`get_or_train_target`."""
    model, meta = load_checkpoint(path)
    if meta.get("fingerprint") != log.fingerprint():
        raise ConfigError(
            f"checkpoint {path} was trained on another log (fingerprint {meta.get('fingerprint')!r}) than this "
            f"target log ({log.name}: {log.num_users} users, {log.num_items} items, fingerprint {log.fingerprint()!r})"
        )
    return model, {**meta, "path": str(path), "cache_hit": True}
