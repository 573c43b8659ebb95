"""Building blocks shared by the sequential recommenders.

* :class:`SequentialRecommender` — the common ``score`` path: validate the public
  ``PAD = -1`` left-padded input, keep the last ``max_len`` items, drop the columns that are
  padding in every row of the batch, and shift item ids by one (``PAD -> 0``) for the embedding.
* :class:`ItemEmbedding` — item table with row 0 reserved for padding (plus optional extra
  tokens such as BERT4Rec's ``[MASK]``) and the full-catalogue dot-product scores.
* :class:`TransformerBlock` — multi-head self-attention + position-wise FFN (Vaswani et al.
  2017), pre-LN as in SASRec (Kang & McAuley 2018, §3.2) or post-LN as in BERT4Rec (Sun et al.
  2019, §3.3), attention through ``torch.nn.functional.scaled_dot_product_attention``.
* :func:`attention_mask` — vectorised causal / bidirectional masks that ignore padding.
* :func:`right_aligned_positions` — positions counted from the most recent item, so that
  left padding never changes a position embedding.
* :func:`target_positions` — the (row, column) pairs of a batch that carry a training target.
* :func:`prefix_additive_attention` — NARM's / STAMP's attention of each prefix over its items,
  computed only over the columns a prefix can see.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from raysteal.models.base import PAD, BatchSampler, ModelConfig, Recommender
from raysteal.models.sequence_samplers import NextItemSampler, leading_padding

PAD_INDEX = 0
"""Embedding row of padding once ids are shifted (``item + 1``)."""


class SequentialConfig(ModelConfig):
    """Fields every sequential model has."""

    max_len: int = Field(200, ge=1, description="longest history the model reads (last max_len items)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    window_stride: int = Field(0, ge=0, description="sliding-window augmentation stride (0 = last max_len items only)")
    length_buckets: int = Field(
        0, ge=0, description="sort training windows by length within pools of this many batches (0 = uniform random batches)"
    )


class TransformerConfig(SequentialConfig):
    """Fields of the transformer models (SASRec, BERT4Rec)."""

    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "TransformerConfig":
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"embedding_dim ({self.embedding_dim}) must be divisible by num_heads ({self.num_heads})")
        return self


def shift_items(seqs: torch.Tensor) -> torch.Tensor:
    """Public ids (``PAD = -1``, items ``0..n-1``) to embedding indices (``0`` pad, ``1..n`` items)."""
    return seqs + 1


def check_sequences(seqs: torch.Tensor, num_items: int) -> torch.Tensor:
    """Validate a public sequence batch: ``int64 [B, L]`` with values in ``{PAD} ∪ [0, num_items)``."""
    if seqs.dim() != 2:
        raise ValueError(f"sequences must be a 2-d tensor [B, L], got shape {tuple(seqs.shape)}")
    if seqs.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"sequences must hold integer item ids, got dtype {seqs.dtype}")
    if seqs.numel():
        lo, hi = int(seqs.min()), int(seqs.max())
        if lo < PAD or hi >= num_items:
            raise ValueError(f"sequence values must be PAD={PAD} or item ids in [0, {num_items}); got range [{lo}, {hi}]")
    return seqs.long()


def trim_sequences(seqs: torch.Tensor, max_len: int) -> torch.Tensor:
    """Keep the last ``max_len`` columns and drop leading columns that are padding in every row.

    Keeps at least one column. Because positions are counted from the right
    (:func:`right_aligned_positions`) and padding is masked, the result is invariant to any
    number of pads prepended to the batch.
    """
    seqs = seqs[:, -max_len:]
    return seqs[:, leading_padding(seqs) :] if seqs.shape[1] else seqs


def right_aligned_positions(width: int, max_len: int, device: torch.device) -> torch.Tensor:
    """Position ids ``[width]`` of a left-padded batch: the last column is always ``max_len - 1``."""
    return torch.arange(max_len - width, max_len, device=device)


def attention_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask ``[B, 1, L, L]`` (``True`` = may attend) for ``scaled_dot_product_attention``.

    Keys that are padding are masked. With ``causal`` a query sees only earlier keys (SASRec
    §3.2, "causality"). Every query may always attend to itself, so rows of pure padding
    never produce NaNs (their outputs are discarded anyway).
    """
    length = valid.shape[1]
    allowed = valid[:, None, None, :].expand(-1, 1, length, -1)
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    return allowed | eye


class ItemEmbedding(nn.Module):
    """Item embedding table, row ``0`` padding, rows ``1..num_items`` items, then ``extra_tokens``."""

    def __init__(self, num_items: int, dim: int, extra_tokens: int = 0, std: float = 0.02):
        super().__init__()
        self.num_items = num_items
        self.table = nn.Embedding(num_items + 1 + extra_tokens, dim, padding_idx=PAD_INDEX)
        nn.init.normal_(self.table.weight, std=std)
        with torch.no_grad():
            self.table.weight[PAD_INDEX].zero_()

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Embeddings of shifted indices (``0`` = padding gives a zero vector)."""
        return self.table(indices)

    @property
    def items(self) -> torch.Tensor:
        """The ``[num_items, dim]`` rows of the real catalogue (item ``i`` is row ``i``)."""
        return self.table.weight[1 : self.num_items + 1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dot-product scores of every catalogue item: ``hidden [..., dim] -> [..., num_items]``."""
        return hidden @ self.items.t()


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product multi-head self-attention (Vaswani et al. 2017, Eq. 1) via SDPA."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Self-attention + point-wise feed-forward, each with residual, dropout and LayerNorm.

    ``pre_norm=True``: ``x + Dropout(f(LN(x)))`` (SASRec, Kang & McAuley 2018, §3.2);
    ``pre_norm=False``: ``LN(x + Dropout(f(x)))`` (BERT4Rec, Sun et al. 2019, Eq. 4-5).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, hidden: int, activation: str, pre_norm: bool):
        super().__init__()
        self.attention = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU() if activation == "gelu" else nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attention(self.norm1(x), mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attention(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class TransformerEncoder(nn.Module):
    """Item + learned position embeddings followed by a stack of :class:`TransformerBlock`.

    Used by SASRec (causal, pre-LN, ReLU, final LayerNorm) and BERT4Rec (bidirectional,
    post-LN, GELU, LayerNorm on the input embedding).
    """

    def __init__(
        self,
        num_items: int,
        dim: int,
        max_len: int,
        num_blocks: int,
        num_heads: int,
        dropout: float,
        causal: bool,
        pre_norm: bool,
        activation: str,
        ffn_dim: int,
        extra_tokens: int = 0,
        scale_embedding: bool = False,
    ):
        super().__init__()
        self.items = ItemEmbedding(num_items, dim, extra_tokens)
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, dropout, ffn_dim, activation, pre_norm) for _ in range(num_blocks))
        self.input_norm = nn.Identity() if pre_norm else nn.LayerNorm(dim)
        self.output_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len
        self.causal = causal
        self.scale = math.sqrt(dim) if scale_embedding else 1.0

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, dim]`` of shifted, left-padded indices ``[B, L]`` (``L <= max_len``)."""
        valid = indices != PAD_INDEX
        pos = right_aligned_positions(indices.shape[1], self.max_len, indices.device)
        x = self.items(indices) * self.scale + self.positions(pos)[None]
        x = self.drop(self.input_norm(x)) * valid[..., None]
        mask = attention_mask(valid, self.causal)
        for block in self.blocks:  # padded positions are never attended to, so need no re-zeroing
            x = block(x, mask)
        return self.output_norm(x)


class PaddedGRU(nn.Module):
    """``nn.GRU`` over left-padded batches whose padding never enters the recurrence.

    Each row is rotated so its items come first (padding moves to the end, where a causal
    recurrence cannot reach the items), run through one dense ``nn.GRU`` call (cuDNN / oneDNN
    kernels, no packing), and rotated back: output ``[b, t]`` is the hidden state after reading
    the row's items up to column ``t`` (zeros at padding), exactly as without padding. The
    recurrence runs in fp32 even under autocast (it is cheap next to the catalogue scores, and
    reduced-precision RNN kernels vary by GPU).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x [B, L, in]`` with ``valid [B, L]`` (padding on the left) -> outputs ``[B, L, hidden]``."""
        length = x.shape[1]
        shift = (length - valid.sum(dim=1))[:, None]
        cols = torch.arange(length, device=x.device)[None, :]
        justified = torch.gather(x, 1, ((cols + shift) % length)[..., None].expand(-1, -1, x.shape[2]))
        with torch.autocast(device_type=x.device.type, enabled=False):
            out, _ = self.gru(justified.float())
        out = torch.gather(out, 1, ((cols - shift) % length)[..., None].expand(-1, -1, out.shape[2]))
        return out * valid[..., None]


def target_positions(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the entries of ``targets [B, L]`` that are not ``PAD``."""
    rows, cols = torch.nonzero(targets != PAD, as_tuple=True)
    return rows, cols


def prefix_mask(valid: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` mask of the non-padding items at or before column ``cols[n]`` of row ``rows[n]``."""
    length = valid.shape[1]
    upto = torch.arange(length, device=valid.device)[None, :] <= cols[:, None]
    return valid[rows] & upto


def prefix_additive_attention(
    keys: torch.Tensor,
    query: torch.Tensor,
    values: torch.Tensor,
    valid: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    score: nn.Module,
    chunks: int = 8,
) -> torch.Tensor:
    """``[N, D]``: additive attention of each prefix over its own items (NARM Eq. 6-7, Li et al.
    2017; STAMP Eq. 7-8, Liu et al. 2018): ``sum_l alpha[n, l] * values[rows[n], l]`` with
    ``alpha[n, l] = score(sigmoid(keys[rows[n], l] + query[n]))`` over the non-padding items at or
    before column ``cols[n]`` (unnormalised, as in both papers).

    The ``[N, L, H]`` sigmoid term is the cost (every prefix against every column). Prefixes are
    taken in ``chunks`` groups of nearby columns, each scored only over the columns its prefixes
    can see (from the group's first non-padding column to its last prefix end): when all the
    prefixes of full-length sequences are trained on, that is about half the work and memory of
    scoring every column, with the same result.
    """
    if rows.numel() == 0:
        return values.new_zeros((0, values.shape[-1]))
    length = valid.shape[1]
    none = torch.full((valid.shape[0],), length - 1, dtype=torch.long, device=valid.device)
    first = torch.where(valid.any(1), valid.to(torch.int8).argmax(1), none)  # first non-padding column per row
    order = torch.argsort(cols, stable=True)
    groups = torch.tensor_split(order, min(max(int(chunks), 1), int(order.numel())))
    bounds = torch.stack([torch.stack([first[rows[g]].min(), cols[g].max()]) for g in groups]).tolist()  # one sync
    parts = []
    for group, (lo, hi) in zip(groups, bounds):
        r, c = rows[group], cols[group]
        window = slice(lo, hi + 1)
        alpha = score(torch.sigmoid(keys[r, window] + query[group][:, None, :])).squeeze(-1)
        seen = prefix_mask(valid[:, window], r, c - lo)
        parts.append(torch.einsum("nl,nld->nd", alpha * seen, values[r, window]))
    out = torch.cat(parts)
    return out[torch.argsort(order)]


def last_positions(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of the last column of each row: where the next item is predicted."""
    batch, length = indices.shape
    rows = torch.arange(batch, device=indices.device)
    return rows, torch.full_like(rows, length - 1)


class SequentialRecommender(Recommender):
    """Base of the sequential models: the shared ``score`` path and training-target helpers.

    Subclasses implement :meth:`represent` (hidden states at chosen positions) and
    :meth:`logits` (catalogue scores of those states); ``score`` and the next-item
    cross-entropy loss are written once here.
    """

    sequential = True
    config: Any

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, seqs: torch.Tensor) -> torch.Tensor:
        """Public left-padded ids -> shifted indices on the model's device, trimmed (see :func:`trim_sequences`)."""
        seqs = check_sequences(torch.as_tensor(seqs), self.num_items)
        return shift_items(trim_sequences(seqs, self.config.max_len).to(self.device))

    @abstractmethod
    def represent(self, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[N, d]`` predicting the item after column ``cols[n]`` of row ``rows[n]``."""

    @abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores ``[N, num_items]`` of hidden states from :meth:`represent`."""

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        """Next-item scores ``[B, num_items]`` of left-padded sequences ``[B, L]``."""
        indices = self.prepare(inputs)
        rows, cols = last_positions(indices)
        return self.logits(self.represent(indices, rows, cols))

    def target_cross_entropy(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Full-catalogue softmax cross-entropy of every non-PAD entry of ``batch["targets"]``."""
        indices = shift_items(batch["inputs"])
        rows, cols = target_positions(batch["targets"])
        return F.cross_entropy(self.logits(self.represent(indices, rows, cols)), batch["targets"][rows, cols])

    def make_sampler(self, train: Any, batch_size: int) -> BatchSampler:
        """Autoregressive next-item batches (see :class:`~raysteal.models.sequence_samplers.NextItemSampler`)."""
        return NextItemSampler(train, batch_size, self.config.max_len, **self.sampler_options())

    def sampler_options(self) -> dict[str, Any]:
        """Keyword arguments for the sampler (windows and batching here; subclasses add negatives, position subsampling)."""
        return {"window_stride": self.config.window_stride, "length_buckets": self.config.length_buckets}
