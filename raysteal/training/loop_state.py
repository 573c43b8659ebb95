"""The whole state of a training loop after an epoch, written atomically, so a loop that dies
goes on from its last finished epoch and ends exactly where an uninterrupted one would.

A state holds the weights, the optimiser's moments, the batch-sampling generator, torch's global
RNG (dropout), and the loop's own progress fields (epoch, history, counters, ...); ``key`` names
what it was made for (seed, data, settings, device type) and a state made for anything else is
refused. Used by the target trainer (:func:`raysteal.training.fit`) and the extraction student
(:mod:`raysteal.extraction.training_state`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from raysteal.errors import ConfigError
from raysteal.training.checkpoint import atomic_torch_save

_RESERVED = ("format", "key", "optimizer", "generator", "cpu_rng", "cuda_rng")


def save_loop_state(
    path: str | os.PathLike,
    *,
    format: str,
    key: str,
    progress: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    weights_field: str = "model",
) -> None:
    """Write the loop's state to ``path`` (temp file, then ``os.replace``); ``progress`` fields
    are stored at the top level beside the weights (under ``weights_field``)."""
    clash = [name for name in progress if name in _RESERVED or name == weights_field]
    if clash:
        raise ValueError(f"progress fields {clash} clash with the state's own fields")
    payload: dict[str, Any] = {
        "format": format,
        "key": key,
        **progress,
        weights_field: {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    atomic_torch_save(payload, path)


def load_loop_state(
    path: str | os.PathLike | None,
    *,
    format: str,
    key: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    weights_field: str = "model",
    restart_if_unusable: bool = False,
    what: str = "training state",
) -> dict[str, Any] | None:
    """Restore the state at ``path`` into the given objects and return its progress fields
    (``None``: no file, a fresh start).

    A file that is not a ``format`` state, or was made for another loop (``key``), is a
    ``ConfigError`` and nothing is changed. With ``restart_if_unusable`` (a file the caller owns)
    such a file is ignored with a warning and ``None`` returned; the next save replaces it.
    """
    if path is None or not Path(path).exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or payload.get("format") != format:
            raise ConfigError(f"{what} {path}: not a {format} file; delete it to start afresh")
        if payload["key"] != key:
            raise ConfigError(
                f"{what} {path} was made for another run ({payload['key']}, this one is {key}); delete it or pass another path"
            )
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same error to the user
        message = str(err) if isinstance(err, ConfigError) else f"{what} {path}: unreadable ({err}); delete it to start afresh"
        if restart_if_unusable:
            warnings.warn(f"{message}; training starts afresh", RuntimeWarning, stacklevel=3)
            return None
        raise ConfigError(message) from None
    model.load_state_dict(payload[weights_field])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["cpu_rng"])
    if device.type == "cuda" and payload["cuda_rng"] is not None:
        torch.cuda.set_rng_state(payload["cuda_rng"], device)
    return {k: v for k, v in payload.items() if k not in _RESERVED and k != weights_field}
