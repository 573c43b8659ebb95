"""A non-causal (BERT4Rec) student's training step, prefixes in one padded pass vs length groups.

    python benchmarks/student_prefixes.py --sequences 64 --length 200 --positions 8 \\
        --buckets 8 --rounds 3 --threads 2 --json results/student_prefixes.json

A BERT4Rec student cannot score every prefix of a synthetic sequence in one causal pass (DFME,
Yue et al. 2021, distil BERT4Rec into BERT4Rec): each selected prefix is its own sequence with
``[MASK]`` appended (:func:`raysteal.extraction.student.student_hidden`). For the preset
BERT4Rec architecture and a random batch of ``--sequences`` full-length sequences with
``--positions`` random prefixes each, one training step (forward, catalogue logits, Yue's ranking
loss, backward) is timed with all prefixes padded to the longest (``buckets=1``) and in
``--buckets`` groups of similar length, alternating rounds so load on a shared machine hits both
alike. The figure of merit is the ratio of the median step times, ``one pass / grouped``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, sync, write_json  # noqa: E402

ML1M_ITEMS = 3706


def random_batch(args: argparse.Namespace, generator: torch.Generator):
    """Full-length random sequences, ``--positions`` distinct prefixes of each, random answers."""
    from raysteal.extraction.student import sample_negatives
    from raysteal.extraction.types import StudentBatch

    inputs = torch.randint(0, ML1M_ITEMS, (args.sequences, args.length), generator=generator)
    cols = torch.rand(args.sequences, args.length, generator=generator).argsort(1)[:, : args.positions].flatten()
    rows = torch.arange(args.sequences).repeat_interleave(min(args.positions, args.length))
    lists = torch.rand(rows.numel(), ML1M_ITEMS, generator=generator).argsort(1)[:, : args.k]
    negatives = sample_negatives(lists, args.negatives, ML1M_ITEMS, generator)
    move = {"device": args.device}
    return StudentBatch(
        torch.arange(args.sequences, **move), inputs.to(**move), rows.to(**move), cols.to(**move), lists.to(**move), negatives.to(**move)
    )


def step_seconds(student: Any, batch: Any, buckets: int, device: str) -> float:
    """Seconds for one forward + ranking loss + backward over the batch's prefixes."""
    from raysteal.extraction.losses import ranking_loss
    from raysteal.extraction.student import student_hidden

    sync(device)
    t0 = time.perf_counter()
    student.zero_grad(set_to_none=True)
    loss, _ = ranking_loss(student.logits(student_hidden(student, batch, buckets=buckets)).float(), batch.lists, batch.negatives, 0.5)
    loss.backward()
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--positions", type=int, default=8, help="prefixes per sequence")
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--negatives", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if min(args.sequences, args.length, args.positions, args.rounds, args.k) < 1 or args.buckets < 2 or args.negatives < 0:
        parser.error("--sequences, --length, --positions, --rounds and --k must be >= 1, --buckets >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)

    from raysteal.training import preset, seeded_model

    model_cfg, _ = preset("bert4rec")
    student = seeded_model({**model_cfg, "max_len": args.length}, 0, ML1M_ITEMS, seed=0).to(args.device).train()
    batch = random_batch(args, torch.Generator().manual_seed(0))
    times: dict[int, list[float]] = {1: [], args.buckets: []}
    for _ in range(args.rounds):
        for buckets in times:
            step_seconds(student, batch, buckets, args.device)  # warm-up at this setting
            times[buckets].append(step_seconds(student, batch, buckets, args.device))
    one, grouped = statistics.median(times[1]), statistics.median(times[args.buckets])
    result = {
        "benchmark": "student_prefixes",
        "device": device_name(args.device),
        "model": "bert4rec",
        "prefixes": int(batch.rows.numel()),
        "length": args.length,
        "buckets": args.buckets,
        "one_pass_seconds": times[1],
        "grouped_seconds": times[args.buckets],
        "speedup": one / grouped,
    }
    print(
        f"device {result['device']}; bert4rec student, {result['prefixes']} prefixes of up to {args.length} items; "
        f"step one pass {one:.3f}s, {args.buckets} length groups {grouped:.3f}s, speedup {one / grouped:.2f}x",
        flush=True,
    )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
