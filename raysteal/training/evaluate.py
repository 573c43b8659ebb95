"""Leave-one-out accuracy of a model: HR@K / NDCG@K with full ranking and with sampled negatives.

Protocol (Kang & McAuley 2018 §4.1; He et al. 2017 §4.1): for ``which="valid"`` the model
sees the user's training history and must rank the validation item; for ``which="test"`` it
sees the training history plus the validation item and must rank the test item.
Collaborative models are given the user id; sequential models the history as a left-padded
(``PAD = -1``) sequence of the model's ``max_len``. *Full ranking* ranks the target against
every item the user has not seen (training items, plus the validation item when testing,
are excluded); the *sampled* protocol ranks it against ``num_negatives`` uniformly drawn
items the user never interacted with. Users are scored in chunks, never one by one.

This is the one definition of a target's (and a clone's) accuracy in result rows: every
``target_*`` / ``clone_*`` / ``popularity_test_*`` accuracy column ranks the user's leave-one-out
test item among the items the user has not interacted with in training or validation, ties
counted against the test item (:func:`held_out_ranks`, :mod:`raysteal.training.guard`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from raysteal.data.splits import LeaveOneOut
from raysteal.errors import ConfigError
from raysteal.metrics.ranking import csr_select, rank_of_target, sample_negatives, sampled_rank_of_target
from raysteal.models.base import PAD

_SCORE_ELEMENTS = 1 << 23
"""Upper bound on ``users x items`` scores held at once (32 MiB of float32)."""


class Scorer(Protocol):
    """What scoring reads of a model: a :class:`~raysteal.models.base.Recommender`, or another
    ``nn.Module`` that scores the catalogue the same way (the popularity recommender of
    :mod:`raysteal.training.guard`). A sequential one also has ``config.max_len``."""

    sequential: ClassVar[bool]

    @property
    def num_items(self) -> int: ...

    @property
    def training(self) -> bool: ...

    def score(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> object: ...

    def train(self, mode: bool = True) -> object: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def _host(ranks: np.ndarray | torch.Tensor) -> np.ndarray:
    """Ranks from :mod:`raysteal.metrics.ranking` (a tensor here: the scores are one) as numpy."""
    return ranks.cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks)


def _hit(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks < k).astype(np.float64)


def _ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def _check_which(which: str) -> None:
    if which not in ("valid", "test"):
        raise ConfigError(f"which must be 'valid' or 'test', got {which!r}")


def evaluation_users(split: LeaveOneOut, which: str = "test") -> np.ndarray:
    """Users that have a held-out item for ``which`` (ascending ids)."""
    _check_which(which)
    return np.flatnonzero((split.test if which == "test" else split.valid) >= 0)


def targets_of(split: LeaveOneOut, users: np.ndarray, which: str) -> np.ndarray:
    """The held-out item each user must rank."""
    return (split.test if which == "test" else split.valid)[users]


def model_inputs(model: Scorer, split: LeaveOneOut, users: np.ndarray, which: str) -> torch.Tensor:
    """What the model is queried with: user ids, or histories left-padded to ``max_len``."""
    if not model.sequential:
        return torch.from_numpy(np.asarray(users, dtype=np.int64))
    config: Any = getattr(model, "config", None)  # a sequential model's hyperparameters
    max_len = int(config.max_len)
    if which == "valid":
        return torch.from_numpy(split.train.padded_sequences(max_len, users, pad=PAD))
    seqs = split.train.padded_sequences(max_len, users, pad=PAD)
    seqs = np.concatenate([seqs[:, 1:], split.valid[users][:, None]], axis=1)
    return torch.from_numpy(seqs)


def seen_csr(split: LeaveOneOut, users: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Items to exclude from the full ranking, as a CSR pair over ``users`` (for ``exclude=``)."""
    indptr, items = csr_select(split.train.indptr, split.train.items, users)
    if which == "valid":
        return indptr, items
    return append_items(indptr, items, split.valid[users])  # each user's validation item after its training items


def append_items(indptr: np.ndarray, items: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR ``(indptr, items)`` with ``extra[row]`` appended to each row (rows whose extra is
    negative, i.e. none, are left as they are)."""
    indptr = np.asarray(indptr, dtype=np.int64)
    extra = np.asarray(extra, dtype=np.int64)
    add = (extra >= 0).astype(np.int64)
    counts = np.diff(indptr) + add
    new_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = np.empty(new_ptr[-1], dtype=np.int64)
    last = new_ptr[1:] - 1
    keep = np.ones(out.size, dtype=bool)
    keep[last[add == 1]] = False
    out[keep] = items
    out[last[add == 1]] = extra[add == 1]
    return new_ptr, out


def held_out_ranks(
    model: Scorer,
    inputs: np.ndarray,
    held_out: np.ndarray,
    exclude: tuple[np.ndarray, np.ndarray],
    device: torch.device | str | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """0-based full-catalogue rank of each row's ``held_out`` item among the items not in that
    row's ``exclude`` (a CSR pair over the rows), ties counted against the held-out item: the
    protocol of :func:`evaluate` (``rank_full``) for any model queried by user index. ``inputs``:
    the model's user index of each row; rows whose held-out item is negative (none) get ``-1``."""
    inputs = np.asarray(inputs, dtype=np.int64)
    held_out = np.asarray(held_out, dtype=np.int64)
    indptr, items = exclude
    ranks = np.full(len(inputs), -1, dtype=np.int64)
    rows = np.flatnonzero(held_out >= 0)
    dev = torch.device(device) if device is not None else _model_device(model)
    size = batch_size or default_batch_size(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), size):
                part = rows[start : start + size]
                scores = model.score(torch.from_numpy(inputs[part]).to(dev)).float()
                target = torch.from_numpy(held_out[part]).to(scores.device)
                ranks[part] = _host(rank_of_target(scores, target, exclude=csr_select(indptr, items, part)))
    finally:
        model.train(was_training)
    return ranks


def known_csr(split: LeaveOneOut) -> tuple[np.ndarray, np.ndarray]:
    """Every item of every user (train, valid, test) as CSR: what sampled negatives must avoid."""
    train = split.train
    valid, test = np.flatnonzero(split.valid >= 0), np.flatnonzero(split.test >= 0)  # a refit's split has no valid items
    users = np.concatenate([train.users, valid, test])
    items = np.concatenate([train.items, split.valid[valid], split.test[test]])
    order = np.argsort(users, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=train.num_users))]).astype(np.int64)
    return indptr, items[order]


def _model_device(model: Scorer) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def default_batch_size(model: Scorer) -> int:
    """Users per scoring chunk: bounded by the score matrix size, and by 256 for sequence models."""
    rows = max(1, _SCORE_ELEMENTS // model.num_items)
    return min(rows, 256 if model.sequential else 4096)


def score_chunks(
    model: Scorer,
    split: LeaveOneOut,
    users: np.ndarray,
    which: str,
    device: torch.device | None = None,
    batch_size: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(positions in users, scores [b, num_items])`` chunk by chunk, in eval mode."""
    dev = device or _model_device(model)
    size = batch_size or default_batch_size(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(users), size):
                part = slice(start, min(start + size, len(users)))
                inputs = model_inputs(model, split, users[part], which).to(dev)
                yield part, model.score(inputs).float()
    finally:
        model.train(was_training)


def full_ranks(
    model: Scorer,
    split: LeaveOneOut,
    users: np.ndarray,
    which: str,
    device: torch.device | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """0-based full-catalogue rank of each user's held-out item (seen items excluded)."""
    ranks = np.empty(len(users), dtype=np.int64)
    targets = targets_of(split, users, which)
    for part, scores in score_chunks(model, split, users, which, device, batch_size):
        exclude = seen_csr(split, users[part], which)
        target = torch.from_numpy(targets[part]).to(scores.device)
        ranks[part] = _host(rank_of_target(scores, target, exclude=exclude))
    return ranks


def validation_ndcg(
    model: Scorer,
    split: LeaveOneOut,
    users: np.ndarray | None = None,
    k: int = 10,
    device: torch.device | None = None,
) -> float:
    """Mean full-ranking NDCG@k on the validation items (what early stopping watches)."""
    users = evaluation_users(split, "valid") if users is None else np.asarray(users, dtype=np.int64)
    if users.size == 0:
        return float("nan")
    return float(_ndcg(full_ranks(model, split, users, "valid", device), k).mean())


def evaluate(
    model: Scorer,
    split: LeaveOneOut,
    which: str = "test",
    k: int = 10,
    num_negatives: int = 100,
    seed: int = 0,
    users: np.ndarray | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """HR@k and NDCG@k, full ranking and against ``num_negatives`` sampled negatives.

    Returns ``{"hr@10_100neg", "ndcg@10_100neg", "hr@10_full", "ndcg@10_full", "users",
    "per_user": {"users", "rank_full", "rank_100neg"}}`` (spelled with the given ``k`` and
    ``num_negatives``); ranks are 0-based, ties counted against the target.
    """
    _check_which(which)
    if k < 1 or num_negatives < 1:
        raise ConfigError(f"k and num_negatives must be >= 1, got k={k}, num_negatives={num_negatives}")
    users = evaluation_users(split, which) if users is None else np.asarray(users, dtype=np.int64)
    dev = torch.device(device) if device is not None else None
    targets = targets_of(split, users, which)
    if users.size and (targets < 0).any():
        raise ConfigError(f"some requested users have no {which} item")
    rng = np.random.default_rng(seed)
    known_ptr, known_items = known_csr(split)
    # a user who has interacted with every item has no negatives: no sampled rank (-1), full rank only
    has_negatives = (split.train.num_items - np.diff(known_ptr)[users]) > 0
    negatives = np.full((len(users), num_negatives), -1, dtype=np.int64)
    negatives[has_negatives] = sample_negatives(
        split.train.num_items, known_ptr, known_items, users[has_negatives], n=num_negatives, generator=rng
    )
    rank_full = np.empty(len(users), dtype=np.int64)
    rank_sampled = np.empty(len(users), dtype=np.int64)
    for part, scores in score_chunks(model, split, users, which, dev, batch_size):
        target = torch.from_numpy(targets[part]).to(scores.device)
        rank_full[part] = _host(rank_of_target(scores, target, exclude=seen_csr(split, users[part], which)))
        neg = torch.from_numpy(negatives[part]).to(scores.device)
        rank_sampled[part] = _host(sampled_rank_of_target(scores, target, neg))
    tag = f"{num_negatives}neg"
    rank_sampled[~has_negatives] = -1

    def mean(a: np.ndarray) -> float:
        return float(a.mean()) if a.size else float("nan")

    return {
        f"hr@{k}_{tag}": mean(_hit(rank_sampled[has_negatives], k)),
        f"ndcg@{k}_{tag}": mean(_ndcg(rank_sampled[has_negatives], k)),
        f"hr@{k}_full": mean(_hit(rank_full, k)),
        f"ndcg@{k}_full": mean(_ndcg(rank_full, k)),
        "users": int(users.size),
        "per_user": {"users": users, "rank_full": rank_full, f"rank_{tag}": rank_sampled},
    }
