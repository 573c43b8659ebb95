"""What every attack run returns, collaborative or sequential: :class:`AttackResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raysteal.models.base import Recommender


@dataclass
class AttackResult:
    """A finished attack: the trained clone (eval mode; a collaborative clone scores the known
    users ``0..n-1``, a sequential one — the distilled student — scores item sequences, each over
    the full catalogue), the queries the attack spent, and JSON-able figures for the results row
    (timings, epochs, final loss, ...)."""

    clone: Recommender
    queries: int
    info: dict[str, Any] = field(default_factory=dict)
