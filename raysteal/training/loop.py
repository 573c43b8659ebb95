"""A small generic optimisation loop: batches in, a loss function, Adam(W) steps out.

:func:`raysteal.training.fit` trains a model on *its own* sampler and loss with validation and
early stopping; attacks need something leaner — any loss over any parameters (a clone's user
embeddings only, a fused clone's attention, ...), driven by any batch source, for a number of
epochs fixed in advance. Batches are dicts of tensors, drawn on the CPU with an explicit
``torch.Generator`` and moved to ``device`` here; on a GPU the forward pass may run under bf16
autocast. The loss is synchronised once per epoch, never per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from raysteal.errors import ConfigError
from raysteal.training.step import adamw, bf16_autocast, to_device, training_step
from raysteal.training.trainer import training_device

Batch = dict[str, torch.Tensor]
EpochSource = Callable[[torch.Generator], Iterator[Batch]]


@dataclass
class LoopResult:
    """What :func:`optimize` did: mean loss per epoch, steps, rows and seconds."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    rows: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "epochs": len(self.losses),
            "first_loss": self.losses[0] if self.losses else float("nan"),
            "last_loss": self.losses[-1] if self.losses else float("nan"),
            "steps": self.steps,
            "rows": self.rows,
            "seconds": self.seconds,
        }


def trainable_parameters(model_or_params: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors to optimise: a module's parameters that require grad, or the given tensors."""
    params = model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    out = [p for p in params if p.requires_grad]
    if not out:
        raise ConfigError("nothing to optimise: no parameter requires grad")
    return out


def _epochs_of(source: Any) -> EpochSource:
    """Accept a callable ``generator -> batches`` or a sampler with ``.epoch(generator)``."""
    if hasattr(source, "epoch"):
        return source.epoch
    epochs: EpochSource = source
    if callable(epochs):
        return epochs
    raise ConfigError(f"sampler_epochs must be callable or have .epoch(generator), got {type(source).__name__}")


def optimize(
    model_or_params: nn.Module | Iterable[torch.Tensor],
    sampler_epochs: EpochSource | Any,
    loss_fn: Callable[[Batch], torch.Tensor],
    epochs: int,
    lr: float,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    amp: bool = False,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> LoopResult:
    """Minimise ``loss_fn(batch)`` for ``epochs`` passes of ``sampler_epochs(generator)``.

    AdamW (``weight_decay = 0`` is plain Adam, as in Zhu et al. App. A.1) over the trainable
    parameters of ``model_or_params``. ``amp`` enables bf16 autocast on a CUDA device (ignored
    elsewhere). ``on_epoch(epoch, mean_loss)`` is called after each epoch (1-based; e.g. to
    validate). Modules are in train mode while stepping and in eval mode afterwards. Raises
    ``ConfigError`` when the loss is not finite.
    """
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    dev = training_device(device)
    params = trainable_parameters(model_or_params)
    module = model_or_params if isinstance(model_or_params, nn.Module) else None
    draw = _epochs_of(sampler_epochs)
    optimizer = adamw(params, lr=lr, weight_decay=weight_decay)
    use_amp = bf16_autocast(amp, dev)
    result = LoopResult()
    started = time.perf_counter()
    if module is not None:
        module.train()
    for epoch in range(1, epochs + 1):
        total = torch.zeros((), device=dev)
        n = 0
        for batch in draw(generator):
            batch = to_device(batch, dev)
            loss = training_step(optimizer, params, partial(loss_fn, batch), device=dev, amp=use_amp, grad_clip=grad_clip)
            total += loss.detach().float()
            n += 1
            result.rows += int(next(iter(batch.values())).shape[0])
        mean = float(total) / max(n, 1)
        if not np.isfinite(mean):
            raise ConfigError(f"optimisation diverged (loss {mean}); lower lr (now {lr})")
        result.losses.append(mean)
        result.steps += n
        if on_epoch is not None:
            on_epoch(epoch, mean)
            if module is not None:
                module.train()
    if module is not None:
        module.eval()
    result.seconds = time.perf_counter() - started
    return result
