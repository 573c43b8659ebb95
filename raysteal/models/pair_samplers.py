"""Batched negative sampling for collaborative (user, item) models, on tensors.

Every training positive ``(u, i+)`` of the log is visited once per epoch in a random order,
and each gets ``num_negatives`` items drawn uniformly from the catalogue (Rendle et al. 2009,
§4.3 bootstrap sampling; He et al. 2017, §4.1 "4 negatives per positive"). Optionally the
negatives that the user has already interacted with are redrawn: a vectorised rejection
step over the log's ``(user, item)`` pairs (:class:`SeenPairs`: a bitmap, or a sorted table of
``user * num_items + item`` keys for very large grids), each round rechecking only the
redrawn entries, for up to ``rounds`` (20) rounds; a negative is still a seen item only with
probability ``density_u ** 21`` (nil in practice; a user who has seen every item keeps them).
No per-sample Python loop anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import BatchSampler


def seen_keys(log: Interactions) -> torch.Tensor:
    """Sorted unique ``user * num_items + item`` keys of every (user, item) pair in ``log``."""
    keys = log.users * np.int64(log.num_items) + log.items
    return torch.from_numpy(np.unique(keys))


BITMAP_MAX_PAIRS = 1 << 30
"""Largest ``users x items`` grid :class:`SeenPairs` keeps as a bitmap (128 MB); above it, a
binary search over the sorted keys."""


class SeenPairs:
    """Which ``(user, item)`` pairs a log holds, from its sorted unique keys ``user * num_items +
    item`` (:func:`seen_keys`). Where the ``users x items`` grid is at most
    :data:`BITMAP_MAX_PAIRS`, one bit per pair (ML-1M's target half: 1.4 MB) and a lookup is a
    gather and a shift; a binary search over 480,000 keys took 19 probes a query, two thirds of
    the negative sampling of a BPR step (``benchmarks/mf_step.py``). The same answers either way."""

    def __init__(self, keys: torch.Tensor, num_items: int):
        self.keys = keys
        self.num_items = int(num_items)
        grid = (int(keys[-1]) + 1) if keys.numel() else 0  # keys are sorted: the last is the largest
        self.bits: torch.Tensor | None = None
        if grid <= BITMAP_MAX_PAIRS:
            bits = np.zeros((grid + 7) // 8, dtype=np.uint8)
            k = keys.numpy()
            np.bitwise_or.at(bits, k >> 3, (1 << (k & 7)).astype(np.uint8))
            self.bits = torch.from_numpy(bits)

    def to(self, device: torch.device | str) -> SeenPairs:
        self.keys = self.keys.to(device)
        if self.bits is not None:
            self.bits = self.bits.to(device)
        return self

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Boolean mask: which ``(users, items)`` pairs (broadcast together) the log holds."""
        query = users * self.num_items + items
        if self.bits is None:
            return is_seen(self.keys, users, items, self.num_items)
        if self.bits.numel() == 0:  # an empty log holds nothing
            return torch.zeros_like(query, dtype=torch.bool)
        inside = (query >= 0) & (query < self.bits.numel() * 8)  # outside the grid: never held
        at = torch.where(inside, query, 0)
        held = (self.bits[at >> 3] >> (at & 7).to(torch.uint8)) & 1
        return held.bool() & inside


def pair_scores(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``[B, n]`` dot products of ``users [B, d]`` with each of ``items [B, n, d]``: what
    ``einsum("bd,bnd->bn")`` gives, as a product and a sum. einsum makes it ``B`` matrix products
    of one row, four times slower forward and backward on a CPU for a handful of negatives
    (``benchmarks/mf_step.py``)."""
    return (users.unsqueeze(1) * items).sum(-1)


def hardest_candidates(scores: torch.Tensor, candidates: int) -> torch.Tensor:
    """Dynamic negative sampling (DNS; Zhang et al., SIGIR 2013, Alg. 1): ``int64 [B, n]`` column
    indices into ``scores [B, n·candidates]`` (each negative's ``candidates`` uniform draws side by
    side), each the highest-scored draw of its group. Chosen without gradient; 1 keeps every draw."""
    if candidates == 1:
        return torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
    if scores.shape[1] % candidates:
        raise ConfigError(f"{scores.shape[1]} negatives per row do not split into groups of negative_candidates={candidates}")
    groups = scores.detach().view(scores.shape[0], -1, candidates)
    offsets = torch.arange(groups.shape[1], device=scores.device) * candidates
    return groups.argmax(-1) + offsets


def keep_hardest(scores: torch.Tensor, items: torch.Tensor, candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores [B, n·candidates]`` and ``items [B, n·candidates, d]`` reduced to each negative's
    highest-scored draw (:func:`hardest_candidates`): ``[B, n]`` and ``[B, n, d]``."""
    if candidates == 1:
        return scores, items
    chosen = hardest_candidates(scores, candidates)
    return scores.gather(1, chosen), items.gather(1, chosen[..., None].expand(-1, -1, items.shape[-1]))


def is_seen(keys: torch.Tensor, users: torch.Tensor, items: torch.Tensor, num_items: int) -> torch.Tensor:
    """Boolean mask: which ``(users, items)`` pairs (broadcast together) are in ``keys``."""
    query = users * num_items + items
    if keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return keys[pos] == query


def uniform_negatives(
    users: torch.Tensor,
    num_negatives: int,
    num_items: int,
    generator: torch.Generator,
    seen: SeenPairs | None = None,
    rounds: int = 20,
) -> torch.Tensor:
    """``int64 [B, num_negatives]`` items drawn uniformly; redrawn up to ``rounds`` times where seen.

    ``seen`` (:class:`SeenPairs`) enables rejection of items the user already has.
    """
    dev = users.device
    neg = torch.randint(0, num_items, (users.shape[0], num_negatives), generator=generator, device=dev)
    if seen is None:
        return neg
    flat = neg.view(-1)
    owner = users.repeat_interleave(num_negatives)
    redo = torch.nonzero(seen.contains(owner, flat)).view(-1)
    for _ in range(rounds):
        if redo.numel() == 0:
            break
        flat[redo] = torch.randint(0, num_items, (redo.numel(),), generator=generator, device=dev)
        redo = redo[seen.contains(owner[redo], flat[redo])]  # only redrawn ones are rechecked
    return neg


class PairSampler(BatchSampler):
    """Epochs of ``{"users": [B], "pos": [B], "neg": [B, n], "count": [B]}`` batches.

    ``count`` is how often the (user, item) pair occurs in the log (LMF's confidence,
    Johnson 2014 Eq. 1); it is 1 everywhere in a deduplicated log. Batches are drawn on the
    device of the sampler's tensors (the CPU unless :meth:`to` moved them; the trainer does so
    on a GPU, so sampling is never the bottleneck) with a ``generator`` on that device.
    """

    def __init__(self, train: Interactions, batch_size: int, num_negatives: int = 1, reject_seen: bool = True):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_negatives < 1:
            raise ConfigError(f"num_negatives must be >= 1, got {num_negatives}")
        if train.num_interactions == 0:
            raise ConfigError(f"training log {train.name!r} has no interactions")
        self.batch_size = int(batch_size)
        self.num_negatives = int(num_negatives)
        self.num_items = int(train.num_items)
        keys = train.users * np.int64(train.num_items) + train.items
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        self.users = torch.from_numpy(train.users.copy())
        self.items = torch.from_numpy(train.items.copy())
        self.counts = torch.from_numpy(counts[inverse].astype(np.float32))
        self.seen = SeenPairs(torch.from_numpy(uniq), self.num_items) if reject_seen else None

    def __len__(self) -> int:
        return -(-self.users.numel() // self.batch_size)

    def to(self, device: torch.device | str) -> PairSampler:
        """Keep the log on ``device`` and draw batches there (pass a generator on that device)."""
        for name in ("users", "items", "counts"):
            setattr(self, name, getattr(self, name).to(device))
        if self.seen is not None:
            self.seen.to(device)
        return self

    def epoch(self, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(self.users.numel(), generator=generator, device=self.users.device)
        for start in range(0, order.numel(), self.batch_size):
            rows = order[start : start + self.batch_size]
            users = self.users[rows]
            yield {
                "users": users,
                "pos": self.items[rows],
                "neg": uniform_negatives(users, self.num_negatives, self.num_items, generator, self.seen),
                "count": self.counts[rows],
            }
