"""One DFME student training step on a CPU thread: today's code against the previous code, and both
against the raw fp32 matrix-product limit of this machine, measured in the same run.

    python benchmarks/student_step.py --rounds 5 --json results/student_step.json
    python benchmarks/student_step.py --profile          # adds a torch.profiler table of each path

The setting of issue 22 item 4: a SASRec student (d = 64, 2 blocks, 1 head, dropout 0.2, the
model's defaults) trained on ``--sequences`` synthetic sequences of ``--length`` items, every
prefix queried (128 x 200 = 25,600 prefixes), ML-1M's 3,706 items, top-``--k`` lists, ``--negatives``
uniform negatives per prefix, Yue et al.'s ranking loss (DFME's objective), AdamW with the loop's
gradient clipping, ``torch.set_num_threads(--threads)`` (1 by default), glibc's malloc tuned as
the training loop tunes it (:func:`raysteal.training.cpu_memory.retain_freed_memory`). One step
is what :func:`raysteal.extraction.student.train_student` does per batch after cutting it: sample
the negatives, score the prefixes, the loss, backward, clip, AdamW.

* **old** — the code before this benchmark, kept here: negatives checked by a sort and a search
  per row (:func:`reference_sample_negatives`), the encoder's attention through
  ``scaled_dot_product_attention`` (:func:`previous_encoder`), every dropout mask drawn by
  ``F.dropout``'s ``bernoulli_`` (:func:`bernoulli_draws`), full-catalogue scores ``[P, N]``
  and a gather of the listed and negative columns (:func:`reference_scores`), the loss as
  composed ops (:func:`reference_ranking_loss`);
* **new** — the library's code: :func:`~raysteal.extraction.student.sample_negatives` (a
  membership bitmap), :func:`~raysteal.models.sequence_layers.dropout_attention` (the same
  computation, less around it), dropout noise from
  :func:`~raysteal.models.sequence_layers.dropout_noise` (four 16-bit draws per generator word),
  the 200 needed scores per prefix only
  (:func:`~raysteal.models.sequence_layers.sampled_scores`) and the fused hinge of
  :func:`~raysteal.extraction.losses.ranking_loss_terms`, i.e.
  :class:`~raysteal.extraction.student.DFMEObjective`.

Both paths take the same batch and start each timed step from the same weights; before timing,
the run checks that they give the same negatives, and the same loss and gradients with dropout
off and on (on: both paths drawing ``F.dropout``'s masks from the same seed, so they are the same
masks; timed, the new path draws its own). Rounds alternate
old / new / raw product so that load from other processes on a shared machine hits all alike;
each phase is timed by wall clock and by this thread's CPU time (``time.thread_time``: what the
step itself used, whatever else runs on the cores). Reported: median seconds per step, the ratio
old / new, the FLOP count of the matrix products the step needs (encoder forward and backward at
full attention width, plus the listed and negative scores forward and backward; the full scores
the old path computes are counted apart), the raw fp32 product rate (``--gemm`` square matrices,
one call), the raw limit ``flop / rate`` and each path's ratio to it, and the seconds the step's
dropout noise takes to draw alone, by each path's draw (the same sizes). ``--smoke`` runs a
tiny setting (a test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import step_header, write_json  # noqa: E402

ML1M_ITEMS = 3706
PHASES = ("negatives", "encoder", "scores", "loss", "backward", "optimizer")


# ------------------------------------------------------------------ the previous code
def reference_sample_negatives(lists: torch.Tensor, count: int, num_items: int, generator: torch.Generator) -> torch.Tensor:
    """``sample_negatives`` as it was: collisions found by sorting each list and searching it."""
    rows = lists.shape[0]
    negatives = torch.randint(0, num_items, (rows, count), generator=generator, device=lists.device)
    if count == 0 or rows == 0 or lists.shape[1] == 0:
        return negatives
    ordered = lists.long().sort(dim=1).values.contiguous()
    last = ordered.shape[1] - 1

    def in_list(row_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        table = ordered[row_ids]
        pos = torch.searchsorted(table, values).clamp_(max=last)
        return table.gather(1, pos) == values

    hit_rows, hit_cols = torch.nonzero(in_list(torch.arange(rows, device=lists.device), negatives), as_tuple=True)
    for _ in range(4):
        if hit_rows.numel() == 0:
            return negatives
        draws = torch.randint(0, num_items, (hit_rows.numel(),), generator=generator, device=lists.device)
        negatives[hit_rows, hit_cols] = draws
        still = in_list(hit_rows, draws[:, None]).squeeze(1)
        hit_rows, hit_cols = hit_rows[still], hit_cols[still]
    negatives[hit_rows, hit_cols] = -1
    return negatives


def _reference_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def reference_ranking_loss(
    list_scores: torch.Tensor, neg_scores: torch.Tensor, lists: torch.Tensor, negatives: torch.Tensor, margin: float = 0.5
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``ranking_loss_terms`` as it was (composed ops), summed as ``ranking_loss`` sums them."""
    list_valid, neg_valid = lists >= 0, negatives >= 0
    pairs = F.relu(margin - (list_scores[:, :-1] - list_scores[:, 1:]))
    pair_term = _reference_masked_mean(pairs, list_valid[:, :-1] & list_valid[:, 1:])
    k, q = list_scores.shape[1], neg_scores.shape[1]
    idx = torch.arange(max(k, q), device=list_scores.device)
    pos, neg = list_scores[:, idx % k], neg_scores[:, idx % q]
    negative_term = _reference_masked_mean(F.relu(margin - (pos - neg)), list_valid[:, idx % k] & neg_valid[:, idx % q])
    return pair_term + negative_term, {"rank_pairs": pair_term.detach(), "rank_negatives": negative_term.detach()}


def reference_scores(student: Any, hidden: torch.Tensor, lists: torch.Tensor, negatives: torch.Tensor):
    """The previous ``DFMEObjective``'s scoring: full-catalogue scores ``[P, N]``, then the needed columns."""
    scores = student.logits(hidden).float()
    return scores.gather(1, lists.long().clamp(min=0)), scores.gather(1, negatives.long().clamp(min=0))


def _reference_attention_forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``MultiHeadSelfAttention.forward`` as it was: ``scaled_dot_product_attention`` with dropout."""
    batch, length, dim = x.shape
    q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
    return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


def _reference_encoder_forward(self, indices: torch.Tensor) -> torch.Tensor:
    """``TransformerEncoder.forward`` as it was: a bool mask handed to every block."""
    from raysteal.models.sequence_layers import PAD_INDEX, attention_mask, right_aligned_positions

    valid = indices != PAD_INDEX
    pos = right_aligned_positions(indices.shape[1], self.max_len, indices.device)
    x = self.items(indices) * self.scale + self.positions(pos)[None]
    x = self.drop(self.input_norm(x)) * valid[..., None]
    mask = attention_mask(valid, self.causal)
    for block in self.blocks:
        x = block(x, mask)
    return self.output_norm(x)


@contextmanager
def bernoulli_draws():
    """Every dropout layer of the library draws ``F.dropout``'s masks (``bernoulli_noise``, one
    generator draw per element) instead of ``dropout_noise``'s, put back on leaving."""
    from raysteal.models import sequence_layers as layers

    saved = layers.dropout_noise
    layers.dropout_noise = layers.bernoulli_noise
    try:
        yield
    finally:
        layers.dropout_noise = saved


@contextmanager
def previous_encoder():
    """The transformer encoder's previous forward passes and dropout draws, put back on leaving."""
    from raysteal.models import sequence_layers as layers

    saved = layers.MultiHeadSelfAttention.forward, layers.TransformerEncoder.forward
    layers.MultiHeadSelfAttention.forward, layers.TransformerEncoder.forward = _reference_attention_forward, _reference_encoder_forward
    try:
        with bernoulli_draws():
            yield
    finally:
        layers.MultiHeadSelfAttention.forward, layers.TransformerEncoder.forward = saved


def new_scores(student: Any, hidden: torch.Tensor, lists: torch.Tensor, negatives: torch.Tensor):
    """Today's ``DFMEObjective`` scoring: the listed and negative items only."""
    from raysteal.extraction.losses import scored_items

    scores = student.scores_at(hidden, scored_items(lists, negatives)).float()
    return scores[:, : lists.shape[1]], scores[:, lists.shape[1] :]


def reference_objective(student: Any, batch: Any, margin: float = 0.5):
    """The previous ``DFMEObjective.__call__`` (full scores, composed loss; the encoder is as found)."""
    from raysteal.extraction.student import student_hidden

    list_scores, neg_scores = reference_scores(student, student_hidden(student, batch), batch.lists, batch.negatives)
    return reference_ranking_loss(list_scores, neg_scores, batch.lists.long(), batch.negatives.long(), margin)


def path_parts(path: str) -> tuple[Callable, Callable, Callable, Callable]:
    """``(sample_negatives, scores, loss, encoder context)`` of ``path`` ("old" or "new")."""
    from raysteal.extraction.losses import ranking_loss_scored
    from raysteal.extraction.student import sample_negatives

    if path == "old":
        return reference_sample_negatives, reference_scores, reference_ranking_loss, previous_encoder
    return sample_negatives, new_scores, ranking_loss_scored, nullcontext


# ------------------------------------------------------------------ the setting
def step_flops(sequences: int, length: int, dim: int, blocks: int, ffn: int, prefixes: int, scored: int, items: int) -> dict[str, float]:
    """Matrix-product FLOPs of one step (forward + backward = 3x forward)."""
    tokens = sequences * length
    block = 2 * tokens * dim * 3 * dim + 2 * tokens * dim * dim + 2 * 2 * tokens * dim * ffn + 2 * 2 * sequences * length * length * dim
    encoder = 3 * blocks * block
    needed_scores = 3 * 2 * prefixes * scored * dim
    full_scores = 3 * 2 * prefixes * items * dim
    return {
        "encoder": float(encoder),
        "needed_scores": float(needed_scores),
        "full_scores": float(full_scores),
        "needed": float(encoder + needed_scores),
        "old_path": float(encoder + full_scores),
    }


def make_setting(args: argparse.Namespace):
    """The student and a batch of every prefix of random full-length sequences with their lists."""
    from raysteal.extraction.types import StudentBatch
    from raysteal.training import seeded_model

    student = seeded_model({"model": "sasrec", "embedding_dim": args.dim, "max_len": args.length}, 0, args.items, seed=0).train()
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, args.items, (args.sequences, args.length), generator=gen)
    rows = torch.arange(args.sequences).repeat_interleave(args.length)
    cols = torch.arange(args.length).repeat(args.sequences)
    # distinct listed items per prefix, as the black box answers (k of the catalogue, random order)
    lists = (
        torch.cat([torch.rand(len(part), args.items, generator=gen).argsort(1)[:, : args.k] for part in rows.split(4096)])
        if rows.numel()
        else torch.zeros(0, args.k, dtype=torch.long)
    )
    batch = StudentBatch(torch.arange(args.sequences), inputs, rows, cols, lists, torch.zeros(len(rows), 0, dtype=torch.long))
    return student, batch


# ------------------------------------------------------------------ timing
class Clock:
    """Wall and thread-CPU seconds per phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._mark = (time.perf_counter(), time.thread_time())

    def lap(self, phase: str) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        self.wall[phase] = self.wall.get(phase, 0.0) + wall - self._mark[0]
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu - self._mark[1]
        self._mark = (wall, cpu)


def one_step(
    path: str,
    student: Any,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    args: argparse.Namespace,
    seed: int = 1,
    clock: Clock | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step along ``path``: negatives, encoder, scores, loss, backward, clip + AdamW."""
    from raysteal.extraction.student import student_hidden

    sample, score, loss_fn, encoder = path_parts(path)
    clock = clock or Clock()
    with encoder():
        negatives = sample(batch.lists, args.negatives, args.items, torch.Generator().manual_seed(seed))
        clock.lap("negatives")
        hidden = student_hidden(student, batch)
        clock.lap("encoder")
        list_scores, neg_scores = score(student, hidden, batch.lists, negatives)
        clock.lap("scores")
        loss, _ = loss_fn(list_scores, neg_scores, batch.lists.long(), negatives.long(), 0.5)
        clock.lap("loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap("backward")
        torch.nn.utils.clip_grad_norm_(list(student.parameters()), 5.0)
        optimizer.step()
        clock.lap("optimizer")
    return loss.detach(), negatives


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


def dropout_draw_seconds(student: Any, sequences: int, length: int) -> dict[str, tuple[float, float]]:
    """``(wall, CPU)`` seconds to draw one step's dropout noise alone, by ``F.dropout``'s draw (the
    old path's ``bernoulli_noise``) and by the library's (``dropout_noise``), the same shapes."""
    from raysteal.models.sequence_layers import bernoulli_noise, dropout_noise

    cfg = student.config
    if not cfg.dropout:
        return {"old": (0.0, 0.0), "new": (0.0, 0.0)}
    dim, heads = cfg.embedding_dim, cfg.num_heads
    sizes = [(sequences, length, dim)] + [(sequences, heads, length, length)] + [(sequences, length, dim)] * 3
    sizes = sizes[:1] + sizes[1:] * cfg.num_blocks  # the input, then per block: attention weights, 3 activations
    like = torch.empty(0)
    out = {}
    for path, draw in (("old", bernoulli_noise), ("new", dropout_noise)):
        t0, c0 = time.perf_counter(), time.thread_time()
        for size in sizes:
            draw(size, cfg.dropout, like)
        out[path] = (time.perf_counter() - t0, time.thread_time() - c0)
    return out


def check_same(student: Any, batch: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Old and new paths: identical negatives; equal loss and gradients with dropout off (eval
    mode) and on (training mode, the same torch seed and both drawing ``F.dropout``'s masks: the
    new path's own draws, ``dropout_noise``, are other masks of the same law)."""
    import copy

    from raysteal.extraction.student import DFMEObjective, sample_negatives

    negatives = sample_negatives(batch.lists, args.negatives, args.items, torch.Generator().manual_seed(7))
    same_negatives = torch.equal(
        negatives, reference_sample_negatives(batch.lists, args.negatives, args.items, torch.Generator().manual_seed(7))
    )
    with_negatives = copy.copy(batch)
    with_negatives.negatives = negatives
    out: dict[str, Any] = {"same_negatives": bool(same_negatives)}
    for mode in ("eval", "train"):
        results = {}
        for path in ("old", "new"):
            student.train(mode == "train")
            student.zero_grad(set_to_none=True)
            torch.manual_seed(11)
            with previous_encoder() if path == "old" else bernoulli_draws():  # the same masks on both paths
                objective = reference_objective if path == "old" else DFMEObjective()
                loss, _ = objective(student, with_negatives)
            loss.backward()
            results[path] = (loss.detach(), [p.grad.clone() for p in student.parameters()])
        (old_loss, old_grads), (new_loss, new_grads) = results["old"], results["new"]
        out[mode] = {
            "loss_old": float(old_loss),
            "loss_new": float(new_loss),
            "max_grad_abs_diff": max(float((a - b).abs().max()) for a, b in zip(old_grads, new_grads)),
            "max_grad_abs": max(float(g.abs().max()) for g in old_grads),
        }
    student.train()
    student.zero_grad(set_to_none=True)
    return out


def profile_table(path: str, student: Any, optimizer: Any, batch: Any, args: argparse.Namespace, rows: int = 20) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_step(path, student, optimizer, batch, args)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=128)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--items", type=int, default=ML1M_ITEMS)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--negatives", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gemm", type=int, default=2048, help="side of the square fp32 product timed as the raw limit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step of each path")
    parser.add_argument("--smoke", action="store_true", help="a tiny setting (tests)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sequences, args.length, args.items, args.dim, args.k, args.negatives = 4, 12, 60, 8, 5, 5
        args.rounds, args.gemm = min(args.rounds, 1), 128
    if min(args.sequences, args.length, args.items, args.dim, args.k, args.rounds, args.gemm, args.threads) < 1 or args.negatives < 0:
        parser.error("sizes, --rounds, --gemm and --threads must be >= 1, --negatives >= 0")
    if args.k > args.items:
        parser.error("--k must not exceed --items")
    torch.set_num_threads(args.threads)

    from raysteal.training.trainer import training_device

    training_device("cpu")  # as train_student: glibc keeps freed memory (raysteal.training.cpu_memory)
    load_before = os.getloadavg()
    student, batch = make_setting(args)
    cfg = student.config
    flops = step_flops(
        args.sequences, args.length, args.dim, cfg.num_blocks, args.dim, int(batch.rows.numel()), args.k + args.negatives, args.items
    )
    same = check_same(student, batch, args)
    start = {name: value.clone() for name, value in student.state_dict().items()}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    wall: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    cpu: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    rates: list[tuple[float, float]] = []
    draws: list[dict[str, tuple[float, float]]] = []
    for path in ("old", "new"):  # warm-up: allocator, first-call costs
        one_step(path, student, optimizer, batch, args)
    for _ in range(args.rounds):
        for path in ("old", "new"):
            student.load_state_dict(start)
            clock = Clock()
            one_step(path, student, optimizer, batch, args, clock=clock)
            wall[path].append(clock.wall)
            cpu[path].append(clock.cpu)
        rates.append(gemm_rate(args.gemm))
        draws.append(dropout_draw_seconds(student, args.sequences, args.length))

    def median_step(runs: list[dict[str, float]]) -> float:
        return statistics.median(sum(r.values()) for r in runs)

    def median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
        return {phase: statistics.median(r[phase] for r in runs) for phase in PHASES}

    rate_wall = statistics.median(r[0] for r in rates)
    rate_cpu = statistics.median(r[1] for r in rates)
    limit_wall, limit_cpu = flops["needed"] / (rate_wall * 1e9), flops["needed"] / (rate_cpu * 1e9)
    result: dict[str, Any] = {
        **step_header("student_step", args, cfg, int(batch.rows.numel())),
        "checks": same,
        "flops": flops,
        "gemm": {"size": args.gemm, "gflops_wall": rate_wall, "gflops_cpu": rate_cpu, "rounds": [list(r) for r in rates]},
        "raw_limit_seconds": {"wall": limit_wall, "cpu": limit_cpu},
        "dropout_draw_seconds": {
            path: {"wall": statistics.median(d[path][0] for d in draws), "cpu": statistics.median(d[path][1] for d in draws)}
            for path in ("old", "new")
        },
        "load_average": {"before": list(load_before), "after": list(os.getloadavg()), "cores": os.cpu_count()},
    }
    for path in ("old", "new"):
        result[path] = {
            "step_seconds_wall": median_step(wall[path]),
            "step_seconds_cpu": median_step(cpu[path]),
            "phases_wall": median_phases(wall[path]),
            "phases_cpu": median_phases(cpu[path]),
            "rounds_wall": [sum(r.values()) for r in wall[path]],
            "rounds_cpu": [sum(r.values()) for r in cpu[path]],
        }
        result[path]["ratio_to_raw_limit"] = {
            "wall": result[path]["step_seconds_wall"] / limit_wall,
            "cpu": result[path]["step_seconds_cpu"] / limit_cpu,
        }
    result["speedup"] = {
        "wall": result["old"]["step_seconds_wall"] / result["new"]["step_seconds_wall"],
        "cpu": result["old"]["step_seconds_cpu"] / result["new"]["step_seconds_cpu"],
    }

    print(
        f"device {result['device']}, {args.threads} thread(s), torch {torch.__version__}; sasrec d={args.dim}, "
        f"{args.sequences} x {args.length} = {result['setting']['prefixes']} prefixes, {args.items} items, "
        f"top-{args.k}, {args.negatives} negatives"
    )
    print(
        f"checks: negatives identical {same['same_negatives']}; "
        + "; ".join(
            f"{mode}: loss old {same[mode]['loss_old']:.7f} new {same[mode]['loss_new']:.7f}, max |grad diff| "
            f"{same[mode]['max_grad_abs_diff']:.2e} (max |grad| {same[mode]['max_grad_abs']:.2e})"
            for mode in ("eval", "train")
        )
    )
    print(
        f"matrix products: {flops['needed'] / 1e9:.2f} GFLOP needed (encoder {flops['encoder'] / 1e9:.2f}, "
        f"listed+negative scores {flops['needed_scores'] / 1e9:.2f}); the old path's full scores {flops['full_scores'] / 1e9:.2f}"
    )
    print(
        f"raw fp32 product ({args.gemm}^3): {rate_wall:.1f} GFLOP/s wall, {rate_cpu:.1f} GFLOP/s CPU time "
        f"-> raw limit {limit_wall:.3f} s wall, {limit_cpu:.3f} s CPU"
    )
    print(
        "drawing the step's dropout noise alone: "
        + ", ".join(
            f"{path} {result['dropout_draw_seconds'][path]['wall']:.3f} s wall / {result['dropout_draw_seconds'][path]['cpu']:.3f} s CPU"
            for path in ("old", "new")
        )
    )
    header = f"{'phase':<11}" + "".join(f"{p + ' ' + u:>14}" for p in ("old", "new") for u in ("wall", "cpu"))
    print(header)
    for phase in PHASES:
        print(f"{phase:<11}" + "".join(f"{result[p]['phases_' + u][phase]:>14.4f}" for p in ("old", "new") for u in ("wall", "cpu")))
    print(f"{'step':<11}" + "".join(f"{result[p]['step_seconds_' + u]:>14.4f}" for p in ("old", "new") for u in ("wall", "cpu")))
    ratio = {p: result[p]["ratio_to_raw_limit"] for p in ("old", "new")}
    print(
        f"speedup old/new: {result['speedup']['wall']:.2f}x wall, {result['speedup']['cpu']:.2f}x CPU; ratio to the raw limit: "
        f"old {ratio['old']['wall']:.2f}x / new {ratio['new']['wall']:.2f}x (wall), "
        f"old {ratio['old']['cpu']:.2f}x / new {ratio['new']['cpu']:.2f}x (CPU)"
    )
    print(
        f"load average (1 min) {load_before[0]:.2f} before, {result['load_average']['after'][0]:.2f} after, on {os.cpu_count()} cores",
        flush=True,
    )
    if args.profile:
        for path in ("old", "new"):
            print(f"\n--- torch.profiler, one {path} step ---\n" + profile_table(path, student, optimizer, batch, args))
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
