"""NeuMF (He et al. 2017, "Neural Collaborative Filtering"), registered as ``neumf`` (alias ``ncf``).

GMF branch ``φ^GMF = p^G_u ⊙ q^G_i`` (Eq. 9), MLP branch ``φ^MLP = a_L(W_L^T(... a_1(W_1^T
[p^M_u; q^M_i] + b_1) ...))`` with ReLU towers halving at each layer (Eq. 10/§3.3), fused as
``ŷ_ui = σ(h^T [φ^GMF; φ^MLP])`` (Eq. 12). Trained pointwise with binary cross-entropy
(Eq. 7) on each positive and ``num_negatives`` (4) sampled negatives. As in the authors'
code, for predictive factors f the MLP hidden layers are (4f, 2f, f) and each MLP embedding
has 4f dims. No GMF/MLP pretraining.

Full-catalogue scoring splits the first MLP layer as ``W_1 [p; q] = W_u p + W_i q``, so the
item half is computed once per item and broadcast against the users, item chunk by chunk.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from raysteal.data.interactions import Interactions
from raysteal.models.base import ModelConfig, Recommender, register_alias, register_model
from raysteal.models.pair_samplers import PairSampler

_SCORE_CHUNK_ELEMENTS = 1 << 24
"""Upper bound on ``users x items x hidden`` activations materialised at once by ``score``."""


class NeuMFConfig(ModelConfig):
    """Hyperparameters of NeuMF; ``embedding_dim`` is the number of predictive factors f."""

    model: Literal["neumf"] = "neumf"
    embedding_dim: int = Field(16, ge=1, description="predictive factors f (GMF embedding size)")
    mlp_layers: tuple[int, ...] | None = Field(None, description="MLP hidden sizes; default (4f, 2f, f)")
    num_negatives: int = Field(4, ge=1, description="sampled negatives per positive")
    init_std: float = Field(0.01, gt=0.0, description="std of the embeddings' normal initialisation")
    reject_seen: bool = Field(True, description="redraw negatives the user already interacted with")

    @model_validator(mode="after")
    def _positive_layers(self) -> "NeuMFConfig":
        if self.mlp_layers is not None and (not self.mlp_layers or min(self.mlp_layers) < 1):
            raise ValueError(f"mlp_layers must be non-empty positive sizes, got {self.mlp_layers}")
        return self

    def hidden_sizes(self) -> tuple[int, ...]:
        f = self.embedding_dim
        return self.mlp_layers or (4 * f, 2 * f, f)


@register_model
class NeuMF(Recommender):
    """GMF and MLP towers fused by one output layer (He et al. 2017, Fig. 3)."""

    name = "neumf"
    sequential = False
    Config = NeuMFConfig

    def __init__(self, config: NeuMFConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        f = config.embedding_dim
        hidden = config.hidden_sizes()
        self.mlp_dim = hidden[0]
        self.user_gmf = nn.Embedding(num_users, f)
        self.item_gmf = nn.Embedding(num_items, f)
        self.user_mlp = nn.Embedding(num_users, self.mlp_dim)
        self.item_mlp = nn.Embedding(num_items, self.mlp_dim)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=config.init_std)
        sizes = (2 * self.mlp_dim, *hidden)
        self.tower = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.predict = nn.Linear(f + hidden[-1], 1)

    def _logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid ``ŷ`` for paired ``users`` / ``items`` of the same shape."""
        gmf = self.user_gmf(users) * self.item_gmf(items)
        h = torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1)
        for layer in self.tower:
            h = F.relu(layer(h))
        return self.predict(torch.cat([gmf, h], dim=-1))[..., 0]

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        f = self.config.embedding_dim
        w_out = self.predict.weight[0]
        first = self.tower[0]
        gmf = (self.user_gmf(inputs) * w_out[:f]) @ self.item_gmf.weight.T  # [B, I]
        h_user = self.user_mlp(inputs) @ first.weight[:, : self.mlp_dim].T + first.bias  # [B, H1]
        h_item = self.item_mlp.weight @ first.weight[:, self.mlp_dim :].T  # [I, H1]
        chunk = max(1, _SCORE_CHUNK_ELEMENTS // max(1, inputs.shape[0] * h_user.shape[1]))
        parts = []
        for start in range(0, self.num_items, chunk):
            h = F.relu(h_user[:, None, :] + h_item[None, start : start + chunk, :])
            for layer in self.tower[1:]:
                h = F.relu(layer(h))
            parts.append(h @ w_out[f:])
        return gmf + torch.cat(parts, dim=1) + self.predict.bias

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, pos, neg = batch["users"], batch["pos"], batch["neg"]
        items = torch.cat([pos[:, None], neg], dim=1)  # [B, 1 + n]
        logits = self._logits(users[:, None].expand_as(items), items)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    def make_sampler(self, train: Interactions, batch_size: int) -> PairSampler:
        return PairSampler(train, batch_size, self.config.num_negatives, self.config.reject_seen)


register_alias("ncf", "neumf")
