"""STAMP: short-term attention/memory priority model (Liu et al., KDD 2018).

For the prefix ``x_1..x_t`` of item embeddings: the general interest ``m_s`` is the mean of
the prefix (Eq. 2) and the current interest ``m_t = x_t`` (the last item). Attention over the
prefix, ``α_i = W_0 σ(W_1 x_i + W_2 x_t + W_3 m_s + b_a)`` (Eq. 7, σ the sigmoid, weights not
normalised), gives ``m_a = Σ_i α_i x_i`` (Eq. 8). Two MLP cells give ``h_s = tanh(W_s m_a + b_s)``
and ``h_t = tanh(W_t m_t + b_t)`` (Eq. 3-4), and each candidate scores the trilinear product
``<h_s, h_t, x_i> = x_i^T (h_s ⊙ h_t)`` (Eq. 5), trained with softmax cross-entropy (Eq. 10).
The paper wraps the product in a sigmoid before the softmax; like the authors' code we feed the
raw product to the softmax (a sigmoid would bound every logit to (0, 1)).

Training targets are subsampled per window (``positions_per_sequence``) because the attention
costs ``O(L · d)`` per target.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raysteal.models.base import register_model
from raysteal.models.sequence_layers import PAD_INDEX, ItemEmbedding, SequentialConfig, SequentialRecommender, prefix_additive_attention


class STAMPConfig(SequentialConfig, frozen=True):
    """STAMP hyperparameters (paper: d=100)."""

    model: Literal["stamp"] = "stamp"
    embedding_dim: int = Field(100, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="on the item embeddings of the input")
    positions_per_sequence: int | None = Field(32, ge=1, description="random training targets kept per window (None = all)")


@register_model
class STAMP(SequentialRecommender[STAMPConfig]):
    """Attention over the prefix, memory of the last item, trilinear scoring (Liu et al. 2018)."""

    name = "stamp"
    Config = STAMPConfig

    def __init__(self, config: STAMPConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        dim = config.embedding_dim
        self.items = ItemEmbedding(num_items, dim)
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.w3 = nn.Linear(dim, dim)
        self.w0 = nn.Linear(dim, 1, bias=False)
        self.mlp_s = nn.Linear(dim, dim)
        self.mlp_t = nn.Linear(dim, dim)
        self.drop = nn.Dropout(config.dropout)

    def represent(self, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        valid = indices != PAD_INDEX
        x = self.drop(self.items(indices))
        counts = valid.cumsum(dim=1)[rows, cols].clamp(min=1)[:, None]
        memory = x.cumsum(dim=1)[rows, cols] / counts
        last = x[rows, cols]
        attended = prefix_additive_attention(self.w1(x), self.w2(last) + self.w3(memory), x, valid, rows, cols, self.w0)
        return torch.tanh(self.mlp_s(attended)) * torch.tanh(self.mlp_t(last))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.items.logits(hidden)

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.items.items, None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Softmax cross-entropy of the next item (Eq. 10) at the kept positions."""
        return self.target_cross_entropy(batch)

    def sampler_options(self) -> dict:
        return {**super().sampler_options(), "positions_per_sequence": self.config.positions_per_sequence}
