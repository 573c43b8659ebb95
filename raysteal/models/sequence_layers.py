"""Building blocks shared by the sequential recommenders.

* :class:`SequentialRecommender` — the common ``score`` path: validate the public
  ``PAD = -1`` left-padded input, keep the last ``max_len`` items, drop the columns that are
  padding in every row of the batch, and shift item ids by one (``PAD -> 0``) for the embedding.
* :class:`ItemEmbedding` — item table with row 0 reserved for padding (plus optional extra
  tokens such as BERT4Rec's ``[MASK]``), the full-catalogue dot-product scores, and the scores
  of chosen items only (:func:`sampled_scores`).
* :class:`TransformerBlock` — multi-head self-attention + position-wise FFN (Vaswani et al.
  2017), pre-LN as in SASRec (Kang & McAuley 2018, §3.2) or post-LN as in BERT4Rec (Sun et al.
  2019, §3.3), attention through ``torch.nn.functional.scaled_dot_product_attention`` (training
  with dropout on a CPU: :func:`dropout_attention`, the same computation; CPU dropout draws by
  :func:`dropout_noise`, four 16-bit draws per generator word).
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
from typing import Any, Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from raysteal.models.base import PAD, BatchSampler, ModelConfig, Recommender
from raysteal.models.catalogue_loss import catalogue_cross_entropy
from raysteal.models.sequence_samplers import NextItemSampler, leading_padding

PAD_INDEX = 0
"""Embedding row of padding once ids are shifted (``item + 1``)."""


class SequentialConfig(ModelConfig, frozen=True):
    """Fields every sequential model has."""

    max_len: int = Field(200, ge=1, description="longest history the model reads (last max_len items)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    window_stride: int = Field(0, ge=0, description="sliding-window augmentation stride (0 = last max_len items only)")
    length_buckets: int = Field(
        0, ge=0, description="sort training windows by length within pools of this many batches (0 = uniform random batches)"
    )


class TransformerConfig(SequentialConfig, frozen=True):
    """Fields of the transformer models (SASRec, BERT4Rec)."""

    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> TransformerConfig:
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


SAMPLED_SCORES_CHUNK = 256
"""Rows of the ``[rows, table]`` gradient block :func:`sampled_scores` scatters into at a time
(3.8 MB for ML-1M: it stays in cache between the scatter and the matrix product)."""


class _SampledScores(torch.autograd.Function):
    """``scores[p, j] = hidden[p] · table[indices[p, j]]`` without the ``[P, rows]`` score matrix.

    Forward: one fused gather-and-dot (``aten::_embedding_bag_per_sample_weights_backward``, i.e.
    the ``per_sample_weights`` gradient of an embedding bag, which is exactly these dot products).
    Backward: ``d hidden[p] = sum_j g[p, j] table[indices[p, j]]`` is an embedding bag with the
    gradient as ``per_sample_weights``; ``d table = G^T hidden`` with ``G`` the gradient scattered
    into its columns, built :data:`SAMPLED_SCORES_CHUNK` rows at a time so each block is multiplied
    while it is still in cache (a dense product: a sparse ``G^T`` needs a sort of every index,
    which costs more on a CPU than the product it saves).
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rows, width = indices.shape
        small = torch.int32 if rows * width < 2**31 and table.shape[0] < 2**31 else torch.int64  # int32: cheaper to lay out
        flat = indices.reshape(-1).to(small)
        offsets = torch.arange(0, rows * width, width, dtype=small, device=hidden.device)
        bags = torch.arange(rows, dtype=small, device=hidden.device)[:, None].expand(rows, width).reshape(-1)  # offset2bag
        scores = torch.ops.aten._embedding_bag_per_sample_weights_backward(hidden, table, flat, offsets, bags, 0, -1)
        ctx.save_for_backward(hidden, table, indices)
        return scores.view(rows, width)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):  # noqa: D102
        hidden, table, indices = ctx.saved_tensors
        grad = grad_outputs[0].contiguous()
        grad_hidden = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_hidden = F.embedding_bag(indices, table, mode="sum", per_sample_weights=grad)
        if ctx.needs_input_grad[1]:
            rows, chunk = indices.shape[0], SAMPLED_SCORES_CHUNK
            transposed = hidden.new_zeros((hidden.shape[1], table.shape[0]))
            block = hidden.new_empty((min(chunk, rows), table.shape[0]))
            for lo in range(0, rows, chunk):
                hi = min(lo + chunk, rows)
                part = block[: hi - lo].zero_().scatter_add_(1, indices[lo:hi], grad[lo:hi])
                transposed.addmm_(hidden[lo:hi].t(), part)
            grad_table = transposed.t()
        return grad_hidden, grad_table, None


def sampled_scores(hidden: torch.Tensor, table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``[P, m]`` dot products ``hidden[p] · table[indices[p, j]]`` (``hidden [P, d]``, ``table
    [R, d]``, ``indices`` int64 ``[P, m]`` rows of ``table``), differentiable in ``hidden`` and
    ``table``: the same values and gradients as ``(hidden @ table.t()).gather(1, indices)``.

    On a CPU, for float32, a fused kernel (:class:`_SampledScores`) that never forms the
    ``[P, R]`` score matrix: the scores and the gradient of ``hidden`` touch only the chosen items
    (DFME: 200 of ML-1M's 3,706 per prefix), the table's gradient is one blocked dense product
    where the full scores need three, and the ``[P, R]`` scores and their gradient are never held
    in memory. Elsewhere (a GPU, bf16 autocast) the full product is cheap: it is used as before."""
    indices = indices.long()
    if not fused_scores(hidden, table, indices):
        return (hidden @ table.t()).gather(1, indices)
    low, high = (int(v) for v in torch.aminmax(indices))  # the fused kernel reads rows unchecked
    if low < 0 or high >= table.shape[0]:
        raise IndexError(f"sampled_scores: indices must lie in [0, {table.shape[0]}), got [{low}, {high}]")
    return _SampledScores.apply(hidden.contiguous(), table, indices.contiguous())


def fused_scores(hidden: torch.Tensor, table: torch.Tensor, indices: torch.Tensor) -> bool:
    """Whether :func:`sampled_scores` takes its fused CPU kernel for these operands."""
    return (
        hidden.device.type == "cpu"
        and hidden.dtype == table.dtype == torch.float32
        and hidden.ndim == 2
        and indices.ndim == 2
        and indices.shape[0] == hidden.shape[0]
        and indices.numel() > 0
        and not torch.is_autocast_enabled("cpu")
    )


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

    def scores_at(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[P, m]`` scores of catalogue items ``items [P, m]`` (ids ``>= 0``) only: equal to
        ``logits(hidden).gather(1, items)`` (see :func:`sampled_scores`)."""
        indices = shift_items(items.long())
        if not fused_scores(hidden, self.table.weight, indices):
            return self.logits(hidden).gather(1, items.long())  # the full product, exactly as before
        low, high = (int(v) for v in torch.aminmax(items))  # not the padding row nor extra tokens
        if low < 0 or high >= self.num_items:
            raise IndexError(f"scores_at: items must lie in [0, {self.num_items}), got [{low}, {high}]")
        return _SampledScores.apply(hidden.contiguous(), self.table.weight, indices.contiguous())


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
        """``x [B, L, dim]``; ``mask``: bool ``[B, 1, L, L]`` (``True`` = may attend) or its
        :func:`additive_attention_mask`."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.training and self.dropout > 0.0 and x.device.type == "cpu":
            attended = dropout_attention(q, k, v, mask, self.dropout)
        else:  # a GPU's fused kernel draws the attention dropout itself
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))

    def last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``forward(x, mask)[:, -1:]``: the last query's output ``[B, 1, dim]`` only (keys and
        values of every position), with the same attention-dropout draws (:func:`last_query_attention`)."""
        batch, length, dim = x.shape
        heads, width = self.num_heads, dim // self.num_heads
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -1:], weight[:dim], bias[:dim]).view(batch, 1, heads, width).transpose(1, 2)
        k, v = F.linear(x, weight[dim:], bias[dim:]).view(batch, length, 2, heads, width).permute(2, 0, 3, 1, 4)
        if self.training and self.dropout > 0.0 and x.device.type == "cpu":
            attended = last_query_attention(q, k, v, mask[..., -1:, :], self.dropout)
        else:
            attended = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask[..., -1:, :], dropout_p=self.dropout if self.training else 0.0
            )
        return self.out(attended.transpose(1, 2).reshape(batch, 1, dim))


DROP_LEVELS = 1 << 16  # dropout probabilities are drawn in steps of 1/65,536 (:func:`dropout_noise`)


def dropout_noise(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """Inverted-dropout noise of ``shape`` (``like``'s dtype and device): ``0`` with probability
    ``p``, else ``1 / (1 - p)``, drawn from the default generator (seeded by ``torch.manual_seed``).

    Four 16-bit draws per 64-bit word of the generator, where ``bernoulli_`` (``F.dropout`` on a
    CPU) spends one Mersenne-twister draw and a float conversion per element: a DFME student step's
    noise takes 0.063 s instead of 0.208 s (``benchmarks/student_step.py``). The probability is the nearest multiple of
    1/65,536 (0.2 -> 0.199997), and the kept values are scaled by that probability's inverse so the
    expectation is ``x``. :func:`bernoulli_noise` is ``F.dropout``'s own draw: a test or benchmark
    that sets ``sequence_layers.dropout_noise = bernoulli_noise`` gets ``F.dropout``'s masks from
    every layer here (each looks this function up when it draws)."""
    drop = round(p * DROP_LEVELS)
    if drop >= DROP_LEVELS:
        return like.new_zeros(shape)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=like.device).random_(-(1 << 63), (1 << 63) - 1)
    lanes = words.view(torch.int16)[:count].view(shape)  # uniform on [-32768, 32767]
    keep = lanes >= drop - DROP_LEVELS // 2
    return keep.to(like.dtype).mul_(DROP_LEVELS / (DROP_LEVELS - drop))


def bernoulli_noise(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """``F.dropout``'s noise on a CPU (``_dropout_impl``): ``bernoulli(1 - p) / (1 - p)``, one
    generator draw per element; the reference :func:`dropout_noise` replaces."""
    if p >= 1.0:
        return like.new_zeros(shape)
    return like.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with :func:`dropout_noise`'s draws on a CPU (off the CPU,
    ``F.dropout`` itself: its fused kernels draw on the device)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return x * dropout_noise(tuple(x.shape), p, x)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training draws come from :func:`dropout_noise` (:func:`dropout`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Dropout names it so)
        return dropout(input, self.p, self.training)


def dropped_last(x: torch.Tensor, full: tuple[int, ...], p: float, training: bool) -> torch.Tensor:
    """``dropout(y, p, training)[:, -1:]`` for ``x = y[:, -1:]`` of a ``y`` shaped ``full``: the
    whole ``full`` noise is drawn (the generator advances as for ``y``), its last column kept."""
    if not training or p == 0.0:
        return x
    return x * dropout_noise(tuple(full), p, x)[:, -1:]


def last_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`dropout_attention` of the last query only: ``q [B, h, 1, d_h]``, ``k, v [B, h, L, d_h]``,
    ``mask`` its last row ``[B, 1, 1, L]``; the weights' dropout mask is drawn for all ``L``
    queries (the same draws) and its last row applied."""
    batch, heads, length, width = k.shape
    additive = additive_attention_mask(mask, q.dtype) if mask.dtype == torch.bool else mask.to(q.dtype)
    bias = additive.expand(batch, heads, 1, length).reshape(batch * heads, 1, length)
    scores = torch.baddbmm(
        bias, q.reshape(batch * heads, 1, width), k.reshape(batch * heads, length, width).transpose(1, 2), alpha=1.0 / math.sqrt(width)
    )
    weights = dropped_last(torch.softmax(scores, dim=-1), (batch * heads, length, length), p, True)
    return torch.bmm(weights, v.reshape(batch * heads, length, width)).view(batch, heads, 1, width)


def additive_attention_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A bool attention mask (``True`` = may attend) as the ``0`` / ``-inf`` scores it adds."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d_h) + mask)`` with dropout ``p``, times ``v`` (``[B, h, L, d_h]``).

    What ``scaled_dot_product_attention`` computes with ``dropout_p > 0`` on a CPU (its math
    kernel: no fused CPU kernel takes dropout), its ``[B, h, L, L]`` weights' noise drawn by
    :func:`dropout_noise` (with :func:`bernoulli_noise`: the kernel's own masks), and less
    around it: the scale and the mask enter one ``baddbmm``, the mask is converted once per
    encoder pass (:func:`additive_attention_mask`), and the softmax needs no guard for rows with
    nothing to attend to (:func:`attention_mask` always lets a query attend to itself)."""
    batch, heads, length, width = q.shape
    additive = additive_attention_mask(mask, q.dtype) if mask.dtype == torch.bool else mask.to(q.dtype)
    bias = additive.expand(batch, heads, length, length).reshape(batch * heads, length, length)
    scores = torch.baddbmm(
        bias, q.reshape(batch * heads, length, width), k.reshape(batch * heads, length, width).transpose(1, 2), alpha=1.0 / math.sqrt(width)
    )
    weights = dropout(torch.softmax(scores, dim=-1), p, training=True)
    return torch.bmm(weights, v.reshape(batch * heads, length, width)).view(batch, heads, length, width)


class TransformerBlock(nn.Module):
    """Self-attention + point-wise feed-forward, each with residual, dropout and LayerNorm.

    ``pre_norm=True``: ``x + Dropout(f(LN(x)))`` (SASRec, Kang & McAuley 2018, §3.2);
    ``pre_norm=False``: ``LN(x + Dropout(f(x)))`` (BERT4Rec, Sun et al. 2019, Eq. 4-5).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, hidden: int, activation: str, pre_norm: bool):
        super().__init__()
        self.attention = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU() if activation == "gelu" else nn.ReLU(), Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attention(self.norm1(x), mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attention(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))

    def last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``forward(x, mask)[:, -1:]`` computing the last position only past the keys and values;
        every dropout mask is drawn at its full ``[B, L, ·]`` shape in ``forward``'s order."""
        full, p, on = x.shape, self.drop.p, self.drop.training
        if self.pre_norm:
            y = x[:, -1:] + dropped_last(self.attention.last(self.norm1(x), mask), full, p, on)
            return y + dropped_last(self.ffn_last(self.norm2(y), full), full, p, on)
        y = self.norm1(x[:, -1:] + dropped_last(self.attention.last(x, mask), full, p, on))
        return self.norm2(y + dropped_last(self.ffn_last(y, full), full, p, on))

    def ffn_last(self, x: torch.Tensor, full: torch.Size) -> torch.Tensor:
        """The feed-forward layers on the last position ``x [B, 1, d]``, their dropout drawn at ``full``'s ``[B, L, hidden]``."""
        expand, act, drop, shrink = self.ffn
        drop = cast(nn.Dropout, drop)
        inner = act(expand(x))
        return shrink(dropped_last(inner, (*full[:-1], inner.shape[-1]), drop.p, drop.training))


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
        self.drop = Dropout(dropout)
        self.max_len = max_len
        self.causal = causal
        self.scale = math.sqrt(dim) if scale_embedding else 1.0

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, dim]`` of shifted, left-padded indices ``[B, L]`` (``L <= max_len``)."""
        x, mask = self.embed(indices)
        for block in self.blocks:  # padded positions are never attended to, so need no re-zeroing
            x = block(x, mask)
        return self.output_norm(x)

    def last(self, indices: torch.Tensor) -> torch.Tensor:
        """``forward(indices)[:, -1]`` (``[B, dim]``), the last block computed for the last column
        only (:meth:`TransformerBlock.last`: same dropout draws; the other columns' outputs of the
        last block are never needed). The same values; gradients to float rounding (sums over
        fewer rows). Off the CPU (fused dropout kernels draw differently) it is ``forward``'s."""
        if indices.device.type != "cpu":
            return self.forward(indices)[:, -1]
        x, mask = self.embed(indices)
        if not self.blocks:
            return self.output_norm(x[:, -1])
        for block in self.blocks[:-1]:
            x = block(x, mask)
        return self.output_norm(cast(TransformerBlock, self.blocks[-1]).last(x, mask))[:, 0]

    def embed(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input ``[B, L, dim]`` (embeddings, input dropout) and the attention mask."""
        valid = indices != PAD_INDEX
        pos = right_aligned_positions(indices.shape[1], self.max_len, indices.device)
        x = self.items(indices) * self.scale + self.positions(pos)[None]
        x = self.drop(self.input_norm(x)) * valid[..., None]
        mask = attention_mask(valid, self.causal)
        if self.training and self.blocks and cast(TransformerBlock, self.blocks[0]).attention.dropout > 0.0 and x.device.type == "cpu":
            mask = additive_attention_mask(mask, x.dtype)  # once for all blocks (dropout_attention)
        return x, mask


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
    *,
    activation: Literal["sigmoid", "hard_sigmoid"] = "sigmoid",
    normalise: bool = False,
) -> torch.Tensor:
    """``[N, D]``: additive attention of each prefix over its own items (NARM Eq. 6-7, Li et al.
    2017; STAMP Eq. 7-8, Liu et al. 2018): ``sum_l alpha[n, l] * values[rows[n], l]`` with
    ``alpha[n, l] = score(sigmoid(keys[rows[n], l] + query[n]))`` over the non-padding items at or
    before column ``cols[n]`` (unnormalised, as in both papers). ``activation="hard_sigmoid"``
    (``clamp(x / 6 + 1/2, 0, 1)``) and ``normalise`` (a softmax of the scores over those items)
    are the variant of Yue et al.'s released NARM (RecSys 2021).

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
        pre = keys[r, window] + query[group][:, None, :]
        squashed = torch.sigmoid(pre) if activation == "sigmoid" else torch.clamp(pre / 6.0 + 0.5, 0.0, 1.0)
        alpha = score(squashed).squeeze(-1)
        seen = prefix_mask(valid[:, window], r, c - lo)
        if normalise:  # a prefix with no item to attend to (none in training) gets zeros, not NaN
            weights = torch.softmax(alpha.masked_fill(~seen, float("-inf")), dim=1).nan_to_num(0.0)
        else:
            weights = alpha * seen
        parts.append(torch.einsum("nl,nld->nd", weights, values[r, window]))
    out = torch.cat(parts)
    return out[torch.argsort(order)]


def last_positions(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of the last column of each row: where the next item is predicted."""
    batch, length = indices.shape
    rows = torch.arange(batch, device=indices.device)
    return rows, torch.full_like(rows, length - 1)


SequentialConfigT = TypeVar("SequentialConfigT", bound=SequentialConfig)


class SequentialRecommender(Recommender[SequentialConfigT]):
    """Base of the sequential models: the shared ``score`` path and training-target helpers.

    Subclasses implement :meth:`represent` (hidden states at chosen positions) and
    :meth:`logits` (catalogue scores of those states); ``score`` and the next-item
    cross-entropy loss are written once here.
    """

    sequential = True

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

    def represent_last(self, indices: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, d]`` at the last column of every row: ``represent`` at
        :func:`last_positions`. Models that can skip the other columns' last layer override it."""
        rows, cols = last_positions(indices)
        return self.represent(indices, rows, cols)

    @abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores ``[N, num_items]`` of hidden states from :meth:`represent`."""

    def scores_at(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``[N, m]`` of the catalogue items ``items [N, m]`` (ids ``>= 0``) only:
        ``logits(hidden).gather(1, items)``. Models whose logits are an item-table product
        override it to skip the rest of the catalogue (:meth:`ItemEmbedding.scores_at`)."""
        return self.logits(hidden).gather(1, items.long())

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        """Next-item scores ``[B, num_items]`` of left-padded sequences ``[B, L]``."""
        indices = self.prepare(inputs)
        rows, cols = last_positions(indices)
        return self.logits(self.represent(indices, rows, cols))

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``(weight [num_items, d], bias [num_items] or None)`` when :meth:`logits` is
        ``hidden @ weight.T + bias``, so the training loss can skip the ``[N, num_items]`` logits
        (:func:`~raysteal.models.catalogue_loss.catalogue_cross_entropy`); ``None``: it is not."""
        return None

    def target_cross_entropy(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Full-catalogue softmax cross-entropy of every non-PAD entry of ``batch["targets"]``."""
        indices = shift_items(batch["inputs"])
        rows, cols = target_positions(batch["targets"])
        hidden, targets = self.represent(indices, rows, cols), batch["targets"][rows, cols]
        layer = self.output_layer()
        if layer is None:
            return F.cross_entropy(self.logits(hidden), targets)
        return catalogue_cross_entropy(hidden, layer[0], layer[1], targets)

    def make_sampler(self, train: Any, batch_size: int) -> BatchSampler:
        """Autoregressive next-item batches (see :class:`~raysteal.models.sequence_samplers.NextItemSampler`)."""
        return NextItemSampler(train, batch_size, self.config.max_len, **self.sampler_options())

    def sampler_options(self) -> dict[str, Any]:
        """Keyword arguments for the sampler (windows and batching here; subclasses add negatives, position subsampling)."""
        return {"window_stride": self.config.window_stride, "length_buckets": self.config.length_buckets}
