"""Black-box ownership verification (AOW, arXiv 2407.21034, §3.3: "the model is tasked with
predicting the subsequent item given a truncated watermark sequence").

The verifier holds only a query client (ranked item ids, as every attack does). For each
watermark sequence ``s`` of length ``L`` and each cut ``j = min_prefix .. L-1`` it asks the top-k
list of the prefix ``s[:j]`` and counts a *hit* when ``s[j]`` is in it.

The test (one-sided, exact). H0: the suspect's answers do not depend on the key (it was not
derived from the watermarked target). The key draws the ``S·L`` watermark items as a uniform
random permutation prefix of the ``N`` items, row by row, so given everything drawn before it,
``s_i[j]`` is uniform over the ``N - (i·L + j)`` items not drawn yet, while under H0 the suspect's
list for ``s_i[:j]`` is fixed by that prefix alone and holds at most ``k`` of those items. Each hit
is then Bernoulli with probability at most ``p_ij = min(1, k / (N - i·L - j))`` given the past, so
the number of hits ``H`` is stochastically dominated by the Poisson-binomial law of the ``p_ij``
and ``p = P[PoiBin(p_ij) ≥ H]`` (computed exactly, :func:`poisson_binomial_sf`) is a valid
p-value for any suspect: no model of "typical" recommenders, no estimated null. Decoy keys
(``decoys > 0``) add an empirical check: the suspect's hit rate on watermarks it cannot know.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from raysteal.errors import ConfigError
from raysteal.watermark.spec import MAX_KEY, WatermarkConfig, watermark_sequences

if TYPE_CHECKING:
    from raysteal.oracle.protocol import BlackBoxClient


DEFAULT_K = 10
"""Length of the top-k lists the verifier asks, unless told otherwise."""
DEFAULT_ALPHA = 0.01
"""Significance level of the decision, unless told otherwise."""


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_watermark` (``null_rate``: mean of the ``p_ij`` bounds)."""

    hits: int
    trials: int
    k: int
    null_rate: float
    p_value: float
    alpha: float
    queries: int
    decoy_hit_rate: float | None = None

    @property
    def hit_rate(self) -> float:
        return self.hits / self.trials if self.trials else float("nan")

    @property
    def carries_watermark(self) -> bool:
        """Whether H0 (no descent from the watermarked target) is rejected at ``alpha``."""
        return self.p_value < self.alpha

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate, "carries_watermark": self.carries_watermark}


def probe_pairs(marks: np.ndarray, min_prefix: int = 1) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(prefixes, next items, draw positions)`` of every cut ``j = min_prefix .. L-1`` of every
    row of ``marks [S, L]``; a draw position is ``i·L + j``, how many items the key drew before."""
    rows, length = marks.shape
    if not 1 <= min_prefix < length:
        raise ConfigError(f"min_prefix must lie in 1..{length - 1} (watermark length {length}), got {min_prefix}")
    prefixes, targets, drawn = [], [], []
    for i in range(rows):
        for j in range(min_prefix, length):
            prefixes.append(marks[i, :j])
            targets.append(int(marks[i, j]))
            drawn.append(i * length + j)
    return prefixes, np.asarray(targets, dtype=np.int64), np.asarray(drawn, dtype=np.int64)


def poisson_binomial_sf(probs: np.ndarray, hits: int) -> float:
    """``P[X ≥ hits]`` for ``X`` a sum of independent Bernoulli(``probs``): exact, by convolution."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if hits <= 0:
        return 1.0
    if hits > probs.size:
        return 0.0
    pmf = np.zeros(probs.size + 1)
    pmf[0] = 1.0
    for n, p in enumerate(probs, start=1):
        pmf[1 : n + 1] = pmf[1 : n + 1] * (1.0 - p) + pmf[:n] * p
        pmf[0] *= 1.0 - p
    return float(min(1.0, pmf[hits:].sum()))


def _hits(client: BlackBoxClient, prefixes: list[np.ndarray], targets: np.ndarray, k: int, batch: int) -> np.ndarray:
    """bool ``[len(targets)]``: whether each next item is in the black box's top-k of its prefix."""
    found = np.zeros(len(targets), dtype=bool)
    for start in range(0, len(targets), batch):
        lists = np.asarray(client.query(prefixes[start : start + batch], k))
        found[start : start + batch] = (lists == targets[start : start + batch, None]).any(axis=1)
    return found


def decoy_key(key: int, index: int) -> int:
    """The ``index``-th decoy key of ``key`` (a key the owner never trained in)."""
    state = np.random.SeedSequence([key, 0xDEC0, index]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1)) % (MAX_KEY + 1)


def verify_watermark(
    client: BlackBoxClient,
    config: WatermarkConfig,
    *,
    k: int = DEFAULT_K,
    min_prefix: int = 1,
    alpha: float = DEFAULT_ALPHA,
    decoys: int = 0,
    batch: int = 256,
) -> Verification:
    """Query the suspect (``client``: a :class:`raysteal.oracle.QueryClient` of a sequential black box)
    with the watermark's prefixes and test H0 (see module docstring); ``decoys`` more watermarks
    of other keys are queried for the empirical null rate."""
    if not getattr(client, "sequential", True):
        raise ConfigError("the suspect is a collaborative recommender (queried by user id); the watermark is a sequence")
    num_items = int(client.num_items)
    if k < 1 or k >= num_items:
        raise ConfigError(f"k must lie in 1..{num_items - 1} (the suspect's catalogue), got {k}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    if decoys < 0:
        raise ConfigError(f"decoys must be >= 0, got {decoys}")
    marks = watermark_sequences(config, num_items)
    prefixes, targets, drawn = probe_pairs(marks, min_prefix)
    spent = getattr(client, "spent", None)
    found = _hits(client, prefixes, targets, k, batch)
    bounds = np.minimum(1.0, k / (num_items - drawn))
    decoy_rate = None
    if decoys:
        rates = []
        for d in range(decoys):
            other = watermark_sequences(config.model_copy(update={"key": decoy_key(config.key, d)}), num_items)
            p, t, _ = probe_pairs(other, min_prefix)
            rates.append(_hits(client, p, t, k, batch).mean())
        decoy_rate = float(np.mean(rates))
    queries = (client.spent - spent) if spent is not None else len(targets) * (1 + decoys)
    return Verification(
        hits=int(found.sum()),
        trials=int(found.size),
        k=int(k),
        null_rate=float(bounds.mean()),
        p_value=poisson_binomial_sf(bounds, int(found.sum())),
        alpha=float(alpha),
        queries=int(queries),
        decoy_hit_rate=decoy_rate,
    )
