"""The black box: top-k query oracles with budgets, logs and defenses (in-process or Ray actor)."""

from raysteal.oracle.client import InProcessOracle, QueryClient
from raysteal.oracle.core import OracleCore, TargetInfo
from raysteal.oracle.defenses import (
    DefenseChain,
    PopularMixing,
    RankReversal,
    RankShuffle,
    RateLimit,
    Truncation,
    build_defenses,
    parse_defenses,
    register_defense,
)
from raysteal.oracle.engine import RankingEngine, pad_sequences
from raysteal.oracle.errors import AccessDenied, QueryBudgetExceeded, RateLimitExceeded, UnknownAttacker
from raysteal.oracle.ledger import UNLIMITED, BudgetLedger
from raysteal.oracle.target import TargetSpec, build_oracle_core


def in_process_oracle(spec: TargetSpec, state_dir=None, seed: int = 0, device: str | None = None) -> InProcessOracle:
    """Build an in-process black box from a ``TargetSpec``."""
    return InProcessOracle(build_oracle_core(spec, state_dir=state_dir, seed=seed, device=device))


__all__ = [
    "AccessDenied",
    "BudgetLedger",
    "DefenseChain",
    "InProcessOracle",
    "OracleCore",
    "PopularMixing",
    "QueryBudgetExceeded",
    "QueryClient",
    "RankReversal",
    "RankShuffle",
    "RankingEngine",
    "RateLimit",
    "RateLimitExceeded",
    "TargetInfo",
    "TargetSpec",
    "Truncation",
    "UNLIMITED",
    "UnknownAttacker",
    "build_defenses",
    "build_oracle_core",
    "in_process_oracle",
    "pad_sequences",
    "parse_defenses",
    "register_defense",
]
