"""Shared benchmark plumbing: JSON output, device naming, timing."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rate(fn: Callable[[], int], device: str | torch.device, min_seconds: float = 1.0, warmup: int = 2) -> float:
    """Items per second of ``fn`` (which returns how many items it processed), repeated ≥ ``min_seconds``."""
    for _ in range(warmup):
        fn()
    sync(device)
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def write_json(path: str | None, payload: Any) -> None:
    """Write ``payload`` atomically to ``path`` (if given)."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, target)
