"""BERT4Rec: sequential recommendation with bidirectional transformers (Sun et al., CIKM 2019).

Item + learned position embeddings with LayerNorm and dropout, ``num_blocks`` bidirectional
transformer layers (post-LN, GELU, 4·d feed-forward; §3.3, Eq. 2-5) and the output layer of
Eq. 7, ``P(v) = softmax(GELU(h W^P + b^P) E^T + b^O)`` with the shared item embedding ``E``.

Training is the cloze task (§3.6): items are replaced by a ``[MASK]`` token with probability
``mask_prob`` (0.2 for ML-1M) and predicted with full-catalogue cross-entropy
(:class:`~raysteal.models.sequence_samplers.ClozeSampler`). To recommend, ``[MASK]`` is
appended after the last ``max_len - 1`` items and its prediction is the score (§3.6).
``last_item_prob`` > 0 adds the paper's extra samples that mask only the last item (§3.6);
it defaults to 0, as in the reproduction whose teacher Yue et al. report (N@10 0.602 on ML-1M).
Embedding row ``num_items + 1`` (after the ``+1`` id shift) is ``[MASK]``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from raysteal.models.base import BatchSampler, register_model
from raysteal.models.sequence_layers import (
    SequentialRecommender,
    TransformerConfig,
    TransformerEncoder,
    check_sequences,
    shift_items,
    trim_sequences,
)
from raysteal.models.sequence_samplers import ClozeSampler


class BERT4RecConfig(TransformerConfig, frozen=True):
    """BERT4Rec hyperparameters (paper, ML-1M: d=64, 2 layers, 2 heads, dropout 0.1, mask 0.2, N=200)."""

    model: Literal["bert4rec"] = "bert4rec"
    embedding_dim: int = Field(64, ge=1)
    num_heads: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    mask_prob: float = Field(0.2, gt=0.0, le=1.0)
    last_item_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of windows that mask only their last item (§3.6)")


@register_model
class BERT4Rec(SequentialRecommender[BERT4RecConfig]):
    """Bidirectional transformer trained with the cloze objective (Sun et al. 2019)."""

    name = "bert4rec"
    Config = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        dim = config.embedding_dim
        self.encoder = TransformerEncoder(
            num_items,
            dim,
            config.max_len,
            config.num_blocks,
            config.num_heads,
            config.dropout,
            causal=False,
            pre_norm=False,
            activation="gelu",
            ffn_dim=4 * dim,
            extra_tokens=1,
        )
        self.projection = nn.Linear(dim, dim)
        self.output_bias = nn.Parameter(torch.zeros(num_items))

    @property
    def mask_token(self) -> int:
        """The ``[MASK]`` id in public (unshifted) item space."""
        return self.num_items

    def prepare(self, seqs: torch.Tensor) -> torch.Tensor:
        """The last ``max_len - 1`` items followed by ``[MASK]``, shifted, on the model's device."""
        seqs = check_sequences(torch.as_tensor(seqs), self.num_items)
        keep = self.config.max_len - 1
        seqs = trim_sequences(seqs, keep) if keep > 0 else seqs[:, :0]
        mask = torch.full((seqs.shape[0], 1), self.mask_token, dtype=seqs.dtype)
        return shift_items(torch.cat([seqs, mask], dim=1).to(self.device))

    def represent(self, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.projection(self.encoder(indices)[rows, cols]))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.items.logits(hidden) + self.output_bias

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encoder.items.items, self.output_bias

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the masked items (cloze objective, §3.6)."""
        return self.target_cross_entropy(batch)

    def make_sampler(self, train: Any, batch_size: int) -> BatchSampler:
        cfg = self.config
        return ClozeSampler(
            train, batch_size, cfg.max_len, cfg.mask_prob, self.mask_token, last_item_prob=cfg.last_item_prob, **self.sampler_options()
        )
