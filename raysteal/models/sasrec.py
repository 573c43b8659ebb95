"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Item embeddings plus learned position embeddings (§3.1), ``num_blocks`` causal self-attention
blocks with point-wise feed-forward layers, each sub-layer ``x + Dropout(f(LayerNorm(x)))``
(§3.2), and a shared item embedding for prediction, ``r_{i,t} = F_t · M_i`` (§3.4). Like the
reference implementation, item embeddings are scaled by ``sqrt(d)`` before positions are added.

Loss (``config.loss``):

* ``"bce"`` — the paper's objective (§3.5): binary cross-entropy of each position's next item
  against one uniformly sampled item the user never consumed;
* ``"ce"`` (default) — full-catalogue softmax cross-entropy at every position. Measured on
  ML-1M (leave-one-out, batch 128, AdamW lr 1e-3, CPU), validation NDCG@10 against 100
  sampled negatives after 4 epochs: 0.383 with ``"ce"`` vs 0.274 with ``"bce"`` (popularity:
  0.208); ``"ce"`` costs about 5x more per epoch on a CPU but needs far fewer epochs, as also
  reported by Klenitskiy & Vasilev (RecSys 2023), so it is the default.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from raysteal.models.base import register_model
from raysteal.models.sequence_layers import SequentialRecommender, TransformerConfig, TransformerEncoder, shift_items, target_positions


class SASRecConfig(TransformerConfig, frozen=True):
    """SASRec hyperparameters (paper defaults for ML-1M: d=50, 2 blocks, 1 head, dropout 0.2, n=200)."""

    model: Literal["sasrec"] = "sasrec"
    embedding_dim: int = Field(50, ge=1)
    loss: Literal["ce", "bce"] = "ce"


@register_model
class SASRec(SequentialRecommender[SASRecConfig]):
    """Causal transformer over the item sequence (Kang & McAuley 2018)."""

    name = "sasrec"
    Config = SASRecConfig

    def __init__(self, config: SASRecConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        self.encoder = TransformerEncoder(
            num_items,
            config.embedding_dim,
            config.max_len,
            config.num_blocks,
            config.num_heads,
            config.dropout,
            causal=True,
            pre_norm=True,
            activation="relu",
            ffn_dim=config.embedding_dim,
            scale_embedding=True,
        )

    def represent(self, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.encoder(indices)[rows, cols]

    def represent_last(self, indices: torch.Tensor) -> torch.Tensor:
        """The last column's states, the last block run for that column only (:meth:`TransformerEncoder.last`)."""
        return self.encoder.last(indices)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.items.logits(hidden)

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encoder.items.items, None

    def scores_at(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.encoder.items.scores_at(hidden, items)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.loss == "ce":
            return self.target_cross_entropy(batch)
        rows, cols = target_positions(batch["targets"])
        hidden = self.represent(shift_items(batch["inputs"]), rows, cols)
        table = self.encoder.items
        pos = (hidden * table(shift_items(batch["targets"][rows, cols]))).sum(-1)
        neg = (hidden * table(shift_items(batch["negatives"][rows, cols]))).sum(-1)
        return F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))

    def sampler_options(self) -> dict[str, Any]:
        return {**super().sampler_options(), "num_negatives": 1 if self.config.loss == "bce" else 0}
