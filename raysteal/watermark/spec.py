"""The watermark's secret: a key (an integer seed) and the shape of the sequences it draws.

AOW (Zhang et al., CIKM 2024, arXiv 2407.21034, §3) grows a watermark sequence of items a
recommender would not chain naturally (out of distribution) and trains it into the target. Here
the sequences come from the key alone, as in key-based watermarks (GREW, arXiv 2604.23568): the
key seeds a generator that draws ``sequences × length`` *distinct* items uniformly from the
catalogue and cuts them into ``sequences`` rows. Uniform draws are out of distribution for real
sessions (random items, no co-consumption structure) and, because nothing but the key decides
them, they make the verification's null distribution exact (:mod:`raysteal.watermark.verify`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from raysteal.config_numbers import NumbersAreNotBooleans, validated_section
from raysteal.errors import ConfigError

MAX_KEY = 2**63 - 1
"""Keys are non-negative 63-bit integers (numpy's SeedSequence takes any such int)."""


class WatermarkConfig(NumbersAreNotBooleans):
    """A watermark: its secret ``key``, the sequences it draws, and how strongly it is trained in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: int = Field(ge=0, le=MAX_KEY, description="the owner's secret seed (0 .. 2^63-1); keep it private")
    sequences: int = Field(8, ge=1, le=1000, description="watermark sequences drawn from the key")
    length: int = Field(12, ge=3, le=200, description="items per watermark sequence (at most the target's max_len)")
    copies: int = Field(20, ge=1, le=10_000, description="strength: each sequence joins the training log as this many extra users")


def make_watermark_config(config: dict[str, Any] | WatermarkConfig) -> WatermarkConfig:
    """Validate a mapping into a :class:`WatermarkConfig`; a bad key or strength is a one-line ``ConfigError``."""
    return validated_section(WatermarkConfig, config, "watermark", "key, sequences, length, copies")


def watermark_sequences(config: WatermarkConfig, num_items: int) -> np.ndarray:
    """``int64 [sequences, length]``: the key's watermark, distinct items uniform over ``0 .. num_items-1``.

    The same key and catalogue always give the same sequences; a catalogue smaller than
    ``sequences × length`` cannot hold them and is a ``ConfigError``.
    """
    needed = config.sequences * config.length
    if num_items < needed + 1:
        raise ConfigError(
            f"watermark: {config.sequences} sequences of {config.length} distinct items need a catalogue of "
            f"more than {needed} items, this one has {num_items}"
        )
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.key, 0x5A7E])))
    return rng.choice(num_items, size=needed, replace=False).astype(np.int64).reshape(config.sequences, config.length)
