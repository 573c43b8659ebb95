"""Shared benchmark plumbing: JSON output, device naming, timing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def require_positive(parser: argparse.ArgumentParser, args: Any, *names: str) -> None:
    """argparse's one-line error (exit 2, nothing written) for the first of ``names`` below 1."""
    small = [name for name in names if getattr(args, name) < 1]
    if small:
        parser.error(f"--{small[0]} must be at least 1, got {getattr(args, small[0])}")


def same_loss_and_gradients(
    what: str, before: tuple[float, list[Any]], after: tuple[float, list[Any]], names: tuple[str, str] = ("old", "new")
) -> dict[str, float]:
    """The checks of two paths' ``(loss, gradients)``: equal to float rounding (relative 1e-5 on
    the loss, 1e-6 + 1e-4 of the largest gradient entry), else exit with a line naming ``what``."""
    (loss_a, grads_a), (loss_b, grads_b) = before, after
    checks = {
        f"loss_{names[0]}": loss_a,
        f"loss_{names[1]}": loss_b,
        "max_grad_abs_diff": max(float((a - b).abs().max()) for a, b in zip(grads_a, grads_b)),
        "max_grad_abs": max(float(a.abs().max()) for a in grads_a),
    }
    if abs(loss_a - loss_b) > 1e-5 * max(1.0, abs(loss_a)) or checks["max_grad_abs_diff"] > 1e-6 + 1e-4 * checks["max_grad_abs"]:
        raise SystemExit(f"{what}: the {names[1]} path differs from the {names[0]} one: {checks}")
    return checks


def alternating_rounds(
    rounds: int, before: Callable[[], float], after: Callable[[], float], names: tuple[str, str] = ("old", "new")
) -> dict[str, Any]:
    """Time two paths ``rounds`` times, alternating (each callable returns its seconds): the
    median of each (``<name>_seconds_cpu``), the median of the rounds' ratios and every round."""
    times: dict[str, list[float]] = {names[0]: [], names[1]: []}
    for _ in range(rounds):
        times[names[0]].append(before())
        times[names[1]].append(after())
    return {
        f"{names[0]}_seconds_cpu": statistics.median(times[names[0]]),
        f"{names[1]}_seconds_cpu": statistics.median(times[names[1]]),
        "speedup_median_of_pairs": statistics.median(a / b for a, b in zip(times[names[0]], times[names[1]])),
        "rounds_cpu": times,
    }


def read_json_rows(path: Path | None) -> list[dict[str, Any]]:
    """The rows an earlier invocation wrote to ``--json`` as a JSON list (none when it does not
    exist); anything else ends the run with a one-line error and leaves the file as it is."""
    if path is None or not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except ValueError as err:
        raise SystemExit(f"{path}: not the JSON list this benchmark writes ({err}); move it away") from None
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: not the JSON list this benchmark writes; move it away")
    return rows


def write_json(path: str | None, payload: Any) -> None:
    """Write ``payload`` atomically to ``path`` (if given)."""
    if not path:
        return
    from raysteal.atomic import write_text_atomically

    write_text_atomically(path, json.dumps(payload, indent=2))


def sequence_benchmark_parser(description: str, models: str) -> argparse.ArgumentParser:
    """Arguments shared by the per-model training benchmarks (dataset, models, seed, threads, JSON)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--models", default=models, help="comma-separated registered names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    parser.add_argument("--json", default=None)
    return parser


def training_log(args: Any) -> tuple[Any, list[str]]:
    """Set the thread count; the dataset's leave-one-out training log and the model names."""
    from raysteal.data import load_dataset
    from raysteal.training import make_split

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    return make_split(load_dataset(args.dataset), "leave_one_out").train, names


def topk_agreement(lists_a: Any, lists_b: Any) -> dict[str, float]:
    """How far two ``[rows, k]`` ranked lists of the same inputs agree: the mean share of ``a``'s
    items that ``b`` also lists (overlap@k) and the share of rows with the same first item."""
    import numpy as np

    a, b = np.asarray(lists_a), np.asarray(lists_b)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"lists must be two non-empty [rows, k] arrays of one shape, got {a.shape} and {b.shape}")
    overlap = (a[:, :, None] == b[:, None, :]).any(-1).mean()
    return {"overlap@k": float(overlap), "top1": float((a[:, 0] == b[:, 0]).mean()), "rows": int(a.shape[0]), "k": int(a.shape[1])}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most ``(start, end)`` intervals open at one moment (how many ran at once)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda ev: (ev[0], ev[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table (cells converted with ``str``; ``|`` escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load_actors(count: int, threads: int = 1) -> list:
    """``count`` Ray actors that generate black-box load: ``run(client, inputs, k, until)`` sends
    ``inputs`` through ``client`` until wall time ``until`` and returns the rows answered; up to
    ``threads`` such loops run at once per actor. Started and warmed (imports paid) before return,
    so no clock includes their start."""
    import ray

    @ray.remote(num_cpus=0)
    class Load:
        def ready(self) -> bool:
            import raysteal.oracle  # noqa: F401  (pay the imports before timing)

            return True

        def run(self, client, inputs, k: int, until: float) -> int:
            done = 0
            while time.time() < until:
                done += len(client.query(inputs, k))
            return done

    actors = [Load.options(max_concurrency=threads).remote() for _ in range(count)]
    ray.get([a.ready.remote() for a in actors])
    return actors


def step_header(benchmark: str, args: Any, model_config: Any, prefixes: int, **setting: Any) -> dict[str, Any]:
    """The head of a student-step benchmark's JSON (``student_step``, ``bahsd_step``): machine,
    threads, torch, and the SASRec student's setting (``setting`` adds the benchmark's own keys)."""
    return {
        "benchmark": benchmark,
        "device": device_name("cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
        "setting": {
            "model": "sasrec",
            "dim": args.dim,
            "blocks": model_config.num_blocks,
            "heads": model_config.num_heads,
            "dropout": model_config.dropout,
            "sequences": args.sequences,
            "length": args.length,
            "prefixes": prefixes,
            **setting,
            "items": args.items,
            "k": args.k,
            "negatives": args.negatives,
            "smoke": args.smoke,
        },
    }
