"""Per-account features of a server's query log (:mod:`raysteal.oracle.querylog`), nothing else.

An account's granted rows are flattened into its queries in the order the server answered them
(:func:`account_queries`); :func:`query_flags` marks, for every query, whether it continues one of
the account's earlier queries and whether it does so with an item that earlier answer held;
:func:`features_at` turns the first ``n`` queries into the features the detector scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from raysteal.errors import DataFileError
from raysteal.oracle.querylog import CONTENT_COLUMNS

FEATURES: tuple[str, ...] = ("autoregressive", "fresh_starts", "popularity_gtest", "length_gtest", "coverage", "rate_qps", "volume")
"""Every feature, in report order (what each measures: :func:`features_at`)."""

CONTENT_FEATURES: tuple[str, ...] = ("autoregressive", "fresh_starts", "popularity_gtest", "length_gtest")
"""Features of what an account asks, not of how much or how fast: an attacker that spreads its
budget over many slow accounts keeps these."""

LENGTH_BINS = 9
"""Input lengths are histogrammed by ``floor(log2(length))``, 1 ... 256+."""


@dataclass(frozen=True)
class AccountQueries:
    """One account's granted queries in answer order, flattened from its log rows."""

    account: str
    times: np.ndarray  # float64 [n] seconds (the row's log time, shared by a request's queries)
    lengths: np.ndarray  # int64 [n]
    last_items: np.ndarray  # int64 [n]: the newest item of each input (a user id: the id)
    input_hashes: np.ndarray  # int64 [n]
    prefix_hashes: np.ndarray  # int64 [n]: the input less its last item
    tail_hashes: np.ndarray  # int64 [n]: the input less its first item
    answers: list[np.ndarray]  # the list the server returned for each query

    def __len__(self) -> int:
        return len(self.lengths)


def _frame(log: pa.Table | pd.DataFrame) -> pd.DataFrame:
    frame = log if isinstance(log, pd.DataFrame) else log.to_pandas()
    missing = [c for c in ("attacker", "time", "granted", *CONTENT_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataFileError(f"query log: no column(s) {', '.join(missing)}; written by an older raysteal (no per-query content to score)")
    return frame


def account_queries(log: pa.Table | pd.DataFrame) -> dict[str, AccountQueries]:
    """Every account's queries from a query log (granted rows with content; refused rows and rows
    without content are skipped). ``DataFileError`` when the log holds no such row."""
    frame = _frame(log)
    frame = frame[frame["granted"].astype(bool) & frame["lengths"].notna()]
    if frame.empty:
        raise DataFileError("query log: no granted query with its content; nothing to score (an empty log?)")
    frame = frame.sort_values("time", kind="stable")
    seconds = ((pd.to_datetime(frame["time"], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy()
    out: dict[str, AccountQueries] = {}
    for account, idx in frame.groupby("attacker", sort=True).indices.items():
        rows = frame.iloc[idx]
        counts = np.array([len(v) for v in rows["lengths"]])
        out[str(account)] = AccountQueries(
            account=str(account),
            times=np.repeat(seconds[idx], counts),
            lengths=np.concatenate([np.asarray(v, dtype=np.int64) for v in rows["lengths"]]),
            last_items=np.concatenate([np.asarray(v, dtype=np.int64) for v in rows["last_items"]]),
            input_hashes=np.concatenate([np.asarray(v, dtype=np.int64) for v in rows["input_hashes"]]),
            prefix_hashes=np.concatenate([np.asarray(v, dtype=np.int64) for v in rows["prefix_hashes"]]),
            tail_hashes=np.concatenate([np.asarray(v, dtype=np.int64) for v in rows["tail_hashes"]]),
            answers=[np.asarray(a, dtype=np.int64) for lists in rows["answers"] for a in lists],
        )
    return out


def query_flags(q: AccountQueries) -> tuple[np.ndarray, np.ndarray]:
    """``(continues, extends_answer)``, bool ``[n]``: query ``i`` is an earlier query of the account
    plus one item (or a full window of one slid by one item), and that item was in the list the
    server returned for the earlier query. DFME's synthesis does exactly this at every step (Yue et
    al.: append an item of the returned list, query the new prefix); a real user who asks again
    after each interaction continues too, but extends with the item they chose, which the list
    held only as often as the recommender is right."""
    continues = np.zeros(len(q), dtype=bool)
    extends = np.zeros(len(q), dtype=bool)
    seen_input: dict[int, int] = {}
    seen_tail: dict[tuple[int, int], int] = {}
    answer_sets: dict[int, set[int]] = {}
    for i in range(len(q)):
        length = int(q.lengths[i])
        if length >= 2:
            j = seen_input.get(int(q.prefix_hashes[i]))
            if j is None:
                j = seen_tail.get((int(q.prefix_hashes[i]), length))
            if j is not None:
                continues[i] = True
                if j not in answer_sets:
                    answer_sets[j] = set(q.answers[j].tolist())
                extends[i] = int(q.last_items[i]) in answer_sets[j]
        seen_input.setdefault(int(q.input_hashes[i]), i)
        seen_tail.setdefault((int(q.tail_hashes[i]), length), i)
    return continues, extends


def gtest_z(counts: np.ndarray, reference: np.ndarray) -> float:
    """How far a histogram of ``n`` draws is from ``reference``, in standard deviations of the
    G-test: ``G = 2 n KL(counts / n || reference)`` is chi-square with ``B - 1`` degrees of freedom
    when the draws follow the reference, so ``(G - (B - 1)) / sqrt(2 (B - 1))`` is about 0 for
    real users' traffic whatever its size, and grows with the evidence against it (a raw
    divergence would not: 10 real queries over 10 bins already diverge by chance)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    bins = len(counts)
    if n <= 0 or bins < 2:
        return 0.0
    ref = np.asarray(reference, dtype=np.float64) + 1e-3  # a bin real users never hit: rare, not impossible
    ref /= ref.sum()
    p = counts / n
    nz = p > 0
    g = 2.0 * n * float((p[nz] * np.log(p[nz] / ref[nz])).sum())
    return (g - (bins - 1)) / np.sqrt(2.0 * (bins - 1))


def length_bins(lengths: np.ndarray) -> np.ndarray:
    """Each input length's bin, ``floor(log2(length))`` clipped to ``LENGTH_BINS - 1``."""
    return np.clip(np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64), 0, LENGTH_BINS - 1)


def features_at(
    q: AccountQueries,
    flags: tuple[np.ndarray, np.ndarray],
    item_bins: np.ndarray,
    bin_mass: np.ndarray,
    length_mass: np.ndarray,
    catalogue: int,
    n: int | None = None,
) -> dict[str, float]:
    """The features of the account's first ``n`` queries (all by default):

    - ``autoregressive``: share of queries that extend an earlier query by an item its answer held
      (the DFME signature, :func:`query_flags`);
    - ``fresh_starts``: share of queries that continue none of the account's earlier ones; a real
      user asks again as its history grows, an attacker holding stolen histories (Zhu et al.'s
      PTQ) asks each one once;
    - ``popularity_gtest``: how far the popularity bins of the items the account queried (each
      input's newest item) are from those of real users' traffic (``item_bins``, ``bin_mass``: the
      calibration's), as a G-test z (:func:`gtest_z`: the KL divergence scaled by the evidence);
      synthetic inputs start from, or are made of, uniformly drawn items;
    - ``length_gtest``: the same for the input lengths' log2 profile against ``length_mass``;
    - ``coverage``: distinct queried items over the ``catalogue`` size;
    - ``rate_qps``: queries per second over the account's active span (at least 1 s);
    - ``volume``: log10 of the number of queries.
    """
    n = len(q) if n is None else int(min(n, len(q)))
    if n < 1:
        raise DataFileError(f"account {q.account}: no query to score")
    continues, extends = flags
    items = q.last_items[:n]
    known = (items >= 0) & (items < len(item_bins))
    bins = np.where(known, item_bins[np.clip(items, 0, len(item_bins) - 1)], 0)  # an item real users never asked: rarest bin
    span = float(q.times[n - 1] - q.times[0])
    return {
        "autoregressive": float(extends[:n].mean()),
        "fresh_starts": float((~continues[:n]).mean()),
        "popularity_gtest": gtest_z(np.bincount(bins, minlength=len(bin_mass)), bin_mass),
        "length_gtest": gtest_z(np.bincount(length_bins(q.lengths[:n]), minlength=LENGTH_BINS), length_mass),
        "coverage": float(np.unique(items).size / max(int(catalogue), 1)),
        "rate_qps": float(n / max(span, 1.0)),
        "volume": float(np.log10(n)),
    }
