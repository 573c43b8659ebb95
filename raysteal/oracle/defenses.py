"""Defenses: composable wrappers a target server applies to every answer (or admission).

* ``PopularMixing`` — Zhu et al. §6 (Figs. 7–8): replace ``n`` of the ``K`` listed items, at
  random positions, with distinct random picks from the ``pool`` (100) most popular items that
  are not already in the list.
* ``RankShuffle`` / ``RankReversal`` — random and reversed top-k perturbation: the returned set
  is unchanged, the order (the ranking signal an attacker distils) is destroyed or inverted.
* ``Truncation`` — return at most ``max_items`` items, fewer than asked.
* ``RateLimit`` — per-attacker token bucket (queries/second with a burst); refuses, never charges.

List defenses act on an ``int64 [B, K]`` array of ranked ids and a numpy ``Generator``; a row
shorter than ``K`` ends in ``-1`` (padding). ``check(k)`` refuses, before any budget is charged, a
list width a defense could never honour.

Each defense stands beside its spec, the ``defenses:`` entry users write: a pydantic model whose
``type`` literal names it, registered with ``@register_defense`` and building the defense it
describes. Adding a defense is that pair, here; parsing, the chain and the width check follow.
"""

from __future__ import annotations

import functools
import threading
import time
import typing
from abc import ABC, abstractmethod
from typing import Annotated, Literal, TypeVar, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError, describe_validation
from raysteal.oracle.errors import RateLimitExceeded


class ListDefense(ABC):
    """A transformation of ranked answers."""

    @abstractmethod
    def apply(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The defended lists (may be narrower than ``lists``)."""

    @abstractmethod
    def describe(self) -> str:
        """Short label for logs and result rows."""

    def check(self, k: int) -> int:
        """Raise ``ConfigError`` if lists of width ``k`` cannot be defended; else the output width."""
        return k


def _real_lengths(lists: np.ndarray) -> np.ndarray:
    """Per row, how many entries come before the first ``-1`` (padding of a short answer)."""
    pad = lists < 0
    return np.where(pad.any(axis=1), pad.argmax(axis=1), lists.shape[1])


class DefenseSpecBase(NumbersAreNotBooleans):
    """A ``defenses:`` entry: ``type`` names the defense, the other fields are its arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def defense(self, item_popularity: np.ndarray | None) -> ListDefense | RateLimit:
        """The defense this entry describes (``item_popularity``: the target's, where one needs it)."""
        raise NotImplementedError

    def answer_width(self, k: int, narrowed: bool) -> int:
        """The width of this defense's answers to lists of ``k`` items, decided from the spec alone,
        or a ``ConfigError``; ``narrowed``: a defense before it in the chain cut the lists."""
        return k


_Spec = TypeVar("_Spec", bound=type[DefenseSpecBase])
_REGISTRY: dict[str, type[DefenseSpecBase]] = {}
"""Registered specs by their ``type``, in registration order (the order pydantic's errors list them)."""


def register_defense(spec: _Spec) -> _Spec:
    """Class decorator: make ``spec`` a ``defenses:`` entry under the name its ``type`` literal gives."""
    (name,) = typing.get_args(spec.model_fields["type"].annotation)
    if name in _REGISTRY:
        raise ValueError(f"defense {name!r} registered twice")
    _REGISTRY[name] = spec
    return spec


DEFAULT_POOL = 100  # Zhu et al. §6 mix from the 100 most popular items


def mixing_width(n: int, k: int) -> int:
    """Popular mixing puts ``n`` items into lists of ``k``: ``k``, or a ``ConfigError`` when ``n > k``."""
    if n > k:
        raise ConfigError(f"popular mixing: n={n} is more than the {k} items a list holds (ask for k >= {n})")
    return k


class PopularMixing(ListDefense):
    """Zhu et al. §6: mix ``n`` random picks from the ``pool`` most popular items into each list
    (``pool`` None: the 100 most popular, or the whole catalogue if it is smaller)."""

    def __init__(self, n: int, item_popularity: np.ndarray, pool: int | None = None):
        pop = np.asarray(item_popularity)
        pool = min(DEFAULT_POOL, len(pop)) if pool is None else pool  # the default shrinks to a small catalogue
        if n < 0:
            raise ConfigError(f"popular mixing: n must be >= 0, got {n}")
        if pool < 1:
            raise ConfigError(f"popular mixing: pool must be >= 1, got {pool}")
        if pool > len(pop):
            raise ConfigError(f"popular mixing: pool={pool} is larger than the catalogue ({len(pop)} items)")
        if n > pool:
            raise ConfigError(f"popular mixing: n={n} is more than the pool of {pool} popular items it mixes from")
        self.n, self.pool_size = int(n), int(pool)
        # most popular first; ties broken by item id for determinism
        self.pool = np.lexsort((np.arange(len(pop)), -pop))[: self.pool_size].astype(np.int64)

    def check(self, k: int) -> int:
        return mixing_width(self.n, k)

    def apply(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows, k = lists.shape
        n = self.n
        self.check(k)
        if n == 0:
            return lists
        out = lists.copy()
        # positions to overwrite: n distinct random columns among each row's listed items (uniform
        # keys), then -- only in a row shorter than n -- the first padding columns, so padding
        # still trails
        cols = np.arange(k)[None, :]
        keys = np.where(cols < _real_lengths(lists)[:, None], rng.random((rows, k)), 1.0 + cols)
        positions = np.argsort(keys, axis=1)[:, :n]
        # replacement items: n distinct pool items per row not already in the list (Gumbel-top-n);
        # a row already holding all but m < n of the pool gets those m
        in_list = (self.pool[None, :, None] == lists[:, None, :]).any(axis=2)
        keys = rng.random((rows, self.pool_size))
        keys[in_list] = -1.0
        picks = self.pool[np.argsort(-keys, axis=1)[:, :n]]
        usable = np.arange(n)[None, :] < (~in_list).sum(axis=1)[:, None]
        picks = np.where(usable, picks, np.take_along_axis(out, positions, axis=1))
        np.put_along_axis(out, positions, picks, axis=1)
        return out

    def describe(self) -> str:
        return f"popmix(n={self.n},pool={self.pool_size})"


@register_defense
class PopularMixingSpec(DefenseSpecBase):
    type: Literal["popular_mixing"]
    n: int = Field(ge=0)
    pool: int | None = Field(
        None, ge=1, description=f"mix from the pool most popular items (None: {DEFAULT_POOL}, or the catalogue if smaller)"
    )

    @model_validator(mode="after")
    def _n_fits_the_pool(self) -> PopularMixingSpec:
        pool = DEFAULT_POOL if self.pool is None else self.pool  # the default pool only shrinks (small catalogue)
        if self.n > pool:
            raise ValueError(f"n={self.n} is more than the pool of {pool} popular items it mixes from")
        return self

    def defense(self, item_popularity: np.ndarray | None) -> PopularMixing:
        if item_popularity is None:
            raise ConfigError("popular mixing needs the target's item popularity")
        return PopularMixing(self.n, item_popularity, self.pool)

    def answer_width(self, k: int, narrowed: bool) -> int:
        if narrowed and self.n > k:
            raise ConfigError(
                f"popular mixing: n={self.n} is more than the {k} items a list holds after the truncation "
                "before it (truncate first and mix fewer, or mix before truncating)"
            )
        return mixing_width(self.n, k)


class _OrderDefense(ListDefense):
    """Reorders the first ``depth`` items of each list (all if None, or if the list is shorter than
    ``depth``); the returned set is unchanged and trailing ``-1`` padding stays put."""

    label = ""

    def __init__(self, depth: int | None = None):
        if depth is not None and depth < 1:
            raise ConfigError(f"{self.label}: depth must be >= 1, got {depth}")
        self.depth = depth

    @abstractmethod
    def _sources(self, span: np.ndarray, cols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per row, the column each of the first ``d`` places takes its item from; ``span`` [B, 1]
        is how many of them are real items, ``cols`` [1, d] the column numbers."""

    def apply(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = lists.shape[1] if self.depth is None else min(self.depth, lists.shape[1])
        out = lists.copy()
        span = np.minimum(_real_lengths(lists), d)[:, None]
        cols = np.arange(d)[None, :]
        out[:, :d] = np.take_along_axis(lists[:, :d], self._sources(span, cols, rng), axis=1)
        return out

    def describe(self) -> str:
        return f"{self.label}(depth={self.depth})"


class RankShuffle(_OrderDefense):
    """Random top-k perturbation: shuffle the order of the first ``depth`` items."""

    label = "shuffle"

    def _sources(self, span: np.ndarray, cols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        keys = np.where(cols < span, rng.random((span.shape[0], cols.shape[1])), 2.0 + cols)
        return np.argsort(keys, axis=1)


@register_defense
class ShuffleSpec(DefenseSpecBase):
    type: Literal["shuffle"]
    depth: int | None = Field(None, ge=1)

    def defense(self, item_popularity: np.ndarray | None) -> RankShuffle:
        return RankShuffle(self.depth)


class RankReversal(_OrderDefense):
    """Reversed top-k perturbation: the first ``depth`` items in reverse order."""

    label = "reverse"

    def _sources(self, span: np.ndarray, cols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.where(cols < span, span - 1 - cols, cols)


@register_defense
class ReverseSpec(DefenseSpecBase):
    type: Literal["reverse"]
    depth: int | None = Field(None, ge=1)

    def defense(self, item_popularity: np.ndarray | None) -> RankReversal:
        return RankReversal(self.depth)


class Truncation(ListDefense):
    """Return at most ``max_items`` items per list (fewer than the attacker asked for)."""

    def __init__(self, max_items: int):
        if max_items < 1:
            raise ConfigError(f"truncate: max_items must be >= 1, got {max_items}")
        self.max_items = int(max_items)

    def check(self, k: int) -> int:
        return min(k, self.max_items)

    def apply(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return lists[:, : self.max_items]

    def describe(self) -> str:
        return f"truncate({self.max_items})"


@register_defense
class TruncateSpec(DefenseSpecBase):
    type: Literal["truncate"]
    max_items: int = Field(ge=1)

    def defense(self, item_popularity: np.ndarray | None) -> Truncation:
        return Truncation(self.max_items)

    def answer_width(self, k: int, narrowed: bool) -> int:
        return min(k, self.max_items)


class RateLimit:
    """Per-attacker token bucket: ``rate`` queries/second, bursts up to ``burst`` queries."""

    def __init__(self, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise ConfigError(f"rate limit needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate, self.burst = float(rate), int(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def admit(self, attacker: str, count: int, now: float | None = None) -> None:
        """Take ``count`` tokens or raise ``RateLimitExceeded`` taking none.

        A request larger than the burst could never be admitted, however long its sender waits:
        that is a ``ConfigError`` (split the request), not a "retry after"."""
        if count > self.burst:
            raise ConfigError(
                f"a request of {count} queries can never pass a rate limit with burst {self.burst}: "
                f"send at most {self.burst} queries per request"
            )
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(attacker, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if count > tokens:
                self._buckets[attacker] = (tokens, now)
                raise RateLimitExceeded(attacker, count, (count - tokens) / self.rate)
            self._buckets[attacker] = (tokens - count, now)

    def describe(self) -> str:
        return f"ratelimit({self.rate:g}/s,burst={self.burst})"


@register_defense
class RateLimitSpec(DefenseSpecBase):
    type: Literal["rate_limit"]
    rate: float = Field(gt=0)
    burst: int = Field(ge=1)

    def defense(self, item_popularity: np.ndarray | None) -> RateLimit:
        return RateLimit(self.rate, self.burst)


class DefenseChain:
    """List defenses applied in order, plus an optional rate limit at admission."""

    def __init__(self, list_defenses: list[ListDefense] | None = None, rate_limit: RateLimit | None = None):
        self.list_defenses = list(list_defenses or [])
        self.rate_limit = rate_limit

    def check(self, k: int) -> None:
        """Raise ``ConfigError`` if some defense cannot honour answers of ``k`` items (charges nothing)."""
        for defense in self.list_defenses:
            k = defense.check(k)

    def admit(self, attacker: str, count: int) -> None:
        """Take ``count`` queries from the rate limit, if any (raises ``RateLimitExceeded``)."""
        if self.rate_limit is not None:
            self.rate_limit.admit(attacker, count)

    def apply(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for defense in self.list_defenses:
            lists = defense.apply(lists, rng)
        return lists

    def served(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """:meth:`apply`, padded back to the width of ``lists`` with ``-1`` (which matches no item)
        where a defense shortens them: what a scorer of the served lists compares, column for column."""
        out = self.apply(lists, rng)
        if out.shape[1] < lists.shape[1]:
            out = np.pad(out, ((0, 0), (0, lists.shape[1] - out.shape[1])), constant_values=-1)
        return out

    def describe(self) -> str:
        parts = [d.describe() for d in self.list_defenses]
        if self.rate_limit is not None:
            parts.append(self.rate_limit.describe())
        return "+".join(parts) if parts else "none"


def defense_spec_type() -> object:
    """The type of one ``defenses:`` entry: every registered spec, told apart by its ``type``."""
    # Union[(A, B, ...)] is the union A | B | ...; ruff's UP007 fix would drop the Union and break it
    return Annotated[Union[tuple(_REGISTRY.values())], Field(discriminator="type")]  # noqa: UP007


@functools.cache
def _adapter(specs: tuple[type[DefenseSpecBase], ...]) -> TypeAdapter:
    return TypeAdapter(list[defense_spec_type()])  # type: ignore[misc]  # a type built from the registry


def parse_defenses(specs: list[dict] | None) -> list:
    """Validate defense specs (``[{"type": "popular_mixing", "n": 10}, ...]``) with clear errors."""
    try:
        return _adapter(tuple(_REGISTRY.values())).validate_python(specs or [])
    except Exception as err:
        raise ConfigError(f"invalid defense spec: {describe_validation(err)}") from None


def check_answer_width(specs: list[dict] | None, k: int) -> int:
    """The width of the answers ``specs``' list defenses return for requests of ``k`` items, or the
    ``ConfigError`` :meth:`DefenseChain.check` would raise at the first request -- decided from the
    specs alone (no target needed), so an experiment file is refused before any work."""
    narrowed = False
    for spec in parse_defenses(specs):
        width = spec.answer_width(k, narrowed)
        narrowed, k = narrowed or width < k, width
    return k


def build_defenses(specs: list[dict] | list | None, item_popularity: np.ndarray | None = None) -> DefenseChain:
    """A ``DefenseChain`` from specs; popular mixing needs the target's item popularity."""
    chain = DefenseChain()
    for spec in parse_defenses([s.model_dump() if isinstance(s, BaseModel) else s for s in (specs or [])]):
        defense = spec.defense(item_popularity)
        if isinstance(defense, RateLimit):
            if chain.rate_limit is not None:
                raise ConfigError("only one rate_limit defense per target")
            chain.rate_limit = defense
        else:
            chain.list_defenses.append(defense)
    return chain


DefenseSpec = defense_spec_type()
"""One ``defenses:`` entry, as shipped (the reference pages render each of its specs)."""
