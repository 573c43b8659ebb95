"""Does a run's clone carry its target's ownership watermark? (AOW, arXiv 2407.21034, §3.3)

When an experiment's target is trained with a watermark, every sequential run asks its clone the
watermark's prefixes through the same black-box top-k API ``raysteal verify`` uses (an in-process
oracle over the clone: ranked item ids only) and applies that command's exact one-sided test
(:func:`raysteal.watermark.verify_watermark`). The row then says, for each attack and budget,
whether the owner could prove the theft, beside how much was stolen.
"""

from __future__ import annotations

from typing import Any

from raysteal.oracle import TargetSpec, in_process_oracle
from raysteal.watermark import make_watermark_config, verify_watermark

VERIFY_DECOYS = 2
"""Decoy keys asked besides the owner's: the clone's hit rate on watermarks it cannot know."""


def clone_watermark_columns(clone: Any, watermark: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The result-row columns of verifying ``clone`` (a sequential recommender) against
    ``watermark`` (the target entry's mapping, key included): hits, trials, hit rates, the
    p-value and the decision, at ``raysteal verify``'s defaults (top-10 lists, alpha 0.01)."""
    oracle = in_process_oracle(TargetSpec(model=clone, name="clone"), device=device)
    try:
        client = oracle.register_attacker("owner")
        result = verify_watermark(client, make_watermark_config(watermark), decoys=VERIFY_DECOYS)
    finally:
        oracle.close()
    return {
        "watermark_hits": result.hits,
        "watermark_trials": result.trials,
        "watermark_hit_rate": result.hit_rate,
        "watermark_decoy_hit_rate": result.decoy_hit_rate,
        "watermark_p_value": result.p_value,
        "carries_watermark": result.carries_watermark,
    }
