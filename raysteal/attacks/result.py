"""What every attack run returns, collaborative or sequential: :class:`AttackResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raysteal.models.base import Recommender


@dataclass
class AttackResult:
    """A finished attack: the trained clone (eval mode; a collaborative clone scores the known
    users ``0..n-1``, a sequential one — the distilled student — scores item sequences, each over
    the full catalogue), the queries the attack spent, and JSON-able figures for the results row
    (timings, epochs, final loss, ...). ``answered_users``: the known users (indices into
    ``Knowledge.target_user_ids``) whose lists the black box answered — under a budget shorter
    than the planned queries only a subset of them; ``None`` when the attack asked for no
    known user's list."""

    clone: Recommender
    queries: int
    info: dict[str, Any] = field(default_factory=dict)
    answered_users: np.ndarray | None = None
