"""Calibration clones that steal nothing: the floor every attack's agreement is read against.

==============  ===================================================================================
``popularity``  The most popular items of the attacker's own data, for every user (an agreement
                against an under-trained target that favours the same few items is no better).
==============  ===================================================================================
"""

from __future__ import annotations

from raysteal.attacks.base import AttackConfig, Knowledge
from raysteal.attacks.clones import PopularityClone, popularity_counts
from raysteal.attacks.fitting import AttackContext
from raysteal.attacks.registry import register_recipe
from raysteal.models.base import Recommender
from raysteal.oracle.protocol import BlackBoxClient


@register_recipe("popularity", AttackConfig, needs=(), summary="calibration: the most popular items of the attacker's own data")
def popularity(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return PopularityClone(popularity_counts(kn.target_data, kn.auxiliary), kn.num_users)
