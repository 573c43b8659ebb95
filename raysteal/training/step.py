"""One optimisation step, shared by every training loop in the project.

:func:`raysteal.training.fit` (targets on their own loss), :func:`raysteal.training.loop.optimize`
(attacks' losses over any parameters) and :func:`raysteal.extraction.student.train_student`
(extraction students on black-box lists) differ in what they iterate over, validate and save;
the step itself -- batch to the device, forward under optional bf16 autocast, backward, optional
gradient clipping, AdamW step -- is this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch

Result = TypeVar("Result", bound="torch.Tensor | tuple[Any, ...]")  # the loss, or a tuple that starts with it


def bf16_autocast(amp: bool, device: torch.device) -> bool:
    """Whether to run forward passes under bf16 autocast: asked for, on a CUDA device that has bf16."""
    return bool(amp) and device.type == "cuda" and torch.cuda.is_bf16_supported()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of tensors on ``device`` (copies overlap with compute on a GPU)."""
    non_blocking = device.type == "cuda"
    return {name: value.to(device, non_blocking=non_blocking) for name, value in batch.items()}


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (see :func:`bf16_autocast`), else a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def adamw(params: Iterable[Any], **settings: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **settings)``, fused into one kernel per parameter when every
    parameter is a float32 CPU tensor. torch steps CPU parameters one elementwise op at a time by
    default (about ten passes over each embedding table per step, 1.4 ms for ML-1M's BPR tables);
    the fused kernel is one pass (0.3 ms; ``benchmarks/mf_step.py``). The same update up to float
    rounding; GPUs keep torch's default."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(tensors) and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    return torch.optim.AdamW(params, **settings, fused=True) if fused else torch.optim.AdamW(params, **settings)


def training_step(
    optimizer: torch.optim.Optimizer,
    params: Iterable[torch.Tensor],
    forward: Callable[[], Result],
    *,
    device: torch.device,
    amp: bool,
    grad_clip: float | None = None,
) -> Result:
    """``forward()`` under autocast, then zero-grad, backward, clip to ``grad_clip`` (L2 norm) and step.

    ``forward`` returns the loss tensor, or a tuple whose first element is it; the result is
    returned unchanged (the loss still attached, so callers detach what they keep)."""
    with autocast(device, amp):
        result = forward()
    loss = result[0] if isinstance(result, tuple) else result
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return result
