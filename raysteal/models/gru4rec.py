"""GRU4Rec: session-based recommendation with recurrent neural networks (Hidasi et al., ICLR 2016).

Item embedding -> dropout -> ``num_layers`` GRU layers (§3.1, Eq. 1-4) -> dropout -> a
feed-forward output layer giving one score per catalogue item (§3.1, Fig. 1). The hidden
state after the last item of the (left-padded) sequence scores the next item.

Training: the paper's session-parallel mini-batches are replaced by the equivalent
autoregressive windows (every position of a user's sequence predicts the next item, as in
:class:`~raysteal.models.sequence_samplers.NextItemSampler`), and its sampled ranking losses
(TOP1 / BPR, §3.1.2) by full-catalogue softmax cross-entropy, which the GRU4Rec authors'
follow-up (Hidasi & Karatzoglou, CIKM 2018, §3) lists among its losses and which needs no
negative sampling on a catalogue of a few thousand items.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raysteal.models.base import register_model
from raysteal.models.sequence_layers import PAD_INDEX, ItemEmbedding, PaddedGRU, SequentialConfig, SequentialRecommender


class GRU4RecConfig(SequentialConfig, frozen=True):
    """GRU4Rec hyperparameters."""

    model: Literal["gru4rec"] = "gru4rec"
    embedding_dim: int = Field(64, ge=1)
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


@register_model
class GRU4Rec(SequentialRecommender[GRU4RecConfig]):
    """GRU over the item sequence with a feed-forward output layer (Hidasi et al. 2016)."""

    name = "gru4rec"
    Config = GRU4RecConfig

    def __init__(self, config: GRU4RecConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        self.items = ItemEmbedding(num_items, config.embedding_dim)
        self.gru = PaddedGRU(config.embedding_dim, config.hidden_size, config.num_layers, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, num_items)

    def represent(self, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        states = self.gru(self.drop(self.items(indices)), indices != PAD_INDEX)
        return self.drop(states[rows, cols])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden)

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.output.weight, self.output.bias

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Softmax cross-entropy of the next item at every position."""
        return self.target_cross_entropy(batch)
