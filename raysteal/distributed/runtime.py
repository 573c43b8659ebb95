"""The one place that starts or joins Ray (everything else in raysteal runs without it)."""

from __future__ import annotations

import os
from typing import Any

from raysteal.errors import ConfigError
from raysteal.termination import reclaim_sigterm

RAY_ENV_DEFAULTS = {"RAY_AUTH_MODE": "disabled", "RAY_AIR_NEW_OUTPUT": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    quiet: bool = True,
    num_gpus: int | None = None,
):
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray runtime
    (``num_gpus=0`` hides the GPUs from it, e.g. for a CPU-only measurement)."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": not quiet, "include_dashboard": False}
    if address:
        if address not in ("auto", "local"):
            check_reachable(address)
        ray.init(address=address, **kwargs)
    else:
        _LOCAL["started"] = True
        ray.init(
            num_cpus=num_cpus,
            **({} if num_gpus is None else {"num_gpus": num_gpus}),
            object_store_memory=(object_store_mb or 512) * 2**20,
            _temp_dir=os.environ.get("RAYSTEAL_RAY_TMP", "/tmp/ray"),
            **kwargs,
        )
    reclaim_sigterm()  # ray.init took SIGTERM over; a command stopping politely wants it back
    return ray


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a cluster address nothing answers at, in seconds (``ray.init`` retries for minutes
    before it gives up). ``address`` is ``host:port`` or ``ray://host:port``."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"cluster address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({err.strerror or err}); start one there with "
            f"`ray start --head`, or leave --address out to run locally"
        ) from None


_LOCAL = {"started": False}  # whether init_ray started the runtime here (no autoscaler can add nodes)


def check_fits(cpus: float, gpus: float, what: str) -> None:
    """Refuse a task shape this local runtime can never schedule (Ray would wait forever); on a
    cluster joined by address an autoscaler may still add the nodes, so nothing is checked."""
    if not _LOCAL["started"]:
        return
    import ray

    have = ray.cluster_resources()
    for name, want, option in (("CPU", cpus, "--num-cpus"), ("GPU", gpus, None)):
        if want > have.get(name, 0.0) + 1e-9:
            hint = f"; raise {option}" if option else ""
            raise ConfigError(f"{what} asks for {want:g} {name}(s) each, but this local Ray runtime has {have.get(name, 0.0):g}{hint}")


def gpu_share(per_gpu: int = 4) -> float:
    """Fractional GPU per worker (``1/per_gpu``) when the cluster has GPUs, else 0."""
    import ray

    return 1.0 / per_gpu if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def worker_device() -> str:
    """The device a Ray worker should use: the GPU Ray assigned it, else CPU (also outside Ray:
    ``ray.get_gpu_ids`` would start a local runtime there)."""
    import ray
    import torch

    if not ray.is_initialized():
        return "cpu"
    try:
        gpus = ray.get_gpu_ids()
    except Exception:
        gpus = []
    return "cuda" if gpus and torch.cuda.is_available() else "cpu"
