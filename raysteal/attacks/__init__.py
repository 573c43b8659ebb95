"""Model-stealing attacks on collaborative recommenders (Zhu et al. 2023), each one short recipe
assembled from parts: the attacker's knowledge, a clone model (:mod:`~raysteal.attacks.clones`),
objectives (:mod:`~raysteal.attacks.objectives`) and a query strategy
(:mod:`~raysteal.attacks.queries`). Recipes live in the file of their source paper
(:mod:`~raysteal.attacks.zhu2023`, :mod:`~raysteal.attacks.baselines`), registered in the one
registry of both families (:mod:`~raysteal.attacks.registry`); importing this package registers them.

>>> out = run_attack({"attack": "ptaq", "k": 50}, knowledge, client, seed=0)
>>> out.clone.score(torch.arange(knowledge.num_users))   # [n, num_items]
"""

from raysteal.attacks import baselines, zhu2023  # noqa: F401  (registers their recipes)
from raysteal.attacks.base import AttackConfig, Knowledge, make_attack_config, run_attack
from raysteal.attacks.clones import FusedClone, PopularityClone, pair_scores
from raysteal.attacks.evaluate import top_k_lists
from raysteal.attacks.objectives import bpr_loss, data_loss, hinge_loss, stealing_loss
from raysteal.attacks.queries import QueriedLists, query_top_k
from raysteal.attacks.registry import Recipe, attack_names, get_recipe, recipe_names, register_recipe
from raysteal.attacks.result import AttackResult
from raysteal.attacks.zhu2023 import train_auxiliary_model

__all__ = [
    "AttackConfig",
    "AttackResult",
    "FusedClone",
    "Knowledge",
    "PopularityClone",
    "QueriedLists",
    "Recipe",
    "attack_names",
    "bpr_loss",
    "data_loss",
    "get_recipe",
    "hinge_loss",
    "make_attack_config",
    "pair_scores",
    "query_top_k",
    "recipe_names",
    "register_recipe",
    "run_attack",
    "stealing_loss",
    "top_k_lists",
    "train_auxiliary_model",
]
