"""NARM: neural attentive session-based recommendation (Li et al., CIKM 2017).

Item embedding -> dropout -> GRU giving hidden states ``h_1..h_t`` (§3.2). The *global*
encoder's summary is the last state, ``c^g_t = h_t`` (Eq. 5); the *local* encoder attends over
the prefix, ``c^l_t = Σ_j α_tj h_j`` with ``α_tj = v^T σ(A_1 h_t + A_2 h_j)`` (Eq. 6-7, σ the
sigmoid, weights not normalised, as in the paper). The decoder is bilinear:
``S_i = emb_i^T B [c^g_t; c^l_t]`` (Eq. 9), trained with softmax cross-entropy (Eq. 10).
Dropout sits after the embedding and before ``B`` (the paper's 25% / 50%).

Training reads every prefix of the autoregressive windows; the local encoder costs
``O(L · hidden)`` per target, so ``positions_per_sequence`` random targets per window are kept
(``None`` = all).

Yue et al.'s released NARM (their teacher, RecSys 2021) differs in three places, each an option
here: a hard sigmoid in the local encoder's scores (``attention_activation``), its weights
normalised by a softmax over the prefix (``attention_softmax``), and every parameter drawn from a
normal truncated at two standard deviations (``init_std`` 0.02); with a hidden size twice the
embedding (64 / 128), dropout 0.1 in both places and every prefix trained on
(:data:`raysteal.training.presets.NARM_YUE`; the ``narm`` preset takes them with 32 targets a window).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raysteal.models.base import register_model
from raysteal.models.sequence_layers import (
    PAD_INDEX,
    ItemEmbedding,
    PaddedGRU,
    SequentialConfig,
    SequentialRecommender,
    prefix_additive_attention,
)


class NARMConfig(SequentialConfig, frozen=True):
    """NARM hyperparameters (paper: d=50, 100 hidden units, dropout 0.25 / 0.5)."""

    model: Literal["narm"] = "narm"
    embedding_dim: int = Field(50, ge=1)
    hidden_size: int = Field(100, ge=1)
    num_layers: int = Field(1, ge=1)
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="after the item embedding")
    context_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="before the bilinear decoder")
    positions_per_sequence: int | None = Field(32, ge=1, description="random training targets kept per window (None = all)")
    attention_activation: Literal["sigmoid", "hard_sigmoid"] = Field(
        "sigmoid", description="sigma of the local encoder's scores: the paper's sigmoid, or Yue et al.'s hard sigmoid"
    )
    attention_softmax: bool = Field(False, description="normalise the local encoder's weights by a softmax over the prefix (Yue et al.)")
    init_std: float | None = Field(
        None, gt=0.0, description="every parameter drawn from a normal truncated at 2 std (Yue et al.: 0.02); None: torch's defaults"
    )


@register_model
class NARM(SequentialRecommender[NARMConfig]):
    """GRU encoder with global and attentive local summaries, bilinear decoder (Li et al. 2017)."""

    name = "narm"
    Config = NARMConfig

    def __init__(self, config: NARMConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        dim, hidden = config.embedding_dim, config.hidden_size
        self.items = ItemEmbedding(num_items, dim)
        self.gru = PaddedGRU(dim, hidden, config.num_layers, 0.0)
        self.a1 = nn.Linear(hidden, hidden, bias=False)
        self.a2 = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.bilinear = nn.Linear(2 * hidden, dim, bias=False)
        self.embedding_drop = nn.Dropout(config.dropout)
        self.context_drop = nn.Dropout(config.context_dropout)
        if config.init_std is not None:
            std = config.init_std
            with torch.no_grad():
                for parameter in self.parameters():
                    nn.init.trunc_normal_(parameter, 0.0, std, -2 * std, 2 * std)
                self.items.table.weight[PAD_INDEX].zero_()  # padding stays a zero vector

    def represent(self, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        valid = indices != PAD_INDEX
        states = self.gru(self.embedding_drop(self.items(indices)), valid)
        last = states[rows, cols]
        cfg = self.config
        local = prefix_additive_attention(
            self.a2(states),
            self.a1(last),
            states,
            valid,
            rows,
            cols,
            self.v,
            activation=cfg.attention_activation,
            normalise=cfg.attention_softmax,
        )
        return self.bilinear(self.context_drop(torch.cat([last, local], dim=-1)))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.items.logits(hidden)

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.items.items, None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Softmax cross-entropy of the next item (Eq. 10) at the kept positions."""
        return self.target_cross_entropy(batch)

    def sampler_options(self) -> dict:
        return {**super().sampler_options(), "positions_per_sequence": self.config.positions_per_sequence}
