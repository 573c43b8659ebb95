"""A seeded synthetic long-tail interaction generator: the default dataset that needs no files.

The generative process (all parameters in :class:`SyntheticConfig`):

* **User activity** is power-law: sequence lengths follow a discrete Pareto law,
  ``P(L >= x) = (min_len / x) ** user_exponent``, truncated at ``max_len`` (a few long "head"
  users, many short "tail" users, as in real logs).
* **Item popularity** is Zipf: the item of popularity rank ``r`` has weight ``r ** -item_exponent``.
* **User taste** (what matrix factorisation can learn): items are split into ``num_clusters``
  random clusters; each user has a Dirichlet(``taste_concentration``) mixture over clusters.
* **Sequential structure** (what next-item models can learn): every item has one fixed
  *successor* item, drawn by popularity from the next cluster of a random cluster cycle. At
  each step the user follows the previous item's successor with probability ``p_follow``;
  otherwise it stays in its current cluster with probability ``p_stay`` or draws a cluster from
  its taste, then an item of that cluster by popularity.
* A user never repeats an item (like deduplicated logs): a repeat is redrawn from the user's
  taste, and after a few failed draws replaced by a uniformly random unseen item.

Generation is vectorised over users (one numpy step per sequence position, users processed in
memory-bounded chunks) and fully determined by ``seed``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field, ValidationError, model_validator

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError, describe_validation

_REDRAWS = 6
_CHUNK_CELLS = 1 << 24  # users-per-chunk x items kept under ~16M booleans


class SyntheticConfig(NumbersAreNotBooleans):
    """Parameters of the synthetic generator (defaults: a small set for tests and quickstart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_users: int = Field(2000, ge=1)
    num_items: int = Field(500, ge=2)
    seed: int = Field(0, ge=0)
    user_exponent: float = Field(1.2, gt=0, description="Pareto tail index of sequence lengths")
    item_exponent: float = Field(1.2, ge=0, description="Zipf exponent of item popularity")
    min_len: int = Field(5, ge=1)
    max_len: int = Field(200, ge=1)
    num_clusters: int = Field(20, ge=1)
    taste_concentration: float = Field(0.1, gt=0)
    p_follow: float = Field(0.35, ge=0, le=1)
    p_stay: float = Field(0.6, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({self.max_len}) must be >= min_len ({self.min_len})")
        if self.min_len > self.num_items:
            raise ValueError(f"min_len ({self.min_len}) cannot exceed num_items ({self.num_items}): items never repeat")
        if self.num_clusters > self.num_items:
            raise ValueError(f"num_clusters ({self.num_clusters}) cannot exceed num_items ({self.num_items})")
        return self


def make_config(**params: Any) -> SyntheticConfig:
    """Validate generator parameters (unknown or invalid keys raise :class:`ConfigError`)."""
    try:
        return SyntheticConfig(**params)
    except ValidationError as err:
        raise ConfigError(f"invalid synthetic dataset parameters: {describe_validation(err)}") from None


class _World:
    """The fixed item-side structure: popularity, clusters, successors."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
        n, k = cfg.num_items, cfg.num_clusters
        rank = rng.permutation(n)
        self.weight = (rank + 1.0) ** -cfg.item_exponent
        self.cluster = rng.permutation(n) % k  # balanced random clusters, none empty
        self.by_cluster = np.argsort(self.cluster, kind="stable")
        sizes = np.bincount(self.cluster, minlength=k)
        self.seg_end = np.cumsum(sizes)
        w = self.weight[self.by_cluster]
        cum = np.cumsum(w)
        seg_start_cum = np.concatenate([[0.0], cum[self.seg_end[:-1] - 1]])
        seg_total = cum[self.seg_end - 1] - seg_start_cum
        owner = self.cluster[self.by_cluster]
        # within-cluster CDF shifted by the cluster index: cluster c occupies (c, c+1]
        self.cdf = owner + (cum - seg_start_cum[owner]) / seg_total[owner]
        self.cdf[self.seg_end - 1] = np.arange(k) + 1.0
        cycle = rng.permutation(k)  # a random cyclic order of the clusters
        next_cluster = np.empty(k, dtype=np.int64)
        next_cluster[cycle] = np.roll(cycle, -1)
        self.successor = self.sample_in(next_cluster[self.cluster], rng)

    def sample_in(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``clusters``, by popularity within that cluster."""
        pos = np.searchsorted(self.cdf, clusters + rng.random(clusters.size), side="right")
        pos = np.minimum(pos, self.seg_end[clusters] - 1)
        return self.by_cluster[pos]


def _pick(cum_taste: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cluster per row of the cumulative taste matrix."""
    u = rng.random(cum_taste.shape[0])[:, None]
    return np.minimum((cum_taste < u).sum(axis=1), cum_taste.shape[1] - 1)


def _generate_chunk(cfg: SyntheticConfig, world: _World, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sequences of one chunk of users, ``int64 [n, max(lengths)]`` padded with -1; rows sorted
    by length descending are generated together so active users are always a prefix."""
    n, n_items = lengths.size, cfg.num_items
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    cum_taste = np.cumsum(rng.dirichlet(np.full(cfg.num_clusters, cfg.taste_concentration), size=n), axis=1)
    steps = int(sorted_len[0])
    out = np.full((n, steps), -1, dtype=np.int64)
    seen = np.zeros((n, n_items), dtype=bool)
    cur = np.zeros(n, dtype=np.int64)
    prev = np.zeros(n, dtype=np.int64)
    active_counts = np.searchsorted(-sorted_len, -np.arange(steps), side="left")
    for t in range(steps):
        m = int(active_counts[t])
        rows = np.arange(m)
        if t == 0:
            cand = world.sample_in(_pick(cum_taste[:m], rng), rng)
        else:
            r = rng.random(m)
            follow = r < cfg.p_follow
            stay = (r >= cfg.p_follow) & (rng.random(m) < cfg.p_stay)
            clusters = np.where(stay, cur[:m], _pick(cum_taste[:m], rng))
            cand = np.where(follow, world.successor[prev[:m]], world.sample_in(clusters, rng))
        dup = np.flatnonzero(seen[rows, cand])
        for _ in range(_REDRAWS):
            if dup.size == 0:
                break
            cand[dup] = world.sample_in(_pick(cum_taste[dup], rng), rng)
            dup = dup[seen[dup, cand[dup]]]
        if dup.size:  # uniformly random unseen item
            cand[dup] = np.argmax(rng.random((dup.size, n_items)) * ~seen[dup], axis=1)
        seen[rows, cand] = True
        out[:m, t] = cand
        prev[:m] = cand
        cur[:m] = world.cluster[cand]
    result = np.empty_like(out)
    result[order] = out
    return result


def sequence_lengths(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Truncated discrete Pareto lengths (see module docstring)."""
    u = 1.0 - rng.random(cfg.num_users)  # (0, 1]
    lengths = np.floor(cfg.min_len * u ** (-1.0 / cfg.user_exponent))
    return np.clip(lengths, cfg.min_len, min(cfg.max_len, cfg.num_items)).astype(np.int64)


def generate(config: SyntheticConfig | None = None, **params: object) -> pa.Table:
    """Generate a synthetic log as a canonical table (``user``, ``item``; chronological per user).

    Pass a :class:`SyntheticConfig` or its fields as keywords. Deterministic per ``seed``.
    """
    cfg = config if config is not None else make_config(**params)
    if config is not None and params:
        cfg = make_config(**{**config.model_dump(), **params})
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    lengths = sequence_lengths(cfg, rng)
    chunk = max(1, _CHUNK_CELLS // max(cfg.num_items, int(lengths.max())))
    users, items = [], []
    for start in range(0, cfg.num_users, chunk):
        part = lengths[start : start + chunk]
        seqs = _generate_chunk(cfg, world, part, rng)
        valid = seqs >= 0
        users.append(np.repeat(np.arange(start, start + part.size, dtype=np.int64), part))
        items.append(seqs[valid])
    return pa.table({"user": np.concatenate(users), "item": np.concatenate(items)})


def item_clusters(config: SyntheticConfig | None = None, **params: object) -> np.ndarray:
    """The latent taste cluster of each item id of :func:`generate` (ground truth for tests/analysis)."""
    cfg = config if config is not None else make_config(**params)
    return _World(cfg, np.random.default_rng(cfg.seed)).cluster.copy()
