"""Multi-scale consistency probing (BAHSD design item 1, docs/attacks/bahsd.md).

For a queried prefix ``s = sequences[n, :t + 1]`` with full-scale answer ``R(s)`` (already in the
:class:`ExtractionSet`), the black box is asked again on *views* of the same prefix:

* **suffix views** — the last ``ceil(a · |s|)`` items for each scale ``a`` of ``ProbeSpec.scales``
  (e.g. ``1/2, 1/4``: the recent window at half and quarter length);
* **item-dropout views** — ``ProbeSpec.views`` copies per rate ``r`` of ``ProbeSpec.dropout``,
  each with ``clip(round(r · |s|), 1, |s| − 1)`` items removed uniformly at random.

A view identical to the full prefix (or to an earlier suffix view) would cost a query for no
information, so it is never sent. Every view is one query, charged by the oracle client like any
other: probing spends exactly ``ProbeResult.queries`` (and never more than ``query_budget``).

The oracle excludes a query's own items from its answer, so a view's answer may hold items of
the full prefix that the full answer could not hold; they are removed (the list is compacted)
before comparing. Then

* **reliability** ``c(s) = mean_v agree(R(s), R(view_v))`` with ``agree`` the extrapolated
  rank-biased overlap (``metric="rbo"``, persistence ``rbo_p``) or Jaccard@k (``"jaccard"``);
* **stability** of each listed item ``j ∈ R(s)``: the share of the views whose answer contains it.

Which prefixes are probed: per sequence, the last queried prefix and every ``every``-th queried
prefix before it (counting back from the last). An unprobed prefix inherits reliability and
item stability (membership of its own items in the probe lists) from the nearest probed prefix
of the same sequence (ties go to the later, longer one); a sequence without any probed prefix
gets ``default_reliability`` and stability 1. When the budget cannot pay for every planned
probe, prefixes are probed level by level (every sequence's last prefix first, then the
``every``-th before it, ...), whole prefixes only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.extraction.types import ExtractionSet
from raysteal.metrics import jaccard_at_k, rank_biased_overlap
from raysteal.models.base import PAD
from raysteal.oracle.protocol import BlackBoxClient

ProbeMetric = Literal["rbo", "jaccard"]


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe and how to score agreement (see the module docstring)."""

    scales: tuple[float, ...] = (0.5, 0.25)
    dropout: tuple[float, ...] = ()
    views: int = 1
    every: int = 8
    metric: ProbeMetric = "rbo"
    rbo_p: float = 0.9
    default_reliability: float = 0.5

    def __post_init__(self) -> None:
        if not self.scales and not self.dropout:
            raise ConfigError("probe_scales / probe_dropout: at least one probe view is needed")
        for a in self.scales:
            if not 0.0 < a <= 1.0:
                raise ConfigError(f"probe_scales: each scale must lie in (0, 1], got {a!r}")
        for r in self.dropout:
            if not 0.0 < r < 1.0:
                raise ConfigError(f"probe_dropout: each rate must lie in (0, 1), got {r!r}")
        if self.views < 1:
            raise ConfigError(f"probe_views must be >= 1, got {self.views!r}")
        if self.every < 1:
            raise ConfigError(f"probe_every must be >= 1, got {self.every!r}")
        if self.metric not in ("rbo", "jaccard"):
            raise ConfigError(f"probe_metric must be 'rbo' or 'jaccard', got {self.metric!r}")
        if not 0.0 < self.rbo_p < 1.0:
            raise ConfigError(f"rbo_p must lie in (0, 1), got {self.rbo_p!r}")
        if not 0.0 <= self.default_reliability <= 1.0:
            raise ConfigError(f"default_reliability must lie in [0, 1], got {self.default_reliability!r}")

    @property
    def max_views(self) -> int:
        """Most views (queries) one prefix can cost."""
        return len(self.scales) + len(self.dropout) * self.views


@dataclass
class ProbeResult:
    """``data``: the input set with probing ``extras`` added and ``queries`` increased by the probes.

    ``extras`` added: ``reliability [N, L] float32``, ``stability [N, L, k] float32`` (0 on padding
    of a list and on unqueried prefixes), ``probed [N, L] bool`` (prefixes actually measured), and
    the probe answers as training data (:func:`probe_answer_extras`): ``probe_views [N, V, L]``,
    ``probe_lists [N, V, k]``, ``probe_col [N, V]``, ``probe_agree [N, V]``, ``probe_stability
    [N, V, k]``.
    """

    data: ExtractionSet
    queries: int
    probed_prefixes: int
    planned_queries: int
    stats: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- pure helpers
def prefix_lengths(sequences: np.ndarray) -> np.ndarray:
    """``int64 [N, L]``: the number of items in ``sequences[n, :t + 1]`` (left padding not counted)."""
    return np.cumsum(np.asarray(sequences) != PAD, axis=1)


def suffix_lengths(lengths: np.ndarray, scale: float) -> np.ndarray:
    """Length ``clip(ceil(scale · len), 1, len)`` of the suffix view at ``scale`` (0 where ``len = 0``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.clip(np.ceil(np.round(scale * lengths, 9)).astype(np.int64), 1, None)
    return np.where(lengths > 0, np.minimum(out, lengths), 0)


def probe_schedule(queried: np.ndarray, every: int) -> np.ndarray:
    """``int64 [N, L]``: probing level of each queried prefix, ``-1`` if never probed.

    Counting queried prefixes back from each sequence's last one (``r = 0`` for the last), a
    prefix is scheduled when ``r % every == 0``, at level ``r // every`` (level 0 = the last).
    """
    queried = np.asarray(queried, dtype=bool)
    back = np.cumsum(queried[:, ::-1], axis=1)[:, ::-1] - 1
    return np.where(queried & (back % every == 0), back // every, -1)


def suffix_views(sequences: np.ndarray, rows: np.ndarray, cols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``int64 [P, L]``: the last ``lengths[p]`` items of prefix ``sequences[rows[p], :cols[p] + 1]``, left-padded."""
    width = sequences.shape[1]
    back = (width - 1) - np.arange(width)[None, :]  # distance from the last column
    src = cols[:, None] - back
    keep = (back < lengths[:, None]) & (src >= 0)
    vals = sequences[rows[:, None], np.clip(src, 0, None)]
    return np.where(keep, vals, PAD)


def dropout_views(sequences: np.ndarray, rows: np.ndarray, cols: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``int64 [P, L]``: prefix ``(rows[p], cols[p])`` with ``clip(round(rate·len), 1, len − 1)`` items dropped.

    Dropped items are chosen uniformly (random keys from ``rng``); the kept items keep their
    order and are right-aligned. Rows of prefixes with one item are returned unchanged.
    """
    width = sequences.shape[1]
    src = cols[:, None] - ((width - 1) - np.arange(width)[None, :])
    vals = np.where(src >= 0, sequences[rows[:, None], np.clip(src, 0, None)], PAD)
    valid = vals != PAD
    length = valid.sum(1)
    drop = np.clip(np.rint(rate * length).astype(np.int64), 1, np.maximum(length - 1, 1))
    drop = np.where(length > 1, drop, 0)
    keys = np.where(valid, rng.random(vals.shape), np.inf)
    order = np.argsort(keys, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(width)[None, :].repeat(len(vals), 0), axis=1)
    kept = valid & (ranks >= drop[:, None])
    compact = np.argsort(kept, axis=1, kind="stable")  # dropped/pad first, kept (in order) last
    return np.where(np.take_along_axis(kept, compact, 1), np.take_along_axis(vals, compact, 1), PAD)


def _member(values: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Bool ``[P, K]``: ``values[p, i] >= 0`` occurs in ``pool[p]`` (negative ids never match)."""
    if pool.shape[1] == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    sorted_pool, _ = torch.sort(pool, dim=1)
    idx = torch.searchsorted(sorted_pool, values.contiguous()).clamp_(max=pool.shape[1] - 1)
    return (torch.gather(sorted_pool, 1, idx) == values) & (values >= 0)


def drop_listed(lists: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """``lists [P, k]`` without the ids in ``exclude [P, M]`` (row-wise), compacted, ``-1``-padded."""
    lt = torch.from_numpy(np.ascontiguousarray(lists, dtype=np.int64))
    out = torch.where(_member(lt, torch.from_numpy(np.ascontiguousarray(exclude, dtype=np.int64))), -1, lt)
    order = torch.argsort((out < 0).to(torch.int8), dim=1, stable=True)
    return torch.gather(out, 1, order).numpy()


def _truncate(lists: np.ndarray, depth: np.ndarray) -> np.ndarray:
    return np.where(np.arange(lists.shape[1])[None, :] < depth[:, None], lists, -1)


def list_agreement(full: np.ndarray, probe: np.ndarray, metric: ProbeMetric = "rbo", rbo_p: float = 0.9) -> np.ndarray:
    """``float64 [P]`` in ``[0, 1]``: agreement of each full-scale list with its probe list.

    Both lists are compared at the depth both cover (``min`` of their valid lengths): a probe
    answer loses the full prefix's items it listed, so it can be shorter without disagreeing.
    Rows where either list is empty score 0.
    """
    full, probe = np.asarray(full, dtype=np.int64), np.asarray(probe, dtype=np.int64)
    depth = np.minimum((full >= 0).sum(1), (probe >= 0).sum(1))
    full, probe = _truncate(full, depth), _truncate(probe, depth)
    if metric == "rbo":
        values = rank_biased_overlap(full, probe, p=rbo_p)
    elif metric == "jaccard":
        values = jaccard_at_k(full, probe)
    else:
        raise ConfigError(f"probe_metric must be 'rbo' or 'jaccard', got {metric!r}")
    return np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)


def stability_share(lists: np.ndarray, probe_lists: np.ndarray, view_ok: np.ndarray, unknown: np.ndarray | None = None) -> np.ndarray:
    """``float32 [P, k]``: per listed item, the share of the probe lists that contain it.

    ``lists [P, k]``, ``probe_lists [P, V, k]``, ``view_ok [P, V]``. As in :func:`list_agreement`,
    a probe list of ``d`` valid items speaks only for the items at ranks ``< d`` of the full list:
    item ``r``'s share is over the usable views with ``d_v > r``. An item no view speaks for gets
    its row's mean share (1 when no item of the row is covered: nothing contradicts the list),
    and so does an item flagged ``unknown [P, k]`` (e.g. an item of the probed prefix, which its
    probe answers could not hold). Padding (``-1``) scores 0.
    """
    lt = torch.from_numpy(np.ascontiguousarray(lists, dtype=np.int64))
    ranks = torch.arange(lt.shape[1])[None, :]
    hits = torch.zeros(lt.shape, dtype=torch.float32)
    cover = torch.zeros(lt.shape, dtype=torch.float32)
    ok = torch.from_numpy(np.asarray(view_ok, dtype=bool))
    for v in range(probe_lists.shape[1]):
        pool = torch.from_numpy(np.ascontiguousarray(probe_lists[:, v], dtype=np.int64))
        covers = ok[:, v : v + 1] & (ranks < (pool >= 0).sum(1, keepdim=True))
        hits += (_member(lt, pool) & covers).float()
        cover += covers.float()
    valid = lt >= 0
    covered = valid & (cover > 0)
    if unknown is not None:
        covered &= ~torch.from_numpy(np.asarray(unknown, dtype=bool))
    share = hits / cover.clamp(min=1)
    n_cov = covered.sum(1, keepdim=True)
    row_mean = torch.where(n_cov > 0, (share * covered).sum(1, keepdim=True) / n_cov.clamp(min=1), torch.ones_like(share[:, :1]))
    share = torch.where(covered, share, row_mean.expand_as(share))
    return torch.where(valid, share, torch.zeros_like(share)).numpy()


def nearest_marked(marked: np.ndarray) -> np.ndarray:
    """``int64 [N, L]``: column of the nearest ``True`` of ``marked`` in the same row (ties → later), ``-1`` if none."""
    n, width = marked.shape
    cols = np.broadcast_to(np.arange(width), (n, width))
    prev = np.maximum.accumulate(np.where(marked, cols, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(marked, cols, width)[:, ::-1], axis=1)[:, ::-1]
    d_prev = np.where(prev >= 0, cols - prev, np.iinfo(np.int64).max)
    d_next = np.where(nxt < width, nxt - cols, np.iinfo(np.int64).max)
    best = np.where(d_next <= d_prev, nxt, prev)
    return np.where((prev < 0) & (nxt >= width), -1, best)


def constant_extras(data: ExtractionSet, reliability: float) -> dict[str, np.ndarray]:
    """Extras of an unprobed set (the ``probing=False`` ablation): reliability constant, stability 1."""
    n, width, _ = data.lists.shape
    return {
        "reliability": np.full((n, width), reliability, dtype=np.float32),
        "stability": (data.lists >= 0).astype(np.float32),
        "probed": np.zeros((n, width), dtype=bool),
    }


# --------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    rows: np.ndarray  # [M] probed prefix rows (sequence index)
    cols: np.ndarray  # [M]
    level: np.ndarray  # [M]
    view_len: np.ndarray  # [M, S] suffix lengths (0 = view not sent)
    dropout_ok: np.ndarray  # [M] prefix long enough for dropout views
    cost: np.ndarray  # [M] queries of each prefix


def _plan(data: ExtractionSet, spec: ProbeSpec) -> _Plan:
    sequences = np.asarray(data.sequences, dtype=np.int64)
    level = probe_schedule(data.queried, spec.every)
    rows, cols = np.nonzero(level >= 0)
    lvl = level[rows, cols]
    length = prefix_lengths(sequences)[rows, cols]
    scales = sorted(set(spec.scales), reverse=True)
    lens = np.stack([suffix_lengths(length, a) for a in scales], axis=1) if scales else np.zeros((len(rows), 0), np.int64)
    ok = lens < length[:, None]
    if lens.shape[1] > 1:
        ok[:, 1:] &= lens[:, 1:] != lens[:, :-1]  # a scale that rounds to the previous length is a duplicate
    lens = np.where(ok, lens, 0)
    dropout_ok = length > 1
    cost = ok.sum(1) + np.where(dropout_ok, len(spec.dropout) * spec.views, 0)
    keep = cost > 0
    order = np.lexsort((cols[keep], rows[keep], lvl[keep]))  # level by level, then sequence, then column
    pick = np.flatnonzero(keep)[order]
    return _Plan(rows[pick], cols[pick], lvl[pick], lens[pick], dropout_ok[pick], cost[pick])


def planned_probe_queries(data: ExtractionSet, spec: ProbeSpec) -> int:
    """Queries :func:`probe` would spend on ``data`` with an unlimited budget."""
    return int(_plan(data, spec).cost.sum())


def probes_per_sequence(max_len: int, spec: ProbeSpec) -> int:
    """Probe queries for one sequence of ``max_len`` items whose every prefix was queried."""
    seq = np.arange(max_len, dtype=np.int64)[None, :]
    lists = np.zeros((1, max_len, 1), dtype=np.int32)
    return planned_probe_queries(ExtractionSet(seq, lists, 0), spec)


# --------------------------------------------------------------------------- probe answers as data
PROBE_ANSWER_EXTRAS = ("probe_views", "probe_lists", "probe_col", "probe_agree", "probe_stability")


def view_stability(
    answers: np.ndarray, full_lists: np.ndarray, prefix_items: np.ndarray, owner: np.ndarray, slot: np.ndarray, slots: int
) -> np.ndarray:
    """``float32 [Q, k]``: per item of each view's answer, the share of the *other* answers to the
    same prefix (its full-scale answer and its other views) that list it (:func:`stability_share`).

    ``answers [Q, k]`` are the views' raw answers, ``full_lists [Q, k]`` / ``prefix_items [Q, L]``
    the full-scale answer and items of each view's prefix. The full-scale answer cannot hold the
    prefix's own items, so such items are scored by their row's mean share, as unknowns.
    """
    q, k = answers.shape
    if q == 0:
        return np.zeros((0, k), dtype=np.float32)
    owners, index = np.unique(owner, return_inverse=True)
    table = np.full((len(owners), slots, k), -1, dtype=np.int64)
    filled = np.zeros((len(owners), slots), dtype=bool)
    table[index, slot] = answers
    filled[index, slot] = True
    out = np.zeros((q, k), dtype=np.float32)
    unknown = _member(
        torch.from_numpy(np.ascontiguousarray(answers, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(prefix_items, dtype=np.int64)),
    ).numpy()
    for s in range(slots):
        sel = np.flatnonzero(slot == s)
        if not len(sel):
            continue
        others = np.concatenate([full_lists[sel][:, None, :], table[index[sel]]], axis=1)
        ok = np.concatenate([np.ones((len(sel), 1), dtype=bool), filled[index[sel]]], axis=1)
        ok[:, 1 + s] = False  # not the view itself
        out[sel] = stability_share(answers[sel], others, ok, unknown[sel])
    return out


def probe_answer_extras(
    n: int,
    width: int,
    k: int,
    views: np.ndarray,
    answers: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    prefix: np.ndarray,
    slot: np.ndarray,
    agree: np.ndarray,
    full_lists: np.ndarray,
    prefix_items: np.ndarray,
    slots: int,
) -> dict[str, np.ndarray]:
    """The probe answers laid out per sequence, so they can train the student (BAHSD "probes that teach").

    A probe is the black box's top-``k`` for a real input — a view of a prefix — so the pair
    (view, answer) is one more labelled example. Per sequence ``n`` and view ``v`` (``V`` = the most
    views any sequence got): ``probe_views [N, V, L] int32`` (the view, right-aligned, ``PAD``-padded),
    ``probe_lists [N, V, k] int32`` (its raw answer, ``-1`` where no view), ``probe_col [N, V]
    int64`` (the column of the prefix it is a view of), ``probe_agree [N, V] float32`` (agreement of
    its answer with the prefix's, as in the reliability) and ``probe_stability [N, V, k] float32``
    (:func:`view_stability`). ``rows``/``cols``/``prefix`` [Q]: each view's sequence, column and
    probed-prefix index; ``slot`` [Q] its view slot (< ``slots``).
    """
    rows = np.asarray(rows, dtype=np.int64)
    count = np.bincount(rows, minlength=n) if len(rows) else np.zeros(n, dtype=np.int64)
    v_max = max(int(count.max(initial=0)), 1)
    order = np.lexsort((slot, cols, rows)) if len(rows) else np.zeros(0, dtype=np.int64)
    r = rows[order]
    first = np.concatenate([[0], np.cumsum(count)[:-1]]) if n else np.zeros(0, dtype=np.int64)
    position = np.arange(len(r)) - first[r] if len(r) else np.zeros(0, dtype=np.int64)
    out_views = np.full((n, v_max, width), PAD, dtype=np.int32)
    out_lists = np.full((n, v_max, k), -1, dtype=np.int32)
    out_col = np.full((n, v_max), -1, dtype=np.int64)
    out_agree = np.zeros((n, v_max), dtype=np.float32)
    out_stability = np.zeros((n, v_max, k), dtype=np.float32)
    if len(r):
        stability = view_stability(answers, full_lists, prefix_items, prefix, slot, slots)
        out_views[r, position] = views[order]
        out_lists[r, position] = answers[order]
        out_col[r, position] = np.asarray(cols)[order]
        out_agree[r, position] = np.asarray(agree)[order]
        out_stability[r, position] = stability[order]
    return {
        "probe_views": out_views,
        "probe_lists": out_lists,
        "probe_col": out_col,
        "probe_agree": out_agree,
        "probe_stability": out_stability,
    }


# --------------------------------------------------------------------------- probing
def _views(sequences: np.ndarray, plan: _Plan, spec: ProbeSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All view queries ``[Q, L]``, their prefix index ``[Q]`` and view slot ``[Q]``."""
    blocks, owner, slot = [], [], []
    for s in range(plan.view_len.shape[1]):
        sel = np.flatnonzero(plan.view_len[:, s] > 0)
        blocks.append(suffix_views(sequences, plan.rows[sel], plan.cols[sel], plan.view_len[sel, s]))
        owner.append(sel)
        slot.append(np.full(len(sel), s))
    base = plan.view_len.shape[1]
    sel = np.flatnonzero(plan.dropout_ok)
    for d, rate in enumerate(spec.dropout):
        for v in range(spec.views):
            blocks.append(dropout_views(sequences, plan.rows[sel], plan.cols[sel], rate, rng))
            owner.append(sel)
            slot.append(np.full(len(sel), base + d * spec.views + v))
    if not blocks:
        width = sequences.shape[1]
        return np.zeros((0, width), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(blocks), np.concatenate(owner), np.concatenate(slot)


def _ask_views(client: BlackBoxClient, views: np.ndarray, k: int, query_batch: int) -> tuple[np.ndarray, int]:
    """The black box's answers to ``views`` (``int64 [V, k]``, -1 padded), asked in requests of
    ``query_batch``, and the queries the client charged for them."""
    answers = np.full((len(views), k), -1, dtype=np.int64)
    spent_before = client.spent
    for start in range(0, len(views), query_batch):
        chunk = views[start : start + query_batch]
        got = np.asarray(client.query(chunk, k))
        answers[start : start + len(chunk), : got.shape[1]] = got
    return answers, client.spent - spent_before


def _stability(
    data: ExtractionSet, sequences: np.ndarray, plan: _Plan, src: np.ndarray, probe_lists: np.ndarray, view_ok: np.ndarray
) -> np.ndarray:
    """Per queried prefix and list item, the share of the probe views of its nearest probed prefix
    (``src``: that prefix's row in ``plan``, -1 for none) whose answers keep the item; a prefix
    with no probed neighbour keeps every listed item (1)."""
    n, width, k = data.lists.shape
    stability = np.zeros((n, width, k), dtype=np.float32)
    qr, qc = np.nonzero(data.queried)
    has = src[qr, qc] >= 0
    stability[qr[~has], qc[~has]] = (data.lists[qr[~has], qc[~has]] >= 0).astype(np.float32)
    qr, qc = qr[has], qc[has]
    step = 65536
    for start in range(0, len(qr), step):
        r, c = qr[start : start + step], qc[start : start + step]
        s = src[r, c]
        own = data.lists[r, c].astype(np.int64)
        # items of the probed prefix (not of this one) cannot be in its probe answers
        src_items = np.where(np.arange(width)[None, :] <= plan.cols[s][:, None], sequences[plan.rows[s]], PAD)
        unknown = _member(torch.from_numpy(own), torch.from_numpy(src_items)).numpy()
        stability[r, c] = stability_share(own, probe_lists[s], view_ok[s], unknown)
    return stability


def probe(
    client: BlackBoxClient,
    data: ExtractionSet,
    spec: ProbeSpec,
    *,
    rng: np.random.Generator,
    query_batch: int = 1024,
    query_budget: int | None = None,
) -> ProbeResult:
    """Probe the black box on views of ``data``'s prefixes; add reliability/stability extras.

    Each view is asked for as many items as ``data``'s lists hold (``k``). Spends at most
    ``query_budget`` queries (and at most the client's remaining budget), in requests of
    ``query_batch`` sequences. Returns the new set (its ``queries`` = ``data.queries`` + the
    probes) and how many queries the probes took.
    """
    if query_batch < 1:
        raise ConfigError(f"query_batch must be >= 1, got {query_batch!r}")
    sequences = np.asarray(data.sequences, dtype=np.int64)
    n, width, k = data.lists.shape
    plan = _plan(data, spec)
    planned = int(plan.cost.sum())
    budget = planned if query_budget is None else min(planned, max(int(query_budget), 0))
    remaining = client.remaining_budget
    if remaining >= 0:
        budget = min(budget, remaining)
    take = int(np.searchsorted(np.cumsum(plan.cost), budget, side="right"))  # whole prefixes only
    plan = _Plan(*(getattr(plan, f)[:take] for f in ("rows", "cols", "level", "view_len", "dropout_ok", "cost")))

    views, owner, slot = _views(sequences, plan, spec, rng)
    answers, queries = _ask_views(client, views, k, query_batch)
    raw_answers = answers.copy()

    # answers minus the full prefix's own items, compared with the full-scale list
    full_lists = np.asarray(data.lists[plan.rows[owner], plan.cols[owner]], dtype=np.int64)
    prefix_items = np.where(np.arange(width)[None, :] <= plan.cols[owner][:, None], sequences[plan.rows[owner]], PAD)
    answers = drop_listed(answers, prefix_items)
    agree = list_agreement(full_lists, answers, spec.metric, spec.rbo_p) if len(answers) else np.zeros(0)

    m = len(plan.rows)
    views_per = spec.max_views
    probe_lists = np.full((m, views_per, k), -1, dtype=np.int64)
    view_ok = np.zeros((m, views_per), dtype=bool)
    probe_lists[owner, slot] = answers
    view_ok[owner, slot] = True
    count = np.bincount(owner, minlength=m)
    rel_probed = np.bincount(owner, weights=agree, minlength=m) / np.maximum(count, 1)

    # spread to every prefix: nearest probed prefix of the same sequence
    probed = np.zeros((n, width), dtype=bool)
    probed[plan.rows, plan.cols] = True
    index = np.full((n, width), -1, dtype=np.int64)
    index[plan.rows, plan.cols] = np.arange(m)
    near = nearest_marked(probed)
    src = np.where(near >= 0, index[np.arange(n)[:, None], np.clip(near, 0, None)], -1)
    reliability = np.where(src >= 0, rel_probed[np.clip(src, 0, None)] if m else 0.0, spec.default_reliability).astype(np.float32)

    queried = data.queried
    stability = _stability(data, sequences, plan, src, probe_lists, view_ok)

    answer_extras = probe_answer_extras(
        n, width, k, views, raw_answers, plan.rows[owner], plan.cols[owner], owner, slot, agree, full_lists, prefix_items, spec.max_views
    )
    extras = {**data.extras, "reliability": reliability, "stability": stability, "probed": probed, **answer_extras}
    out = replace(data, queries=int(data.queries) + int(queries), extras=extras)
    stats = {
        "probe_queries": float(queries),
        "probed_prefixes": float(m),
        "reliability_probed_mean": float(rel_probed.mean()) if m else math.nan,
        "reliability_mean": float(reliability[queried].mean()) if queried.any() else math.nan,
    }
    return ProbeResult(out, int(queries), m, planned, stats)
