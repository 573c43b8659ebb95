"""BAHSD's loss terms (the design of docs/attacks/bahsd.md, items 2–4), pure and vectorised over examples.

An *example* is one queried prefix: the teacher's ranked list ``R = (j_0, ..., j_{k-1})``
(``-1`` pads a shorter answer; padding must trail), the student's catalogue scores ``z`` and the
prefix's reliability ``c ∈ [0, 1]`` from multi-scale probing. Every function returns one value
per example (``[P]``) unless said otherwise; the objective in :mod:`raysteal.extraction.bahsd`
combines them.

* (a) :func:`rank_soft_targets`, :func:`kl_rank_distillation` — ``p_T(j) ∝ exp(−rank_j / T)``
  over the list (0 elsewhere) and ``KL(p_T ‖ softmax(z / T))`` over the catalogue.
* (b) :func:`dynamic_temperature` — ``T(c) = t_min + (t_max − t_min) · c^γ``.
* (c) :func:`pairwise_consistency`, :func:`listwise_consistency` — ranking losses over the
  list whose items are weighted by their cross-scale stability.
* (d) :func:`info_nce` — contrastive loss between the student's representations of two scales
  of the same prefix, in-batch negatives, cosine similarity, temperature τ.
* (e) :func:`mixing_weight` — ``w(c) = σ((c − threshold) / sharpness)``.
* :func:`bahsd_loss` — item 4: ``mean_s [ w_s·L_KL,s + (1 − w_s)·(L_rank,s + λ·L_InfoNCE,s) ]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raysteal.errors import ConfigError


def _check_positive(name: str, value: float) -> None:
    if not float(value) > 0.0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def rank_soft_targets(lists: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """(a) ``p_T [P, k]``: ``p_T(j_r) = exp(−r / T) / Σ_{r' valid} exp(−r' / T)``, 0 on padding.

    ``r`` is the 0-based rank in the teacher's list; ``temperature [P]`` (or a scalar) per example.
    A row without any valid item is all zeros.
    """
    valid = lists >= 0
    rank = torch.arange(lists.shape[1], device=lists.device, dtype=torch.float32).expand(lists.shape)
    temp = torch.as_tensor(temperature, dtype=torch.float32, device=lists.device).expand(lists.shape[0])
    logits = torch.where(valid, -rank / temp[:, None], torch.full_like(rank, float("-inf")))
    p = torch.softmax(logits, dim=1)
    return torch.where(valid, p, torch.zeros_like(p))


KL_CHUNK_BYTES = 1 << 20
"""Row chunks of the catalogue-wide KL hold about this many bytes of float32 scores, so each of
its passes over a chunk stays in the CPU's cache (:class:`_ChunkedListKL`)."""


def _listed_mask(exclude: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
    """``exclude`` with every listed item cleared (a listed item is never masked)."""
    valid = lists >= 0
    rows, cols = valid.nonzero(as_tuple=True)
    listed = torch.zeros_like(exclude)
    listed[rows, lists[rows, cols]] = True
    return exclude & ~listed


def kl_rank_distillation_reference(
    scores: torch.Tensor,
    lists: torch.Tensor,
    temperature: torch.Tensor,
    exclude: torch.Tensor | None = None,
    scale_t2: bool = False,
) -> torch.Tensor:
    """:func:`kl_rank_distillation` as dense tensor operations over the whole ``[P, N]`` batch
    (autograd end to end): the definition the chunked path is tested against, and the path taken
    when the temperature itself needs a gradient."""
    temp = torch.as_tensor(temperature, dtype=scores.dtype, device=scores.device).expand(scores.shape[0])
    logits = scores / temp[:, None]
    valid = lists >= 0
    if exclude is not None:
        logits = logits.masked_fill(_listed_mask(exclude, lists), float("-inf"))
    log_q = torch.log_softmax(logits, dim=1)
    p = rank_soft_targets(lists, temp).to(scores.dtype)
    log_q_list = torch.gather(log_q, 1, lists.clamp(min=0))
    terms = torch.where(valid, p * (torch.log(p.clamp(min=1e-30)) - log_q_list), torch.zeros_like(p))
    kl = terms.sum(1)
    return kl * temp**2 if scale_t2 else kl


class _ChunkedListKL(torch.autograd.Function):
    """``KL(p_T ‖ softmax(z / T))`` per row, computed and differentiated a few rows at a time.

    With ``ℓ = z / T`` (masked items at −∞), ``KL = Σ_j p_j log p_j − Σ_j p_j ℓ_j + (Σ_j p_j) ·
    logsumexp(ℓ)``, so ``∂KL/∂z_i = ((Σ p) · q_i − p_i) / T`` with ``q = softmax(ℓ)``. The forward
    pass keeps only ``logsumexp(ℓ)`` per row; the backward pass recomputes ``q`` chunk by chunk.
    Each chunk is a few hundred kilobytes, so its passes run in cache instead of streaming
    ``[P, N]`` tensors through memory a dozen times (the dense version's log-softmax, gather,
    masks and their gradients)."""

    @staticmethod
    def forward(ctx, scores, lists, temp, exclude, p, chunk):  # type: ignore[override]
        kl = torch.zeros(scores.shape[0], dtype=scores.dtype, device=scores.device)
        lse = torch.zeros_like(kl)
        valid = lists >= 0
        index = lists.clamp(min=0)
        entropy = torch.where(valid, p * torch.log(p.clamp(min=1e-30)), torch.zeros_like(p)).sum(1)
        for start in range(0, scores.shape[0], chunk):
            part = slice(start, start + chunk)
            logits = _chunk_logits(scores, temp, exclude, part)
            norm = torch.logsumexp(logits, dim=1)
            norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))  # a row with nothing left
            lse[part] = norm
            listed = logits.gather(1, index[part])
            kl[part] = entropy[part] - torch.where(valid[part], p[part] * listed, torch.zeros_like(listed)).sum(1) + p[part].sum(1) * norm
        ctx.save_for_backward(scores, lists, temp, p, lse, *(() if exclude is None else (exclude,)))
        ctx.chunk = chunk
        return kl

    @staticmethod
    def backward(ctx, grad_kl):  # type: ignore[override]
        scores, lists, temp, p, lse, *rest = ctx.saved_tensors
        exclude = rest[0] if rest else None
        grad = torch.empty_like(scores)
        index = lists.clamp(min=0)
        mass = p.sum(1)
        for start in range(0, scores.shape[0], ctx.chunk):
            part = slice(start, start + ctx.chunk)
            logits = _chunk_logits(scores, temp, exclude, part)
            q = torch.exp(logits - lse[part, None])  # masked items: exp(−∞) = 0
            q.mul_(mass[part, None])
            q.scatter_add_(1, index[part], -p[part])  # padding holds p = 0
            q.mul_((grad_kl[part] / temp[part])[:, None])
            grad[part] = q
        return grad, None, None, None, None, None


def _chunk_logits(scores: torch.Tensor, temp: torch.Tensor, exclude: torch.Tensor | None, part: slice) -> torch.Tensor:
    logits = scores[part] / temp[part, None]
    if exclude is not None:
        logits.masked_fill_(exclude[part], float("-inf"))
    return logits


def kl_rank_distillation(
    scores: torch.Tensor,
    lists: torch.Tensor,
    temperature: torch.Tensor,
    exclude: torch.Tensor | None = None,
    scale_t2: bool = False,
) -> torch.Tensor:
    """(a) ``KL(p_T ‖ q_T) = Σ_{j ∈ R} p_T(j) · (log p_T(j) − log q_T(j))`` per example, ``[P]``.

    ``q_T = softmax(scores / T)`` over the whole catalogue (``scores [P, N]``), except the items
    masked by ``exclude [P, N]`` (e.g. the prefix's own items, which an undefended black box never
    lists) — an item the list holds is never masked: a defense that mixes items into the answers
    (popular mixing) may list one the input holds, and masking it would make the KL infinite.
    ``scale_t2`` multiplies by ``T²`` (Hinton et al. 2015) so gradient magnitudes do not shrink
    as ``T`` grows. Rows with an empty list give 0. Computed a few rows at a time
    (:class:`_ChunkedListKL`); equal to :func:`kl_rank_distillation_reference` to float rounding.
    """
    temp = torch.as_tensor(temperature, dtype=scores.dtype, device=scores.device).expand(scores.shape[0])
    if temp.requires_grad:
        return kl_rank_distillation_reference(scores, lists, temperature, exclude, scale_t2)
    p = rank_soft_targets(lists, temp).to(scores.dtype)
    mask = None if exclude is None else _listed_mask(exclude, lists)
    # on a GPU the whole batch is one chunk (its passes are parallel already; the memory saving stays)
    chunk = scores.shape[0] if scores.is_cuda else max(1, KL_CHUNK_BYTES // max(1, scores.shape[1] * scores.element_size()))
    kl = _ChunkedListKL.apply(scores, lists, temp.contiguous(), mask, p, chunk)
    return kl * temp**2 if scale_t2 else kl


def dynamic_temperature(reliability: torch.Tensor, t_min: float, t_max: float, gamma: float = 1.0) -> torch.Tensor:
    """(b) ``T(c) = t_min + (t_max − t_min) · g(c)`` with ``g(c) = clip(c, 0, 1)^γ``.

    ``g`` rises monotonically from ``g(0) = 0`` to ``g(1) = 1``: the more reliable (head-like)
    the signal, the softer the target, against the teacher's "preference solidification" on
    dense head sequences; ``γ > 1`` keeps ``T`` near ``t_min`` until ``c`` is high.
    """
    _check_positive("t_min", t_min)
    _check_positive("temperature_gamma", gamma)
    if t_max < t_min:
        raise ConfigError(f"t_max ({t_max}) must be >= t_min ({t_min})")
    return t_min + (t_max - t_min) * reliability.clamp(0.0, 1.0) ** gamma


def mixing_weight(reliability: torch.Tensor, threshold: float, sharpness: float) -> torch.Tensor:
    """(e) ``w(c) = σ((c − threshold) / sharpness)``: the high-confidence branch's share."""
    _check_positive("sharpness", sharpness)
    return torch.sigmoid((reliability - threshold) / sharpness)


def item_weights(stability: torch.Tensor, floor: float) -> torch.Tensor:
    """Per listed item ``u_j = floor + (1 − floor) · stability_j`` (``floor`` keeps unstable items in play)."""
    if not 0.0 <= floor <= 1.0:
        raise ConfigError(f"stability_floor must lie in [0, 1], got {floor!r}")
    return floor + (1.0 - floor) * stability


def pairwise_consistency(
    list_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    valid: torch.Tensor,
    weights: torch.Tensor,
    margin: float = 0.5,
    neg_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(c) Stability-weighted margin ranking loss over the list (Yue et al. 2021's loss, weighted).

    With ``h(a, b) = max(0, m − (a − b))``, student scores ``s_r`` of the listed items (rank
    order), ``s⁻_q`` of the negatives and item weights ``u_r``; negatives are paired one to one
    with list items as in Yue et al.'s code (:mod:`raysteal.extraction.losses`: pair ``p`` takes
    item ``p mod k`` and negative ``p mod q``)::

        L = mean_{r: r, r+1 valid} ½(u_r + u_{r+1}) · h(s_r, s_{r+1})
          + mean_{p valid} u_{p mod k} · h(s_{p mod k}, s⁻_{p mod q})

    ``list_scores [P, k]``, ``neg_scores [P, q]``, ``valid [P, k]``, ``weights [P, k]``,
    ``neg_valid [P, q]`` (default all valid). With all weights 1 each row is Yue et al.'s loss of
    that prefix. A row without a pair (or without a negative pair) contributes 0 for that term.
    """
    pair_ok = (valid[:, :-1] & valid[:, 1:]).to(list_scores.dtype)
    pair_w = 0.5 * (weights[:, :-1] + weights[:, 1:])
    pair = F.relu(margin - (list_scores[:, :-1] - list_scores[:, 1:])) * pair_w * pair_ok
    pair_term = pair.sum(1) / pair_ok.sum(1).clamp(min=1)
    k, q = list_scores.shape[1], neg_scores.shape[1]
    if q == 0 or k == 0:
        return pair_term
    if neg_valid is None:
        neg_valid = torch.ones_like(neg_scores, dtype=torch.bool)
    idx = torch.arange(max(k, q), device=list_scores.device)
    ok = (valid[:, idx % k] & neg_valid[:, idx % q]).to(list_scores.dtype)
    hinge = F.relu(margin - (list_scores[:, idx % k] - neg_scores[:, idx % q]))
    neg_term = (hinge * weights[:, idx % k] * ok).sum(1) / ok.sum(1).clamp(min=1)
    return pair_term + neg_term


def listwise_consistency(
    list_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    valid: torch.Tensor,
    weights: torch.Tensor,
    neg_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(c) Stability-weighted ListMLE (Plackett–Luce likelihood of the teacher's order; Xia et al. 2008).

    With the negatives ranked below every listed item::

        L = (1 / |R|) · Σ_{r valid} u_r · ( log [ Σ_{r' ≥ r valid} exp(s_{r'}) + Σ_n exp(s⁻_n) ] − s_r )

    i.e. the weighted negative log-probability of picking ``j_r`` first among the items not yet
    placed. Rows without items give 0.
    """
    neg_inf = torch.full_like(list_scores, float("-inf"))
    masked = torch.where(valid, list_scores, neg_inf)
    tail = torch.logcumsumexp(masked.flip(1), dim=1).flip(1)  # log Σ_{r' >= r} exp(s_r')
    if neg_scores.shape[1]:
        if neg_valid is not None:
            neg_scores = neg_scores.masked_fill(~neg_valid, float("-inf"))
        tail = torch.logaddexp(tail, torch.logsumexp(neg_scores, dim=1, keepdim=True))
    terms = torch.where(valid, weights * (tail - list_scores), torch.zeros_like(list_scores))
    return terms.sum(1) / valid.sum(1).clamp(min=1).to(list_scores.dtype)


def info_nce(first: torch.Tensor, second: torch.Tensor, tau: float, groups: torch.Tensor | None = None) -> torch.Tensor:
    """(d) Symmetric InfoNCE between two views, ``[P]``, in-batch negatives, cosine similarity.

    ``S_ab = cos(x_a, y_b) / τ`` for ``x = first [P, d]``, ``y = second [P, d]``; example ``a``
    scores ``½ [ −log softmax_b(S_a·)_a − log softmax_b(S_·a)_a ]`` (van den Oord et al. 2018;
    both directions as in SimCLR/CLIP). ``groups [P]`` (e.g. the sequence id): other examples of
    the same group are prefixes of one sequence, not negatives, and are left out of the softmax.
    """
    _check_positive("infonce_tau", tau)
    x = F.normalize(first, dim=1)
    y = F.normalize(second, dim=1)
    sim = x @ y.t() / tau
    if groups is not None:
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(same, float("-inf"))
    diag = torch.diagonal(sim)
    return 0.5 * ((torch.logsumexp(sim, dim=1) - diag) + (torch.logsumexp(sim, dim=0) - diag))


def bahsd_loss(
    weight: torch.Tensor,
    kl: torch.Tensor | None,
    rank: torch.Tensor | None,
    contrastive: torch.Tensor | None,
    infonce_weight: float,
) -> torch.Tensor:
    """Item 4: ``mean_s [ w_s · L_KL,s + (1 − w_s) · (L_rank,s + λ · L_InfoNCE,s) ]``.

    A term passed as ``None`` is absent (an ablation), not zero-weighted: it adds nothing.
    """
    high = weight * kl if kl is not None else torch.zeros_like(weight)
    low = torch.zeros_like(weight)
    if rank is not None:
        low = low + rank
    if contrastive is not None:
        low = low + infonce_weight * contrastive
    return (high + (1.0 - weight) * low).mean()
