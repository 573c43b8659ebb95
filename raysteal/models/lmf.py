"""Logistic matrix factorisation (Johnson 2014) for implicit feedback.

``p(l_ui | x_u, y_i, β) = σ(x_u·y_i + β_u + β_i)`` (Eq. 1). The log-likelihood (Eq. 3) is
``Σ_ui α r_ui (x_u·y_i + β_u + β_i) − (1 + α r_ui) log(1 + exp(x_u·y_i + β_u + β_i))``,
i.e. ``Σ_ui α r_ui log σ(s_ui) + log(1 − σ(s_ui))``: each observed pair is a positive with
confidence ``α r_ui`` (``r_ui`` = interaction count), and every cell is a negative of
weight 1. We estimate the all-cells negative term with ``num_negatives`` uniformly sampled
items per positive (scaled by ``neg_weight``) and add Gaussian priors as L2 (``λ/2 ‖·‖²``,
Eq. 3) on the embeddings a batch touches. ``negative_candidates`` > 1 makes each sampled negative
the highest-scored of that many draws (dynamic negative sampling, Zhang et al. 2013).
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


class LMFConfig(ModelConfig, frozen=True):
    """Hyperparameters of LMF (embedding size 64 as in Zhu et al. App. A.1)."""

    model: Literal["lmf"] = "lmf"
    alpha: float = Field(1.0, gt=0.0, description="confidence scale α in c_ui = α·r_ui")
    neg_weight: float = Field(1.0, gt=0.0, description="weight of each sampled negative's log(1-σ) term")
    num_negatives: int = Field(4, ge=1, description="uniform negatives per positive")
    reg: float = Field(1e-5, ge=0.0, description="L2 weight λ on the batch's embeddings")
    init_std: float = Field(0.01, gt=0.0, description="std of the normal initialisation")
    reject_seen: bool = Field(True, description="redraw negatives the user already interacted with")
    negative_candidates: int = Field(1, ge=1, le=1024, description="uniform draws per negative; the highest-scored one trains (DNS)")


@register_model
class LMF(Recommender[LMFConfig]):
    """Logistic MF: dot product plus user and item biases, logistic likelihood."""

    name = "lmf"
    sequential = False
    Config = LMFConfig

    def __init__(self, config: LMFConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        d = config.embedding_dim
        self.user_emb = nn.Embedding(num_users, d)
        self.item_emb = nn.Embedding(num_items, d)
        self.user_bias = nn.Embedding(num_users, 1)
        self.item_bias = nn.Embedding(num_items, 1)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        dots = self.user_emb(inputs) @ self.item_emb.weight.T
        return dots + self.user_bias(inputs) + self.item_bias.weight.T

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users = batch["users"]
        u = self.user_emb(users)  # [B, d]
        bu = self.user_bias(users)  # [B, 1]
        i = self.item_emb(batch["pos"])  # [B, d]
        j = self.item_emb(batch["neg"])  # [B, n·candidates, d]
        s_pos = (u * i).sum(-1) + bu[:, 0] + self.item_bias(batch["pos"])[:, 0]
        s_neg = pair_scores(u, j) + bu + self.item_bias(batch["neg"])[..., 0]
        s_neg, j = keep_hardest(s_neg, j, self.config.negative_candidates)  # DNS; as drawn at 1
        confidence = self.config.alpha * batch["count"].to(s_pos.dtype)
        nll = confidence * F.softplus(-s_pos) + self.config.neg_weight * F.softplus(s_neg).sum(-1)
        reg = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum() / j.shape[1]) / u.shape[0]
        return nll.mean() + 0.5 * self.config.reg * reg

    def make_sampler(self, train: Interactions, batch_size: int) -> PairSampler:
        draws = self.config.num_negatives * self.config.negative_candidates
        return PairSampler(train, batch_size, draws, self.config.reject_seen)
