"""The query-log detector: calibrated on real users' traffic, it scores every account of a log.

:func:`fit_detector` reads only the calibration log (benign accounts' rows): the popularity bins
of the items real users ask about, their input-length profile, and each feature's median and
spread over the benign accounts. :meth:`Detector.score` reads only the log it is given and returns
one row per account: its features, each feature's robust z-score against the benign accounts
(``(x - median) / (1.4826 MAD)``, one-sided: every feature grows with suspicion) and the score,
the largest z of the features the detector uses. :meth:`Detector.threshold` is the score above
which at most a chosen share of the calibration accounts lie (the false-positive rate one accepts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from raysteal.detection.features import (
    CONTENT_FEATURES,
    FEATURES,
    LENGTH_BINS,
    AccountQueries,
    account_queries,
    features_at,
    length_bins,
    query_flags,
)
from raysteal.errors import ConfigError

POPULARITY_BINS = 10
"""Items are binned by the share of real users' queries they draw: equal-mass bins, rarest first."""

SCALE_FLOOR: dict[str, float] = {
    "autoregressive": 0.02,
    "fresh_starts": 0.02,
    "popularity_gtest": 0.5,
    "length_gtest": 0.5,
    "coverage": 1e-3,
    "rate_qps": 0.01,
    "volume": 0.05,
}
"""Smallest spread of a feature's z-score (benign accounts that all agree would make any deviation infinite)."""


@dataclass(frozen=True)
class Detector:
    """A fitted detector: the calibration's reference distributions and per-feature medians/spreads."""

    item_bins: np.ndarray  # int64 [catalogue]: each item's popularity bin
    bin_mass: np.ndarray  # float [POPULARITY_BINS]: real users' queries per bin
    length_mass: np.ndarray  # float [LENGTH_BINS]
    catalogue: int
    median: dict[str, float]
    scale: dict[str, float]
    features: tuple[str, ...] = FEATURES
    calibration_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    calibration_content_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def account_features(self, q: AccountQueries, n: int | None = None, flags=None) -> dict[str, float]:
        """The features of ``q``'s first ``n`` queries against this detector's reference."""
        return features_at(q, flags or query_flags(q), self.item_bins, self.bin_mass, self.length_mass, self.catalogue, n)

    def zscores(self, feats: dict[str, float]) -> dict[str, float]:
        return {f: (feats[f] - self.median[f]) / self.scale[f] for f in FEATURES}

    def score_features(self, feats: dict[str, float], features: tuple[str, ...] | None = None) -> float:
        """The largest z-score among ``features`` (the detector's own by default)."""
        z = self.zscores(feats)
        return float(max(z[f] for f in (features or self.features)))

    def score(self, log: pa.Table | pd.DataFrame) -> pd.DataFrame:
        """One row per account of ``log``: ``account``, ``queries``, each feature, ``z_<feature>``,
        ``score`` (this detector's features) and ``content_score`` (:data:`CONTENT_FEATURES`)."""
        return self.score_queries(account_queries(log))

    def score_queries(self, accounts: dict[str, AccountQueries]) -> pd.DataFrame:
        """:meth:`score` of accounts already read from a log (:func:`account_queries`)."""
        rows = []
        for account, q in accounts.items():
            feats = self.account_features(q)
            z = self.zscores(feats)
            rows.append(
                {
                    "account": account,
                    "queries": len(q),
                    **feats,
                    **{f"z_{f}": v for f, v in z.items()},
                    "score": self.score_features(feats),
                    "content_score": self.score_features(feats, CONTENT_FEATURES),
                }
            )
        return pd.DataFrame(rows)

    def threshold(self, fpr: float, content: bool = False) -> float:
        """The score (``content``: the content score) above which an account is flagged: at most a
        share ``fpr`` of the calibration accounts score above it (0 < fpr < 1; ties stay unflagged,
        so a discrete feature cannot push the false-positive rate past ``fpr``)."""
        fpr = checked_fpr(fpr)
        scores = self.calibration_content_scores if content else self.calibration_scores
        if not len(scores):
            raise ConfigError("this detector holds no calibration scores to set a threshold from")
        return float(np.quantile(scores, 1.0 - fpr, method="higher"))

    def flagged_at(self, q: AccountQueries, threshold: float, checkpoints: int = 2, content: bool = False) -> int | None:
        """The number of queries after which ``q`` is first flagged (scored on its first
        ``n = 2^j * checkpoints`` queries, then all of them; ``content``: by its content score),
        or ``None`` when it never is."""
        flags = query_flags(q)
        features = CONTENT_FEATURES if content else None
        n = max(int(checkpoints), 1)
        while True:
            n = min(n, len(q))
            if self.score_features(self.account_features(q, n, flags), features) > threshold:
                return n
            if n == len(q):
                return None
            n *= 2


def checked_fpr(fpr: object) -> float:
    """``fpr`` as a float in (0, 1), else ``ConfigError``."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < float(fpr) < 1 or math.isnan(float(fpr)):
        raise ConfigError(f"false-positive rate must be a number in (0, 1), got {fpr!r}")
    return float(fpr)


def _popularity_bins(items: np.ndarray, catalogue: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(items[(items >= 0) & (items < catalogue)], minlength=catalogue).astype(np.float64)
    order = np.argsort(counts, kind="stable")  # rarest first
    before = (np.cumsum(counts[order]) - counts[order]) / max(counts.sum(), 1.0)
    bins = np.empty(catalogue, dtype=np.int64)
    bins[order] = np.minimum((before * POPULARITY_BINS).astype(np.int64), POPULARITY_BINS - 1)
    mass = np.bincount(bins, weights=counts, minlength=POPULARITY_BINS)
    return bins, mass / max(mass.sum(), 1.0)


def fit_detector(benign_log: pa.Table | pd.DataFrame, catalogue: int, features: tuple[str, ...] = FEATURES) -> Detector:
    """Calibrate on ``benign_log`` (real users' traffic only; at least 2 accounts). ``catalogue``:
    the number of distinct inputs the server accepts (items of a sequential target, users of a
    collaborative one), a fact of the server, not of its model."""
    if isinstance(catalogue, bool) or not isinstance(catalogue, (int, np.integer)) or catalogue < 1:
        raise ConfigError(f"catalogue must be an integer >= 1, got {catalogue!r}")
    unknown = [f for f in features if f not in FEATURES]
    if not features or unknown:
        raise ConfigError(f"detector features must be a non-empty subset of {', '.join(FEATURES)}, got {list(features)}")
    accounts = account_queries(benign_log)
    if len(accounts) < 2:
        raise ConfigError(f"calibration needs the traffic of at least 2 benign accounts, got {len(accounts)}")
    items = np.concatenate([q.last_items for q in accounts.values()])
    lengths = np.concatenate([q.lengths for q in accounts.values()])
    bins, mass = _popularity_bins(items, int(catalogue))
    length_mass = np.bincount(length_bins(lengths), minlength=LENGTH_BINS).astype(np.float64)
    length_mass /= length_mass.sum()
    base = Detector(bins, mass, length_mass, int(catalogue), {f: 0.0 for f in FEATURES}, {f: 1.0 for f in FEATURES}, tuple(features))
    records = [base.account_features(q) for q in accounts.values()]
    table = pd.DataFrame(records)
    median = {f: float(table[f].median()) for f in FEATURES}
    scale = {f: max(1.4826 * float((table[f] - median[f]).abs().median()), SCALE_FLOOR[f]) for f in FEATURES}
    fitted = Detector(bins, mass, length_mass, int(catalogue), median, scale, tuple(features))
    scores = np.array([fitted.score_features(row) for row in records])
    content = np.array([fitted.score_features(row, CONTENT_FEATURES) for row in records])
    return Detector(bins, mass, length_mass, int(catalogue), median, scale, tuple(features), scores, content)
