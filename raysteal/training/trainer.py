"""The one generic trainer: any registered model, its own sampler and loss, AdamW.

``fit`` draws each epoch's batches from ``model.make_sampler(split.train, batch_size)`` with
an explicit ``torch.Generator``, minimises ``model.loss`` with AdamW (or SGD; bf16 autocast on a GPU
when ``amp`` allows), validates with full-ranking NDCG@10 on the held-out validation items
(seen training items excluded), stops early after ``patience`` validations without
improvement and restores the best weights. All randomness (sampling, dropout, the
validation subsample) derives from ``seed``; the caller's global torch RNG state is left
untouched, so two CPU runs with the same seed give bit-identical weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from raysteal.data.splits import LeaveOneOut
from raysteal.errors import ConfigError
from raysteal.models.base import ModelConfig, Recommender, build_model
from raysteal.training.config import TrainConfig, epoch_scale, make_train_config, scaled_to_log
from raysteal.training.cpu_memory import retain_freed_memory
from raysteal.training.evaluate import validation_ndcg
from raysteal.training.loop_state import load_loop_state, save_loop_state
from raysteal.training.pretrain import pretrain, remove_part_states, wants_pretraining
from raysteal.training.refit import refit_on_validation_items
from raysteal.training.step import adamw, bf16_autocast, to_device, training_step


@dataclass
class TrainResult:
    """What :func:`fit` returns: the fitted model (best weights) and how it got there."""

    model: Recommender
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_ndcg: float = float("nan")
    epochs_run: int = 0
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    samples: int = 0
    device: str = "cpu"
    amp: bool = False
    stopped_by_time: bool = False  # the ``max_seconds`` time box ended training
    resumed_epoch: int = 0  # the epoch a saved state (``state_path``) let training go on after
    pretrain: dict[str, Any] = field(default_factory=dict)  # {"parts": per part, "fused_valid_ndcg@10"} (raysteal.training.pretrain)
    pretrain_seconds: float = 0.0  # of train_seconds, the pre-trainings'
    epoch_scale: float = 1.0  # how much a small log grew the epoch counts (TrainConfig.reference_steps_per_epoch)
    config: TrainConfig | None = None  # the train config the training ran with (epoch counts scaled to the log)
    refit: dict[str, Any] = field(default_factory=dict)  # {"epochs", "part_epochs", "train_seconds"} (TrainConfig.refit)

    @property
    def samples_per_second(self) -> float:
        """Training rows (sampler batch rows) per second of optimisation steps."""
        return self.samples / self.step_seconds if self.step_seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable figures (no model)."""
        return {
            "best_epoch": self.best_epoch,
            "best_valid_ndcg@10": self.best_valid_ndcg,
            "epochs_run": self.epochs_run,
            "train_seconds": self.train_seconds,
            "step_seconds": self.step_seconds,
            "samples": self.samples,
            "samples_per_second": self.samples_per_second,
            "device": self.device,
            "amp": self.amp,
            "stopped_by_time": self.stopped_by_time,
            "resumed_epoch": self.resumed_epoch,
            "epoch_scale": self.epoch_scale,
            "history": self.history,
            **({"pretrain": self.pretrain, "pretrain_seconds": self.pretrain_seconds} if self.pretrain else {}),
            **({"refit": self.refit} if self.refit else {}),
        }


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; anything else is taken as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available")
    return dev


def training_device(device: str | torch.device = "auto") -> torch.device:
    """:func:`resolve_device` for a training loop: on the CPU, also keep freed memory (see cpu_memory)."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        retain_freed_memory()
    return dev


def child_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from ``seed`` (numpy SeedSequence)."""
    return [int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(n)]


@contextlib.contextmanager
def private_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNGs for the block (dropout, initialisers) and restore them afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def seeded_model(config: dict[str, Any] | ModelConfig, num_users: int, num_items: int, seed: int) -> Recommender:
    """``build_model`` with parameter initialisation drawn from ``seed`` (global RNG untouched)."""
    with private_rng(child_seeds(seed, 1)[0], torch.device("cpu")):
        return build_model(config, num_users=num_users, num_items=num_items)


def _sampling_generator(sampler: Any, dev: torch.device, seed: int) -> torch.Generator:
    """A generator for the sampler: on the GPU when the sampler can move there (``to``), else CPU."""
    if dev.type != "cpu" and callable(getattr(sampler, "to", None)):
        sampler.to(dev)
        return torch.Generator(device=dev).manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not os.environ.get("CI")


def _use_amp(config: TrainConfig, device: torch.device) -> bool:
    return bf16_autocast(config.amp != "off", device)


def _batch_rows(batch: dict[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def fit(
    model: Recommender,
    split: LeaveOneOut,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool | None = None,
    state_path: str | os.PathLike | None = None,
    restart_if_unusable: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    objective: Callable[[Recommender, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    part_epochs: dict[str, int] | None = None,
) -> TrainResult:
    """Train ``model`` on ``split.train``, early-stopping on ``split.valid``; returns the best model.

    ``progress=None`` shows a rich progress bar only on a terminal outside CI. ``state_path``:
    after every epoch the whole loop state (weights, AdamW, generators, the best weights so far,
    the early-stopping counters) is written there atomically; when the file exists, training goes
    on after its epoch and ends bit-identical to an uninterrupted run on the same device. A state
    made for another model, data size, train config, seed or device type is a ``ConfigError``, or
    with ``restart_if_unusable`` (a file the caller owns) ignored with a warning. ``on_epoch(log)``
    is called after each epoch with its log (``epoch``, ``loss``, ``step_seconds``, and
    ``valid_ndcg@10`` / ``best_valid_ndcg@10`` when it validated) plus ``epochs``, the most
    epochs the training can take.

    A model that names parts to pre-train (NeuMF with ``pretrain``) has them trained first and
    fused into it when training starts from scratch (:mod:`raysteal.training.pretrain`; their
    epochs reach ``on_epoch`` with a ``phase`` key); the fused model is validated as epoch 0, so
    early stopping returns it when training on never beats it. ``max_seconds`` boxes each phase
    alone, and ``train_seconds`` counts them all.

    ``objective(model, batch)``: the loss to minimise instead of ``model.loss(batch)`` (GRO,
    :mod:`raysteal.training.gro`); its own state is not part of ``state_path``'s.

    ``config.refit``: once early stopping has chosen, the model starts again from its initial
    weights and trains on the validation items too for the chosen epochs
    (:mod:`raysteal.training.refit`); ``result.refit`` says how. Just before, ``on_epoch`` gets
    ``{"phase": "chosen", "epoch", "best_valid_ndcg@10"}`` while the model still holds the
    first pass's weights. ``part_epochs``: pre-train each named part exactly that many epochs
    (what a refit passes).
    """
    config = make_train_config(config)
    dev = training_device(device)
    amp = _use_amp(config, dev)
    sample_seed, rng_seed, eval_seed = child_seeds(seed, 3)
    model.to(dev)
    initial = _weights(model) if config.refit else None  # where a refit starts again
    sampler = model.make_sampler(split.train, config.batch_size)
    optimizer = make_optimizer(model.parameters(), config)
    generator = _sampling_generator(sampler, dev, sample_seed)
    valid_users = _validation_users(split, config.eval_users, eval_seed)
    scale = epoch_scale(config, len(sampler))
    config = scaled_to_log(config, len(sampler), split.valid.size)  # a small log: the epoch counts grow to the reference's steps
    steps = len(sampler) if config.max_batches_per_epoch is None else min(len(sampler), config.max_batches_per_epoch)
    result = TrainResult(model=model, device=str(dev), amp=amp, epoch_scale=scale, config=config)
    state_key = _state_key(model, split, config, seed, dev, amp, steps)
    best_state: dict[str, torch.Tensor] | None = None
    stale, done, elapsed = 0, False, 0.0
    first_epoch = 1
    with private_rng(rng_seed, dev), _Progress(_show_progress(progress), config.epochs, steps) as bar:
        loop = {"format": STATE_FORMAT, "key": state_key, "model": model, "optimizer": optimizer, "generator": generator, "device": dev}
        saved = load_loop_state(state_path, **loop, restart_if_unusable=restart_if_unusable, what="target training state")
        if saved is not None:
            first_epoch, stale, done, elapsed, best_state = _restore_progress(result, saved, dev)
        elif wants_pretraining(model):  # a fresh start: the parts first (a saved state holds them fused already)
            best_state = _start_from_parts(model, split, config, seed, dev, state_path, on_epoch, valid_users, result, part_epochs)
        started = time.perf_counter() - elapsed  # the time box counts the earlier attempts' time too
        for epoch in range(first_epoch, 0 if done else config.epochs + 1):
            t0 = time.perf_counter()
            loss_sum, rows, n_steps = _run_epoch(model, sampler, optimizer, generator, dev, amp, config, steps, bar, objective)
            step_time = time.perf_counter() - t0
            result.step_seconds += step_time
            result.samples += rows
            result.epochs_run = epoch
            log: dict[str, float] = {"epoch": epoch, "loss": loss_sum / max(n_steps, 1), "step_seconds": step_time}
            out_of_time = config.max_seconds is not None and time.perf_counter() - started >= config.max_seconds
            if valid_users.size and (epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time):
                log["valid_ndcg@10"] = validation_ndcg(model, split, valid_users, device=dev)
                stale, best_state = _after_validation(model, config, result, epoch, log["valid_ndcg@10"], stale, best_state)
            result.history.append(log)
            bar.epoch_done(log)
            patience_spent = config.early_stopping and stale >= config.patience and epoch >= config.min_epochs
            patience_spent = patience_spent and (config.min_steps is None or epoch * steps >= config.min_steps)
            result.stopped_by_time = out_of_time and not patience_spent
            done = patience_spent or out_of_time or epoch == config.epochs
            if state_path is not None:
                save_loop_state(
                    state_path, **loop, progress=_progress_fields(result, stale, done, time.perf_counter() - started, best_state)
                )
            if on_epoch is not None:
                on_epoch(
                    {**log, "epochs": config.epochs, **({"best_valid_ndcg@10": result.best_valid_ndcg} if "valid_ndcg@10" in log else {})}
                )
            if done:
                break
    remove_part_states(model, state_path)  # the parts' own states, kept until the model's training is done
    _keep_best(model, config, result, best_state)
    result.train_seconds = time.perf_counter() - started + result.pretrain_seconds
    if initial is not None:
        chosen = {"epochs": result.best_epoch, "part_epochs": {n: p["best_epoch"] for n, p in result.pretrain.get("parts", {}).items()}}
        if on_epoch is not None:  # the model holds the first pass's choice until the refit starts: a caller can score it now
            on_epoch({"phase": "chosen", "epoch": result.best_epoch, "best_valid_ndcg@10": result.best_valid_ndcg})
        result.refit = refit_on_validation_items(
            model, split, config, chosen, initial, seed=seed, device=dev, state_path=state_path, on_epoch=on_epoch, objective=objective
        )
        result.train_seconds += result.refit["train_seconds"]
    return result


def _weights(model: Recommender) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _start_from_parts(
    model: Recommender,
    split: LeaveOneOut,
    config: TrainConfig,
    seed: int,
    dev: torch.device,
    state_path,
    on_epoch,
    valid_users,
    result,
    part_epochs: dict[str, int] | None = None,
) -> dict[str, torch.Tensor] | None:
    """Pre-train the parts ``model`` names and fuse them (:mod:`raysteal.training.pretrain`); the
    fused start is validated as epoch 0, the first candidate training on must beat. Returns its
    weights when early stopping keeps the best ones."""
    if not wants_pretraining(model):  # (the caller asked already; this narrows the type)
        return None
    t_pre = time.perf_counter()
    result.pretrain = pretrain(
        model, split, config, seed=seed, device=dev, state_path=state_path, on_epoch=on_epoch, part_epochs=part_epochs
    )
    best_state = None
    if valid_users.size:
        ndcg = validation_ndcg(model, split, valid_users, device=dev)
        result.pretrain["fused_valid_ndcg@10"] = result.best_valid_ndcg = ndcg
        result.best_epoch = 0
        if config.early_stopping:
            best_state = _weights(model)
    result.pretrain_seconds = time.perf_counter() - t_pre
    return best_state


def _after_validation(
    model: Recommender, config: TrainConfig, result: TrainResult, epoch: int, ndcg: float, stale: int, best_state
) -> tuple[int, dict[str, torch.Tensor] | None]:
    """Early stopping's bookkeeping after a validation: the validations without a real improvement
    (one beating the best by ``config.min_delta``, relative), and the best weights so far (the
    best, by any margin)."""
    best = result.best_valid_ndcg
    if not ndcg <= best * (1.0 + config.min_delta):  # first validation, or a real improvement
        result.best_valid_ndcg, result.best_epoch = ndcg, epoch
        return 0, (_weights(model) if config.early_stopping else best_state)
    if ndcg > best:  # better, but within the noise margin: kept, patience not reset
        result.best_valid_ndcg, result.best_epoch = ndcg, epoch
        return stale + 1, (_weights(model) if config.early_stopping else best_state)
    return stale + 1, best_state


def _keep_best(model: Recommender, config: TrainConfig, result: TrainResult, best_state) -> None:
    """The model left in eval mode with the best validated weights (early stopping), else the final ones."""
    if config.early_stopping and best_state is not None:
        model.load_state_dict(best_state)
    else:  # no validation, or early stopping off: the final weights are what we return
        result.best_epoch = result.epochs_run
        result.best_valid_ndcg = result.history[-1].get("valid_ndcg@10", float("nan"))
    model.eval()


STATE_FORMAT = "raysteal-target-training-state/1"


def make_optimizer(params: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """The train config's optimiser: AdamW (``lr``, ``weight_decay``, ``betas``), or vanilla SGD."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    return adamw(params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)


KEYLESS_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "variant": "neumf",
    "pretrain": False,
    "pretrain_alpha": 0.5,
    "pretrain_epochs": None,
    "pretrain_lr": None,
    "reference_steps_per_epoch": None,
    "negative_candidates": 1,
    "refit": False,
}
"""Model / train settings added after training states were first saved: left out of a state's key
while at their default, so a training started before they existed still resumes."""


def _at_new_default(name: str, value: Any) -> bool:
    return name in KEYLESS_DEFAULTS and value == KEYLESS_DEFAULTS[name]


def _state_key(model: Recommender, split: LeaveOneOut, config: TrainConfig, seed: int, dev: torch.device, amp: bool, steps: int) -> str:
    """What a saved loop state must have been made for (the generator's layout follows the device type)."""
    spec = model.spec()
    spec = {**spec, "config": {k: v for k, v in spec["config"].items() if not _at_new_default(k, v)}}
    spec = json.dumps(spec, sort_keys=True, default=str)
    train = config.model_dump_json(exclude={k for k in type(config).model_fields if _at_new_default(k, getattr(config, k))})
    log = split.train
    return (
        f"seed={seed} model={spec} train={train} users={log.num_users} items={log.num_items} "
        f"interactions={log.num_interactions} steps={steps} "
        f"device={dev.type} amp={amp}"
    )


def _progress_fields(
    result: TrainResult, stale: int, done: bool, elapsed: float, best_state: dict[str, torch.Tensor] | None
) -> dict[str, Any]:
    return {
        "epoch": result.epochs_run,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_valid_ndcg": result.best_valid_ndcg,
        "step_seconds": result.step_seconds,
        "samples": result.samples,
        "stopped_by_time": result.stopped_by_time,
        "pretrain": result.pretrain,
        "pretrain_seconds": result.pretrain_seconds,
        "stale": stale,
        "done": done,
        "elapsed": elapsed,
        "best_state": None if best_state is None else {k: v.detach().to("cpu") for k, v in best_state.items()},
    }


def _restore_progress(result: TrainResult, saved: dict[str, Any], dev: torch.device):
    """Put a saved state's progress back into ``result``; returns (first epoch to run, stale,
    done, elapsed seconds, best weights)."""
    result.epochs_run = result.resumed_epoch = int(saved["epoch"])
    result.history = list(saved["history"])
    result.best_epoch = int(saved["best_epoch"])
    result.best_valid_ndcg = float(saved["best_valid_ndcg"])
    result.step_seconds = float(saved["step_seconds"])
    result.samples = int(saved["samples"])
    result.stopped_by_time = bool(saved["stopped_by_time"])
    result.pretrain = dict(saved.get("pretrain") or {})
    result.pretrain_seconds = float(saved.get("pretrain_seconds", 0.0))
    best = saved["best_state"]
    best_state = None if best is None else {k: v.to(dev) for k, v in best.items()}
    return result.epochs_run + 1, int(saved["stale"]), bool(saved["done"]), float(saved["elapsed"]), best_state


def _validation_users(split: LeaveOneOut, eval_users: int | None, seed: int) -> np.ndarray:
    users = np.flatnonzero(split.valid >= 0)
    if eval_users is not None and eval_users < users.size:
        users = np.sort(np.random.default_rng(seed).choice(users, size=eval_users, replace=False))
    return users


def _run_epoch(
    model: Recommender,
    sampler: Any,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    dev: torch.device,
    amp: bool,
    config: TrainConfig,
    steps: int,
    bar: _Progress,
    objective: Callable[[Recommender, dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> tuple[float, int, int]:
    """One pass; returns (summed loss, training rows, steps). Loss is synced once, at the end."""
    model.train()
    total = torch.zeros((), device=dev)
    rows = n = 0
    for batch in sampler.epoch(generator):
        if n >= steps:
            break
        batch = to_device(batch, dev)
        forward = partial(model.loss, batch) if objective is None else partial(objective, model, batch)
        loss = training_step(optimizer, model.parameters(), forward, device=dev, amp=amp, grad_clip=config.grad_clip)
        total += loss.detach().float()
        rows += _batch_rows(batch)
        n += 1
        bar.step()
    loss_sum = float(total)
    if not np.isfinite(loss_sum):
        raise ConfigError(f"training diverged (loss {loss_sum}); lower lr (now {config.lr}) or enable grad_clip")
    return loss_sum, rows, n


class _Progress:
    """A rich progress bar over batches with one line per epoch; a no-op when disabled."""

    def __init__(self, enabled: bool, epochs: int, steps: int):
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.steps, epoch=1, epochs=self.epochs)
        return self

    def step(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_done(self, log: dict[str, float]) -> None:
        if self._bar is None:
            return
        parts = [f"epoch {int(log['epoch'])}", f"loss {log['loss']:.4f}", f"{log['step_seconds']:.1f}s"]
        if "valid_ndcg@10" in log:
            parts.append(f"valid NDCG@10 {log['valid_ndcg@10']:.4f}")
        self._bar.console.log("  ".join(parts))
        self._bar.reset(self._task, total=self.steps, epoch=int(log["epoch"]) + 1, epochs=self.epochs)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
