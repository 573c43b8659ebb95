"""What the attacker asks the black box: synthetic sequences (Yue et al. 2021, §3.2) or the
prefixes of real sequences, each prefix one query, under an exact query budget.

* :func:`synthesize` — data-free sequences. ``"autoregressive"``: start from a uniform random
  item, query the prefix, append an item drawn uniformly from the returned top-k list, up to
  ``max_len`` (Yue et al.'s autoregressive generation); ``"random"``: uniform items (no item
  twice in a sequence), every prefix queried. All sequences grow together, one batched request
  (of at most ``query_batch`` sequences) per step; no Python loop over sequences.
* :func:`label_sequences` — the black box's lists for the prefixes of given sequences (the
  attacker's real data; used by BAHSD and by Zhu et al.'s PTQ/PTAQ on sequential targets).

Only the client is touched: ranked item ids in, nothing else (no scores exist on this path).
The budget is never exceeded: a step that the remaining budget cannot cover in full answers the
first sequences only and growth stops there.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from raysteal.errors import ConfigError
from raysteal.extraction.types import ExtractionSet
from raysteal.models.base import PAD
from raysteal.oracle.errors import QueryBudgetExceeded
from raysteal.oracle.protocol import BlackBoxClient

Strategy = Literal["autoregressive", "random"]
_KEY_CELLS = 1 << 24
"""Random keys drawn at once when sampling distinct items (rows x catalogue)."""


def query_allowance(client: BlackBoxClient, query_budget: int | None = None) -> int | None:
    """Queries this attack may still spend: the smaller of ``query_budget`` and the client's
    remaining budget; ``None`` when both are unlimited."""
    if query_budget is not None and query_budget < 0:
        raise ConfigError(f"query_budget must be >= 0, got {query_budget}")
    remaining = int(client.remaining_budget)
    limits = [int(b) for b in (query_budget, None if remaining < 0 else remaining) if b is not None]
    return min(limits) if limits else None


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _ask(client: BlackBoxClient, prefixes: np.ndarray, k: int, query_batch: int, lists_out: np.ndarray) -> int:
    """Query ``prefixes [m, W]`` in requests of ``query_batch`` rows, writing answers into
    ``lists_out [m, k]`` (right-padded with -1). Returns how many rows were answered (fewer than
    ``m`` only if the black box refused a request for lack of budget)."""
    done = 0
    for start in range(0, len(prefixes), query_batch):
        chunk = prefixes[start : start + query_batch]
        try:
            answer = np.asarray(client.query(chunk, k))
        except QueryBudgetExceeded:
            break
        if answer.ndim != 2 or answer.shape[0] != len(chunk) or answer.shape[1] > k:
            raise ConfigError(f"the black box answered shape {answer.shape} for {len(chunk)} queries of k={k}")
        lists_out[start : start + len(chunk), : answer.shape[1]] = answer
        done += len(chunk)
    return done


def _draw_from_lists(answers: np.ndarray, num_items: int, rng: np.random.Generator) -> np.ndarray:
    """One item per row drawn uniformly from the row's valid (``>= 0``) entries; a row with none
    gets a uniform catalogue item."""
    valid = answers >= 0
    counts = valid.sum(axis=1)
    pick = np.minimum((rng.random(len(answers)) * counts).astype(np.int64), np.maximum(counts - 1, 0))
    pos = np.argmax(np.cumsum(valid, axis=1) > pick[:, None], axis=1)
    drawn = answers[np.arange(len(answers)), pos].astype(np.int64)
    empty = counts == 0
    if empty.any():
        drawn[empty] = rng.integers(0, num_items, int(empty.sum()))
    return drawn


def _distinct_items(rows: int, length: int, num_items: int, rng: np.random.Generator) -> np.ndarray:
    """``int64 [rows, length]`` uniform items without repeats within a row (with repeats when
    ``length > num_items``)."""
    if length > num_items:
        return rng.integers(0, num_items, (rows, length))
    out = np.empty((rows, length), dtype=np.int64)
    step = max(1, _KEY_CELLS // num_items)
    for start in range(0, rows, step):  # chunks of rows bound the key matrix, not a per-row loop
        keys = rng.random((min(step, rows - start), num_items))
        chosen = np.argpartition(keys, length - 1, axis=1)[:, :length] if length < num_items else np.argsort(keys, axis=1)
        order = np.argsort(np.take_along_axis(keys, chosen, axis=1), axis=1)  # uniform order of the chosen set
        out[start : start + len(keys)] = np.take_along_axis(chosen, order, axis=1)
    return out


def _right_align(values: np.ndarray, lengths: np.ndarray, fill: int) -> np.ndarray:
    """Move each row's first ``lengths[n]`` entries (axis 1) to the row's end, ``fill`` before."""
    width = values.shape[1]
    src = np.arange(width)[None, :] - (width - lengths)[:, None]
    valid = src >= 0
    gathered = np.take_along_axis(values, np.clip(src, 0, width - 1).reshape(src.shape + (1,) * (values.ndim - 2)), axis=1)
    mask = valid.reshape(valid.shape + (1,) * (values.ndim - 2))
    return np.where(mask, gathered, np.asarray(fill, dtype=values.dtype))


def synthesize(
    client: BlackBoxClient,
    *,
    strategy: Strategy,
    num_sequences: int,
    max_len: int,
    k: int,
    rng: np.random.Generator,
    query_batch: int = 1024,
    query_budget: int | None = None,
) -> ExtractionSet:
    """Grow ``num_sequences`` synthetic sequences of up to ``max_len`` items against the black box
    (Yue et al. 2021, §3.2); every prefix is one top-``k`` query.

    Step ``t`` queries the length-``t+1`` prefix of every sequence (requests of ``query_batch``
    rows) and, for ``"autoregressive"``, appends to each an item drawn uniformly from its answer.
    The budget (``query_budget`` and the client's own) is respected exactly: when it cannot cover
    a whole step, the first sequences are answered and growth stops; sequences that got no query
    at all are dropped. Shorter sequences are left-padded with ``PAD`` like real ones. A budget
    below one query is a ``ConfigError``.
    """
    if strategy not in ("autoregressive", "random"):
        raise ConfigError(f"synthesis: unknown strategy {strategy!r}; known: autoregressive, random")
    _check_positive(num_sequences=num_sequences, max_len=max_len, k=k, query_batch=query_batch)
    num_items = int(client.num_items)
    if k > num_items:
        raise ConfigError(f"k={k} is larger than the black box's catalogue ({num_items} items)")
    allowance = query_allowance(client, query_budget)
    if allowance is not None and allowance < 1:
        raise ConfigError(f"query budget {allowance} cannot pay for a single sequence's first query")
    n = int(num_sequences) if allowance is None else min(int(num_sequences), allowance)
    length = int(max_len)
    if strategy == "random":
        grown = _distinct_items(n, length, num_items, rng)
    else:
        grown = np.full((n, length), PAD, dtype=np.int64)
        grown[:, 0] = rng.integers(0, num_items, n)
    lists = np.full((n, length, k), -1, dtype=np.int32)
    answered = np.zeros(n, dtype=np.int64)  # queried prefixes per sequence
    spent = 0
    for t in range(length):
        m = n if allowance is None else min(n, allowance - spent)
        if m <= 0:
            break
        step_lists = np.full((m, k), -1, dtype=np.int64)
        m = _ask(client, grown[:m, : t + 1], k, query_batch, step_lists)
        if m == 0:
            break
        lists[:m, t] = step_lists[:m]
        answered[:m] = t + 1
        spent += m
        if strategy == "autoregressive" and t + 1 < length:
            grown[:m, t + 1] = _draw_from_lists(step_lists[:m], num_items, rng)
        if m < n:
            break
    if (answered == length).all():  # every sequence grew to full length: nothing to re-align
        return ExtractionSet(sequences=grown, lists=lists, queries=spent)
    keep = answered > 0
    grown, lists, answered = grown[keep], lists[keep], answered[keep]
    grown = np.where(np.arange(length)[None, :] < answered[:, None], grown, PAD)
    return ExtractionSet(
        sequences=_right_align(grown, answered, PAD),
        lists=_right_align(lists, answered, -1),
        queries=spent,
    )


def spaced_prefixes(lengths: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, spans)``: ``budget`` prefixes spread over sequences of ``lengths`` items.

    Each sequence gets a share proportional to its length (largest remainder, so the shares sum to
    the budget exactly), and its ``m`` prefixes end every ``n / m`` items, the last at the whole
    sequence (spans ``ceil(j·n / m)``, ``j = 1..m``, all distinct since ``m <= n``): an even
    subsample of all prefixes, long ones included. With a budget of at least every prefix, every
    prefix."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if budget >= total:
        quota = lengths
    else:
        share = lengths * (max(int(budget), 0) / max(total, 1))
        quota = np.floor(share).astype(np.int64)
        extra = np.argsort(-(share - quota), kind="stable")[: max(int(budget), 0) - int(quota.sum())]
        quota[extra] += 1
    rows = np.repeat(np.arange(len(lengths)), quota)
    j = np.arange(len(rows)) - np.repeat(np.cumsum(quota) - quota, quota) + 1
    n, m = lengths[rows], quota[rows]
    return rows, (j * n + m - 1) // m


def label_sequences(
    client: BlackBoxClient,
    sequences: np.ndarray,
    *,
    k: int,
    prefixes: Literal["all", "last", "spaced"] = "all",
    query_batch: int = 1024,
    query_budget: int | None = None,
) -> ExtractionSet:
    """The black box's top-``k`` lists for prefixes of real ``sequences`` (``int64 [N, L]``,
    left-padded with ``PAD``): every prefix (``"all"``), the whole sequence only (``"last"``), or
    under a budget smaller than the prefixes an even subsample of each sequence's prefixes, long
    ones included (``"spaced"``, :func:`spaced_prefixes`; every prefix when the budget covers them).

    Prefixes are asked shortest first (all sequences' 1-item prefixes, then 2-item ones, ...),
    so with ``"all"`` a budget that runs out cuts every sequence's longest prefixes rather than
    whole sequences; the budget is respected exactly. Empty rows are never queried.
    """
    seqs = np.asarray(sequences)
    if seqs.ndim != 2 or not np.issubdtype(seqs.dtype, np.integer):
        raise ConfigError(f"sequences must be an integer array [N, L], got {seqs.dtype} of shape {seqs.shape}")
    if prefixes not in ("all", "last", "spaced"):
        raise ConfigError(f"prefixes must be 'all', 'last' or 'spaced', got {prefixes!r}")
    _check_positive(k=k, query_batch=query_batch)
    seqs = seqs.astype(np.int64, copy=False)
    num_items = int(client.num_items)
    if seqs.size and (seqs.min() < PAD or seqs.max() >= num_items):
        raise ConfigError(f"sequences must hold PAD={PAD} or item ids in [0, {num_items})")
    if k > num_items:
        raise ConfigError(f"k={k} is larger than the black box's catalogue ({num_items} items)")
    n, width = seqs.shape
    valid = seqs != PAD
    has_items = valid.any(axis=1)
    start = np.where(has_items, np.argmax(valid, axis=1), width)
    allowance = query_allowance(client, query_budget)
    if allowance is not None and allowance < 1 and has_items.any():
        raise ConfigError(f"query budget {allowance} cannot pay for a single prefix's answer ({int(valid.sum())} to label)")
    if prefixes == "last":
        rows = np.flatnonzero(has_items)
        cols = width - 1 - np.argmax(valid[rows, ::-1], axis=1)
    elif prefixes == "spaced" and allowance is not None:
        rows, spans = spaced_prefixes(valid.sum(axis=1), max(int(allowance), 0))
        cols = start[rows] + spans - 1
    else:
        rows, cols = np.nonzero(valid)
    span = cols - start[rows] + 1
    order = np.lexsort((rows, span))  # shortest prefixes first, then by sequence
    rows, cols, span = rows[order], cols[order], span[order]
    if allowance is not None:
        rows, cols, span = rows[:allowance], cols[:allowance], span[:allowance]
    lists = np.full((n, width, k), -1, dtype=np.int32)
    spent = 0
    for lo in range(0, len(rows), query_batch):
        r, c = rows[lo : lo + query_batch], cols[lo : lo + query_batch]
        w = int(span[lo : lo + query_batch].max())
        src = c[:, None] - (w - 1 - np.arange(w))[None, :]
        prefix = np.where(src >= 0, seqs[r[:, None], np.clip(src, 0, None)], PAD)
        out = np.full((len(r), k), -1, dtype=np.int64)
        done = _ask(client, prefix, k, len(r), out)
        lists[r[:done], c[:done]] = out[:done]
        spent += done
        if done < len(r):
            break
    return ExtractionSet(sequences=seqs.copy(), lists=lists, queries=spent)
