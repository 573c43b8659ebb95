"""One BAHSD student training step on a CPU thread: the previous code against the library's, and both
against the raw fp32 matrix-product limit of this machine, measured in the same run.

    python benchmarks/bahsd_step.py --rounds 5 --json results/bahsd_step.json
    python benchmarks/bahsd_step.py --profile          # adds a torch.profiler table of each path

The setting of the real-history BAHSD search (experiments/bahsd/search-real-ml1m.yaml, its best
configuration so far): a SASRec student (d = 50, 2 blocks, 1 head, dropout 0.2) on a batch of
``--sequences`` histories of long-tailed lengths (at most ``--length`` items), every prefix of at
most ``--queried`` items queried (as the 60,000-query budget buys them: about 1,900 a batch), ML-1M's 3,706 items, top-``--k`` lists, ``--negatives`` uniform negatives per prefix,
probe views at scales 0.75 / 0.5 / 0.25 of the last prefix and every 32nd before it, 4 views
trained per sequence, :class:`~raysteal.extraction.bahsd.BAHSDObjective` (KL branch with the
prefix's items excluded, stability-weighted pairwise ranking, InfoNCE against a suffix view of
every prefix, the probe views' loss), AdamW with the loop's gradient clipping (``training_step``),
``torch.set_num_threads(--threads)``.

Where the time goes (profile of the real search's step, 1 thread): the InfoNCE view — an encoder
pass over one suffix view per prefix, ``[P, W]`` = about 1,900 x 40 tokens against the prefixes'
32 x 100 — is about 80% of the step; drawing its dropout masks alone was about a third while
they came from ``bernoulli_`` (one Mersenne-twister draw per element), about a seventh (0.09 s of
0.60 s) since :func:`~raysteal.models.sequence_layers.dropout_noise` draws four per generator word.

* **old** — the code before this benchmark, kept here (:func:`reference_represent_last`): each
  view's state at its last column is ``represent(view, rows, last column)``, i.e. the whole
  encoder output ``[P, W, d]`` and a gather of its last column;
* **new** — the library's :meth:`SASRec.represent_last <raysteal.models.sasrec.SASRec.represent_last>`
  (:meth:`~raysteal.models.sequence_layers.TransformerEncoder.last`): the last block computes its
  keys and values for every column but its query, attention, feed-forward layers and norms for the
  last column only; every dropout mask is still drawn at its full shape in the same order
  (:func:`~raysteal.models.sequence_layers.dropped_last`), so the generator advances as before.

Before timing the run checks, with dropout off (eval mode) and on (the same torch seed: the same
masks), that both paths give the same loss, the same gradients (to float rounding: the last block's
weight gradients sum over fewer rows) and leave the generator in the same state. Rounds alternate
old / new / raw product; each step is timed by wall clock and by this thread's CPU time
(``time.thread_time``: what the step used, whatever else runs on the cores). Reported: median
seconds per step, the ratio old / new, the matrix-product FLOP of each path (encoder passes forward
and backward at their padded widths, the catalogue scores), the raw fp32 product rate, each path's
ratio to its own raw limit, and the seconds the step's dropout noise takes to draw alone (the
same sizes: a floor of any path that keeps the same masks). ``--smoke`` runs a tiny
setting (a test).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import step_header, write_json  # noqa: E402

ML1M_ITEMS = 3706
BEST = {  # the search's best configuration (experiments/bahsd/search-real-ml1m.yaml)
    "source": "real",
    "budget_queries": 60000,
    "max_len": 100,
    "epochs": 30,
    "batch_size": 32,
    "lr": 0.01,
    "query_batch": 4096,
    "t_min": 0.7470,
    "t_max": 5.7289,
    "temperature_gamma": 1.1333,
    "kl_scale_t2": False,
    "margin": 0.6526,
    "infonce_weight": 0.1178,
    "infonce_tau": 0.3155,
    "stability_floor": 0.7301,
    "threshold_quantile": 0.5121,
    "sharpness": 0.0721,
    "probe_scales": "0.75,0.5,0.25",
    "probe_dropout": "",
    "probe_every": 32,
    "probe_training": True,
    "probe_weight": 0.2677,
    "probe_train_views": 4,
    "probe_infonce": False,
}


# ------------------------------------------------------------------ the previous code
def reference_represent_last(student: Any, indices: torch.Tensor) -> torch.Tensor:
    """The views' states as the objective took them before: the whole encoder output, then its last column."""
    from raysteal.models.sequence_layers import last_positions

    rows, cols = last_positions(indices)
    return student.represent(indices, rows, cols)


@contextmanager
def previous_views(student: Any):
    """``student.represent_last`` as it was (:func:`reference_represent_last`) inside the block."""
    student.represent_last = functools.partial(reference_represent_last, student)
    try:
        yield
    finally:
        del student.represent_last


def path_context(path: str, student: Any):
    return previous_views(student) if path == "old" else nullcontext()


# ------------------------------------------------------------------ the setting
def long_tailed_lengths(count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """History lengths in ``[min(18, length), length]``, Pareto-tailed: as the search's real ML-1M
    histories (shortest 18, median 89, 40% cut at 100 items)."""
    low = min(18, length)
    return np.clip(np.round(low * (1 + rng.pareto(0.45, count))), low, length).astype(np.int64)


def make_setting(args: argparse.Namespace):
    """The student, the objective and one batch of the search's shapes, with probe extras."""
    from raysteal.extraction.bahsd import BAHSDConfig, suffix_inputs
    from raysteal.extraction.probing import prefix_lengths, suffix_lengths
    from raysteal.extraction.student import sample_negatives
    from raysteal.extraction.types import StudentBatch
    from raysteal.models.sequence_samplers import leading_padding
    from raysteal.training import seeded_model

    config = BAHSDConfig(**{**BEST, "max_len": args.length, "k": args.k})
    student = seeded_model({"model": "sasrec", "embedding_dim": args.dim, "max_len": args.length}, 0, args.items, seed=0).train()
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    b, width, k = args.sequences, args.length, args.k
    lengths = long_tailed_lengths(b, width, rng)
    seqs = np.full((b, width), -1, dtype=np.int64)
    for row, n in enumerate(lengths):
        seqs[row, width - n :] = rng.choice(args.items, n, replace=False) if n <= args.items else rng.integers(0, args.items, n)
    lead = int(leading_padding(torch.from_numpy(seqs)))  # the loop drops all-padding leading columns
    inputs = torch.from_numpy(seqs[:, lead:])
    prefix_len = torch.from_numpy(prefix_lengths(seqs))
    queried = (prefix_len <= args.queried) & (torch.from_numpy(seqs) >= 0)  # the budget buys the shortest prefixes
    rows, cols = torch.nonzero(queried[:, lead:], as_tuple=True)
    lists = torch.cat([torch.rand(len(part), args.items, generator=gen).argsort(1)[:, :k] for part in rows.split(4096)])
    negatives = sample_negatives(lists, args.negatives, args.items, gen)
    # probe views: scales of the last prefix and every probe_every-th before it
    spec = config.probe_spec()
    last = queried.int().cumsum(1).argmax(1)  # each sequence's last queried column
    probed = [(r, c) for r in range(b) for c in range(int(last[r]), width - 1 - int(lengths[r]), -spec.every)]
    views_per = len(spec.scales) * max(sum(1 for r2, _ in probed if r2 == r) for r in range(b))
    probe_views = torch.full((b, views_per, width), -1, dtype=torch.long)
    probe_col = torch.full((b, views_per), -1, dtype=torch.long)
    filled = [0] * b
    for r, c in probed:
        for scale in spec.scales:
            n = int(suffix_lengths(np.array([int(prefix_len[r, c])]), scale)[0])
            view = suffix_inputs(torch.from_numpy(seqs), torch.tensor([r]), torch.tensor([c]), torch.tensor([n]))[0]
            probe_views[r, filled[r], width - view.numel() :] = view
            probe_col[r, filled[r]] = c
            filled[r] += 1
    have = probe_col >= 0
    probe_lists = torch.rand(b, views_per, args.items, generator=gen).argsort(2)[..., :k].masked_fill(~have[..., None], -1)
    reliability = torch.rand(b, width, generator=gen)
    extras = {
        "reliability": reliability,
        "stability": torch.rand(b, width, k, generator=gen),
        "view_len": torch.from_numpy(suffix_lengths(prefix_len.numpy(), config.infonce_scale)),
        "probe_views": probe_views,
        "probe_lists": probe_lists,
        "probe_col": probe_col,
        "probe_reliability": torch.where(have, reliability.gather(1, probe_col.clamp(min=0)), torch.zeros(())),
        "probe_stability": torch.rand(b, views_per, k, generator=gen),
        "probe_agree": torch.rand(b, views_per, generator=gen),
    }
    objective = config.objective(float(reliability[torch.from_numpy(seqs) >= 0].quantile(config.threshold_quantile or 0.5)))
    batch = StudentBatch(torch.arange(b), inputs, rows, cols, lists, negatives, extras)
    return student, objective, batch


# ------------------------------------------------------------------ measuring
def encoder_shapes(student: Any, objective: Any, batch: Any) -> list[tuple[int, int]]:
    """``[(rows, width)]`` of every encoder pass of one step (main, InfoNCE view, probe views)."""
    shapes: list[tuple[int, int]] = []
    embed = student.encoder.embed

    def recording(indices: torch.Tensor):
        shapes.append((int(indices.shape[0]), int(indices.shape[1])))
        return embed(indices)

    student.encoder.embed = recording
    try:
        with torch.no_grad():
            objective(student, batch)
    finally:
        del student.encoder.embed
    return shapes


def step_flops(student: Any, shapes: list[tuple[int, int]], scored_rows: int, items: int) -> dict[str, float]:
    """Matrix-product FLOP of one step, forward + backward (= 3 x forward): each encoder pass at its
    padded width — the old path's every block at every column, the new path's last block at the last
    column of the view passes (its keys and values at every column) — plus the catalogue scores."""
    cfg = student.config
    d, blocks = cfg.embedding_dim, cfg.num_blocks

    def block(rows: int, width: int, queries: int) -> float:
        """Keys and values at every column; query, attention, output and feed-forward (width d) at ``queries``."""
        return rows * (4 * d * d * width + queries * (8 * d * d + 4 * width * d))

    old = new = 0.0
    for i, (rows, width) in enumerate(shapes):
        old += blocks * block(rows, width, width)
        new += (blocks - 1) * block(rows, width, width) + (block(rows, width, 1) if i > 0 else block(rows, width, width))
    scores = 2.0 * scored_rows * d * items
    return {"old_path": 3 * (old + scores), "needed": 3 * (new + scores), "scores": 3 * scores}


def dropout_draw_seconds(student: Any, shapes: list[tuple[int, int]]) -> tuple[float, float, int]:
    """``(wall, CPU, elements)``: drawing one step's dropout noise alone (the library's
    ``dropout_noise``, the same sizes)."""
    from raysteal.models.sequence_layers import dropout_noise

    cfg = student.config
    if not cfg.dropout:
        return 0.0, 0.0, 0
    d, h = cfg.embedding_dim, cfg.num_heads
    sizes = []
    for rows, width in shapes:
        sizes += [(rows, width, d)] + [(rows * h, width, width), (rows, width, d), (rows, width, d), (rows, width, d)] * cfg.num_blocks
    like = torch.empty(0)
    t0, c0 = time.perf_counter(), time.thread_time()
    for size in sizes:
        dropout_noise(size, cfg.dropout, like)
    return time.perf_counter() - t0, time.thread_time() - c0, sum(math.prod(s) for s in sizes)


def gemm_rate(size: int, repeats: int = 3) -> tuple[float, float]:
    """fp32 ``size x size`` products per second as ``(wall GFLOP/s, CPU GFLOP/s)``, best of ``repeats``."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        a @ b
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.thread_time() - c0)
    flop = 2.0 * size**3
    return flop / wall / 1e9, flop / cpu / 1e9


def one_step(path: str, student: Any, objective: Any, step: Any, batch: Any) -> tuple[float, float]:
    """``(wall, CPU)`` seconds of one training step along ``path`` (objective, backward, clip, AdamW)."""
    with path_context(path, student):
        t0, c0 = time.perf_counter(), time.thread_time()
        step(functools.partial(objective, student, batch))
        return time.perf_counter() - t0, time.thread_time() - c0


def check_same(student: Any, objective: Any, batch: Any) -> dict[str, Any]:
    """Old and new paths with dropout off (eval) and on (train, the same torch seed): the loss, the
    gradients and the generator state after the step."""
    out: dict[str, Any] = {}
    for mode in ("eval", "train"):
        results = {}
        for path in ("old", "new"):
            student.train(mode == "train")
            student.zero_grad(set_to_none=True)
            torch.manual_seed(11)
            with path_context(path, student):
                loss, _ = objective(student, batch)
            loss.backward()
            results[path] = (loss.detach(), [p.grad.clone() for p in student.parameters()], torch.rand(8))
        (old_loss, old_grads, old_next), (new_loss, new_grads, new_next) = results["old"], results["new"]
        out[mode] = {
            "loss_old": float(old_loss),
            "loss_new": float(new_loss),
            "loss_identical": bool(torch.equal(old_loss, new_loss)),
            "grads_identical": all(torch.equal(a, b) for a, b in zip(old_grads, new_grads)),
            "max_grad_abs_diff": max(float((a - b).abs().max()) for a, b in zip(old_grads, new_grads)),
            "max_grad_rel_diff": max(float((a - b).abs().max() / a.abs().max().clamp(min=1e-30)) for a, b in zip(old_grads, new_grads)),
            "max_grad_abs": max(float(g.abs().max()) for g in old_grads),
            "same_draws_after": bool(torch.equal(old_next, new_next)),
        }
    student.train()
    student.zero_grad(set_to_none=True)
    return out


def profile_table(path: str, student: Any, objective: Any, step: Any, batch: Any, rows: int = 20) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_step(path, student, objective, step, batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--items", type=int, default=ML1M_ITEMS)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queried", type=int, default=74, help="prefixes of at most this many items are queried")
    parser.add_argument("--negatives", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gemm", type=int, default=2048, help="side of the square fp32 product timed as the raw limit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step of each path")
    parser.add_argument("--smoke", action="store_true", help="a tiny setting (tests)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sequences, args.length, args.items, args.dim, args.k, args.negatives, args.queried = 4, 40, 60, 8, 5, 5, 30
        args.rounds, args.gemm = min(args.rounds, 1), 128
    if min(args.sequences, args.length, args.items, args.dim, args.k, args.rounds, args.gemm, args.threads) < 1 or args.negatives < 0:
        parser.error("sizes, --rounds, --gemm and --threads must be >= 1, --negatives >= 0")
    if args.k > args.items:
        parser.error("--k must not exceed --items")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from raysteal.training.step import training_step
    from raysteal.training.trainer import training_device

    training_device("cpu")  # as train_student: glibc keeps freed memory (raysteal.training.cpu_memory)
    load_before = os.getloadavg()
    student, objective, batch = make_setting(args)
    shapes = encoder_shapes(student, objective, batch)
    flops = step_flops(student, shapes, int(batch.rows.numel()) + shapes[-1][0] * (len(shapes) > 2), args.items)
    same = check_same(student, objective, batch)
    start = {name: value.clone() for name, value in student.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=BEST["lr"])
    step = functools.partial(training_step, optimizer, params, device=torch.device("cpu"), amp=False, grad_clip=5.0)
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    rates: list[tuple[float, float]] = []
    draws: list[tuple[float, float, int]] = []
    for path in ("old", "new"):  # warm-up: allocator, first-call costs
        one_step(path, student, objective, step, batch)
    for _ in range(args.rounds):
        for path in ("old", "new"):
            student.load_state_dict(start)
            times[path].append(one_step(path, student, objective, step, batch))
        rates.append(gemm_rate(args.gemm))
        draws.append(dropout_draw_seconds(student, shapes))
    rate = {u: statistics.median(r[i] for r in rates) for i, u in enumerate(("wall", "cpu"))}
    cfg = student.config
    result: dict[str, Any] = {
        **step_header("bahsd_step", args, cfg, int(batch.rows.numel()), encoder_passes=[list(s) for s in shapes], attack=BEST),
        "checks": same,
        "flops": flops,
        "gemm": {"size": args.gemm, "gflops_wall": rate["wall"], "gflops_cpu": rate["cpu"], "rounds": [list(r) for r in rates]},
        "dropout_draw_seconds": {
            "wall": statistics.median(d[0] for d in draws),
            "cpu": statistics.median(d[1] for d in draws),
            "elements": draws[0][2],
        },
        "load_average": {"before": list(load_before), "after": list(os.getloadavg()), "cores": os.cpu_count()},
    }
    for path, flop in (("old", flops["old_path"]), ("new", flops["needed"])):
        runs = times[path]
        result[path] = {f"step_seconds_{u}": statistics.median(r[i] for r in runs) for i, u in enumerate(("wall", "cpu"))}
        result[path].update(rounds_wall=[r[0] for r in runs], rounds_cpu=[r[1] for r in runs], flop=flop)
        result[path]["ratio_to_raw_limit"] = {u: result[path][f"step_seconds_{u}"] / (flop / (rate[u] * 1e9)) for u in ("wall", "cpu")}
    result["speedup"] = {u: result["old"][f"step_seconds_{u}"] / result["new"][f"step_seconds_{u}"] for u in ("wall", "cpu")}
    _print(result, args)
    if args.profile:
        for path in ("old", "new"):
            print(f"\n--- torch.profiler, one {path} step ---\n" + profile_table(path, student, objective, step, batch))
    write_json(args.json, result)
    return result


def _print(result: dict[str, Any], args: argparse.Namespace) -> None:
    setting, same, flops, draws = result["setting"], result["checks"], result["flops"], result["dropout_draw_seconds"]
    print(
        f"device {result['device']}, {args.threads} thread(s), torch {torch.__version__}; sasrec d={args.dim}, "
        f"{args.sequences} sequences <= {args.length} items, {setting['prefixes']} prefixes, {args.items} items, top-{args.k}, "
        f"{args.negatives} negatives; encoder passes (rows, width) {setting['encoder_passes']}"
    )
    for mode in ("eval", "train"):
        c = same[mode]
        print(
            f"check {mode}: loss old {c['loss_old']:.7f} new {c['loss_new']:.7f} (identical {c['loss_identical']}), grads identical "
            f"{c['grads_identical']}, max |grad diff| {c['max_grad_abs_diff']:.2e} (relative {c['max_grad_rel_diff']:.2e}), "
            f"same draws after {c['same_draws_after']}"
        )
    print(
        f"matrix products: old path {flops['old_path'] / 1e9:.2f} GFLOP, new {flops['needed'] / 1e9:.2f} "
        f"(catalogue scores {flops['scores'] / 1e9:.2f}); raw fp32 ({args.gemm}^3) {result['gemm']['gflops_wall']:.1f} GFLOP/s wall, "
        f"{result['gemm']['gflops_cpu']:.1f} CPU"
    )
    print(
        f"drawing the step's {draws['elements'] / 1e6:.1f} M dropout mask elements alone: {draws['wall']:.3f} s wall, {draws['cpu']:.3f} s CPU"
    )
    for u in ("wall", "cpu"):
        old, new = result["old"], result["new"]
        print(
            f"step ({u}): old {old[f'step_seconds_{u}']:.3f} s, new {new[f'step_seconds_{u}']:.3f} s, speedup {result['speedup'][u]:.2f}x; "
            f"ratio to the raw limit old {old['ratio_to_raw_limit'][u]:.1f}x, new {new['ratio_to_raw_limit'][u]:.1f}x"
        )
    load = result["load_average"]
    print(f"load average (1 min) {load['before'][0]:.2f} before, {load['after'][0]:.2f} after, on {load['cores']} cores", flush=True)


if __name__ == "__main__":
    main()
