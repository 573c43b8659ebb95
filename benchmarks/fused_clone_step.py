"""One training step of PTA's fused clone (Zhu et al. Eq. 5-8) on a CPU thread: today's code
against the previous code, in the same run, rounds alternating.

    python benchmarks/fused_clone_step.py [--rounds 7] [--models bpr,lmf,neumf] [--json results/fused_clone_step.json]

The setting of Zhu et al.'s PTA/PTAQ on ML-1M's target half (3,020 users, 3,706 items), each
clone at its preset's size (BPR and LMF d = 64, NeuMF f = 16), fused with a frozen auxiliary model
of the same architecture. Two batches, the two phases that train the fused clone: the attacker's
interactions (``--batch`` users, a positive and ``--negatives`` negatives each: Eq. 4) and the
queried lists (``--list-users`` users, a top-``--k`` list and ``--k`` negatives each: Eq. 10-12).
One step is the clone's pair scores, a loss over them, backward and AdamW.

* **old** — the code before this benchmark, kept here (:func:`reference_fused_items`): Eq. 5's
  ``α`` and ``β`` each through the attention vector and bias, stacked and put through Eq. 6's
  softmax, then Eq. 7 with the clone's and the auxiliary item rows gathered a second time;
* **new** — :meth:`raysteal.attacks.clones.FusedClone.fused_items`: ``α' = σ(α − β)`` (the
  softmax of two, the shared bias cancelling) from one product with the attention vector, each
  row gathered once, ``q^a + α' (q^c − q^a)``.

Before timing, the run checks that both give the same loss and gradients (to float rounding) from
the same weights. Each round times each path's step by this thread's CPU time
(``time.thread_time``), so other processes on the cores count against neither; reported: the
median seconds of each path and the median of the rounds' ratios old / new.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import alternating_rounds, require_positive, same_loss_and_gradients, write_json  # noqa: E402

from raysteal.attacks.clones import FusedClone, plain_clone  # noqa: E402
from raysteal.models import make_config  # noqa: E402
from raysteal.training.presets import preset  # noqa: E402
from raysteal.training.step import adamw  # noqa: E402


def reference_fused_items(clone: FusedClone, table: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The previous ``FusedClone.fused_items``: Eq. 5 for ``α`` and ``β``, Eq. 6's softmax over the
    stacked pair, Eq. 7 with both item rows gathered again."""
    p = getattr(clone.base, clone.users_of[table])(users)[:, None, :]
    q_c = getattr(clone.base, table)(items)
    q_a = clone.aux_table(table)[items]
    w, b = clone.attn_w[table], clone.attn_b[table]
    alpha = F.relu(p * q_c) @ w + b
    beta = F.relu(p * q_a) @ w + b
    weights = torch.softmax(torch.stack([alpha, beta], dim=-1), dim=-1)
    a, bb = weights[..., 0], weights[..., 1]
    return a[..., None] * getattr(clone.base, table)(items) + bb[..., None] * clone.aux_table(table)[items]


def reference_pair_scores(clone: FusedClone, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return clone.arch.pair(clone.base, users, items, lambda table: reference_fused_items(clone, table, users, items))


def fused_clone(model: str, users: int, items: int, seed: int = 0) -> FusedClone:
    config = make_config(preset(model)[0])
    base = plain_clone(config, users, items, seed)
    aux = plain_clone(config, users, items, seed + 1)
    return FusedClone(base, aux, torch.Generator().manual_seed(seed + 2))


def batches(args: argparse.Namespace, items: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The two phases' batches: ``{phase: (users [B], items [B, n])}``."""
    g = torch.Generator().manual_seed(3)
    data_users = torch.randint(0, args.users, (args.batch,), generator=g)
    list_users = torch.randint(0, args.users, (args.list_users,), generator=g)
    return {
        "interactions": (data_users, torch.randint(0, items, (args.batch, 1 + args.negatives), generator=g)),
        "lists": (list_users, torch.randint(0, items, (args.list_users, 2 * args.k), generator=g)),
    }


def loss_of(scores: torch.Tensor) -> torch.Tensor:
    """A BPR-like loss over the scores: the first column against the others (the phases' form)."""
    return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()


def bench(model: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    clone = fused_clone(model, args.users, args.items)
    params = [p for p in clone.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=1e-3, weight_decay=0.0)
    start = {k: v.detach().clone() for k, v in clone.state_dict().items()}
    paths = {"old": lambda u, i: reference_pair_scores(clone, u, i), "new": clone.pair_scores}
    out: dict[str, Any] = {}
    for phase, (users, items) in batches(args, args.items).items():

        def loss_and_grads(path: str, users: torch.Tensor = users, items: torch.Tensor = items) -> tuple[float, list[torch.Tensor]]:
            clone.load_state_dict(start)
            clone.zero_grad(set_to_none=False)
            loss = loss_of(paths[path](users, items))
            loss.backward()
            return float(loss.detach()), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

        checks = same_loss_and_gradients(f"{model} {phase}", loss_and_grads("old"), loss_and_grads("new"))

        def step(path: str, users: torch.Tensor = users, items: torch.Tensor = items) -> float:
            clone.load_state_dict(start)
            t0 = time.thread_time()
            optimizer.zero_grad(set_to_none=True)
            loss_of(paths[path](users, items)).backward()
            optimizer.step()
            return time.thread_time() - t0

        step("old"), step("new")  # warm-up
        timing = alternating_rounds(args.rounds, lambda: step("old"), lambda: step("new"))
        out[phase] = {"shape": list(items.shape), **checks, **timing}
        print(
            f"{model:6s} {phase:12s} items {tuple(items.shape)}: old {timing['old_seconds_cpu'] * 1e3:7.2f} ms  "
            f"new {timing['new_seconds_cpu'] * 1e3:7.2f} ms  old/new {timing['speedup_median_of_pairs']:.2f}x"
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", default="bpr,lmf,neumf")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--users", type=int, default=3020)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--batch", type=int, default=2048, help="users of an interactions batch")
    parser.add_argument("--negatives", type=int, default=1, help="negatives per positive in an interactions batch")
    parser.add_argument("--list-users", type=int, default=40, help="users of a lists batch")
    parser.add_argument("--k", type=int, default=50, help="list length (and negatives per list)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    require_positive(parser, args, "rounds", "users", "items", "batch", "negatives", "list_users", "k", "threads")
    torch.set_num_threads(args.threads)
    setting = {k: getattr(args, k) for k in ("users", "items", "batch", "negatives", "list_users", "k", "threads")}
    report = {"benchmark": "fused_clone_step", "setting": setting, "models": {m: bench(m, args) for m in args.models.split(",")}}
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
