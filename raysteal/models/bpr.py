"""BPR-MF (Rendle et al. 2009): matrix factorisation trained with Bayesian Personalized Ranking.

Score ``x̂_ui = <w_u, h_i>`` (Eq. 4 with MF); the BPR-Opt criterion (Eq. 3) maximises
``ln σ(x̂_ui − x̂_uj)`` over triples (u, i ∈ I_u+, j ∉ I_u+), minus an L2 penalty
``λ (‖w_u‖² + ‖h_i‖² + ‖h_j‖²)`` on the parameters the triple touches (the per-sample
regulariser of LearnBPR, §4.3 / §5.2).

``negative_candidates`` > 1 is dynamic negative sampling (DNS; Zhang et al., SIGIR 2013): each
negative ``j`` is the highest-scored of that many uniform draws, so the updates go to the items
that crowd the top of a user's list rather than to the catalogue's many easy ones.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from raysteal.data.interactions import Interactions
from raysteal.models.base import ModelConfig, Recommender, register_model
from raysteal.models.pair_samplers import PairSampler, keep_hardest, pair_scores


class BPRConfig(ModelConfig, frozen=True):
    """Hyperparameters of BPR-MF (defaults: embedding size 64 as in Zhu et al. App. A.1)."""

    model: Literal["bpr"] = "bpr"
    reg: float = Field(1e-5, ge=0.0, description="L2 weight λ on the triple's embeddings")
    init_std: float = Field(0.01, gt=0.0, description="std of the normal initialisation")
    num_negatives: int = Field(1, ge=1, description="negatives j per positive (i); loss averages them")
    reject_seen: bool = Field(True, description="redraw negatives the user already interacted with")
    negative_candidates: int = Field(1, ge=1, le=1024, description="uniform draws per negative; the highest-scored one trains (DNS)")


@register_model
class BPR(Recommender[BPRConfig]):
    """BPR-MF: user and item embeddings, dot-product score."""

    name = "bpr"
    sequential = False
    Config = BPRConfig

    def __init__(self, config: BPRConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        d = config.embedding_dim
        self.user_emb = nn.Embedding(num_users, d)
        self.item_emb = nn.Embedding(num_items, d)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.user_emb(inputs) @ self.item_emb.weight.T

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self.user_emb(batch["users"])  # [B, d]
        i = self.item_emb(batch["pos"])  # [B, d]
        j = self.item_emb(batch["neg"])  # [B, n·candidates, d]
        x_ui = (u * i).sum(-1, keepdim=True)
        x_uj = pair_scores(u, j)
        x_uj, j = keep_hardest(x_uj, j, self.config.negative_candidates)  # DNS; as drawn at 1
        ranking = -F.logsigmoid(x_ui - x_uj).mean()
        reg = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum() / j.shape[1]) / u.shape[0]
        return ranking + self.config.reg * reg

    def make_sampler(self, train: Interactions, batch_size: int) -> PairSampler:
        draws = self.config.num_negatives * self.config.negative_candidates
        return PairSampler(train, batch_size, draws, self.config.reject_seen)
