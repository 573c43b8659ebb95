"""Model-stealing attacks on recommenders (Zhu et al. 2023), each one short recipe assembled from
parts: the attacker's knowledge, a clone model (:mod:`~raysteal.attacks.clones`), objectives
(:mod:`~raysteal.attacks.objectives`) and a query strategy (:mod:`~raysteal.attacks.queries`).

>>> out = run_attack({"attack": "ptaq", "k": 50}, knowledge, client, seed=0)
>>> out.clone.score(torch.arange(knowledge.num_users))   # [n, num_items]
"""

from raysteal.attacks.base import (
    AttackConfig,
    AttackOutput,
    Knowledge,
    attack_names,
    make_attack_config,
    run_attack,
)
from raysteal.attacks.clones import FusedClone, PopularityClone, pair_scores
from raysteal.attacks.evaluate import top_k_lists
from raysteal.attacks.objectives import bpr_loss, data_loss, hinge_loss, stealing_loss
from raysteal.attacks.queries import QueriedLists, query_top_k
from raysteal.attacks.recipes import train_auxiliary_model
from raysteal.attacks.registry import get_recipe, register_attack

__all__ = [
    "AttackConfig",
    "AttackOutput",
    "FusedClone",
    "Knowledge",
    "PopularityClone",
    "QueriedLists",
    "attack_names",
    "bpr_loss",
    "data_loss",
    "get_recipe",
    "hinge_loss",
    "make_attack_config",
    "pair_scores",
    "query_top_k",
    "register_attack",
    "run_attack",
    "stealing_loss",
    "top_k_lists",
    "train_auxiliary_model",
]
