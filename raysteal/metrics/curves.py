"""Learning curves: a trial's per-epoch metric smoothed before its peak is read.

The maximum of many noisy per-epoch probes flatters a trial (over 120 epochs of a 1,024-user
probe, by about one probe's standard deviation); the peak of a centred moving average much less.
The search report (:mod:`raysteal.report.search`) and the tune best rule
(:class:`raysteal.distributed.tune.PeakTracker` with ``tune.peak_window``) read the same curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def smoothed(values: pd.Series | Sequence[float] | np.ndarray, window: int) -> pd.Series:
    """The centred moving average of a per-epoch curve over ``window`` epochs (fewer at its ends;
    ``NaN`` epochs are skipped, and stay ``NaN`` only where no epoch of the window has a value).
    ``window`` 1 returns the curve itself."""
    if int(window) < 1:
        raise ValueError(f"smoothing window must be at least 1 epoch, got {window}")
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=float))
    return series.astype(float).rolling(int(window), center=True, min_periods=1).mean()


def peak_index(curve: Sequence[float] | np.ndarray, mode: str = "max") -> int | None:
    """Position of the best finite value of ``curve`` (``mode`` max or min; the earliest of equal
    values), or ``None`` when no value is finite."""
    values = np.asarray(curve, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return None
    signed = np.where(finite, values if mode == "max" else -values, -np.inf)
    return int(np.argmax(signed))  # argmax returns the first of equal maxima
