"""Batched negative sampling for collaborative (user, item) models, on tensors.

Every training positive ``(u, i+)`` of the log is visited once per epoch in a random order,
and each gets ``num_negatives`` items drawn uniformly from the catalogue (Rendle et al. 2009,
§4.3 bootstrap sampling; He et al. 2017, §4.1 "4 negatives per positive"). Optionally the
negatives that the user has already interacted with are redrawn: a vectorised rejection
step over a sorted table of ``user * num_items + item`` keys, each round rechecking only the
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
    keys: torch.Tensor | None = None,
    rounds: int = 20,
) -> torch.Tensor:
    """``int64 [B, num_negatives]`` items drawn uniformly; redrawn up to ``rounds`` times where seen.

    ``keys`` (from :func:`seen_keys`) enables rejection of items the user already has.
    """
    dev = users.device
    neg = torch.randint(0, num_items, (users.shape[0], num_negatives), generator=generator, device=dev)
    if keys is None:
        return neg
    flat = neg.view(-1)
    owner = users.repeat_interleave(num_negatives)
    redo = torch.nonzero(is_seen(keys, owner, flat, num_items)).view(-1)
    for _ in range(rounds):
        if redo.numel() == 0:
            break
        flat[redo] = torch.randint(0, num_items, (redo.numel(),), generator=generator, device=dev)
        redo = redo[is_seen(keys, owner[redo], flat[redo], num_items)]  # only redrawn ones are rechecked
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
        self.keys = torch.from_numpy(uniq) if reject_seen else None

    def __len__(self) -> int:
        return -(-self.users.numel() // self.batch_size)

    def to(self, device: torch.device | str) -> PairSampler:
        """Keep the log on ``device`` and draw batches there (pass a generator on that device)."""
        for name in ("users", "items", "counts", "keys"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def epoch(self, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(self.users.numel(), generator=generator, device=self.users.device)
        for start in range(0, order.numel(), self.batch_size):
            rows = order[start : start + self.batch_size]
            users = self.users[rows]
            yield {
                "users": users,
                "pos": self.items[rows],
                "neg": uniform_negatives(users, self.num_negatives, self.num_items, generator, self.keys),
                "count": self.counts[rows],
            }
