"""Shared plumbing of the metrics: numpy/torch in, torch inside, the caller's kind out; and the
row-wise set operations on ranked lists (``int64 [B, K]``, best first, negative ids = padding)."""

from __future__ import annotations

import numpy as np
import torch

from raysteal.errors import ConfigError

ArrayLike = np.ndarray | torch.Tensor
CSRPair = tuple[ArrayLike, ArrayLike]
"""``(indptr, indices)``: row ``r`` holds ``indices[indptr[r]:indptr[r+1]]``."""
ItemSets = ArrayLike | CSRPair
"""Per-row item sets: a bool mask ``[B, N]`` / padded id matrix ``[B, M]``, or a CSR pair."""


def any_torch(*xs: object) -> bool:
    """True when at least one argument is a torch tensor (results are then returned as torch)."""
    return any(isinstance(x, torch.Tensor) for x in xs)


def device_of(*xs: object) -> torch.device:
    """Device of the first torch tensor among ``xs`` (CPU when there is none)."""
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


def as_tensor(x: object, name: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` (numpy array, tensor or nested list) as a tensor on ``device`` (zero-copy when it can:
    a read-only array, such as one Ray's object store hands out, is copied rather than shared)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            array = np.asarray(x)
            t = torch.as_tensor(array if array.flags.writeable else array.copy())
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"{name}: cannot read as an array ({err})") from None
    t = t.to(device)
    return t if dtype is None else t.to(dtype)


def as_lists(x: object, name: str, device: torch.device, k: int | None = None) -> torch.Tensor:
    """A ranked-list matrix ``int64 [B, K]`` (truncated to ``k`` when given), validated."""
    t = as_tensor(x, name, device)
    if t.ndim != 2:
        raise ConfigError(f"{name}: ranked lists must be 2-d [B, K], got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise ConfigError(f"{name}: ranked lists must hold integer item ids, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if k is not None:
        check_k(k, name="k")
        if k > t.shape[1]:
            raise ConfigError(f"k={k} exceeds the length {t.shape[1]} of the lists in {name}")
        t = t[:, :k]
    return t


def check_k(k: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"{name} must be a positive integer, got {k!r}")


def same_rows(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ConfigError(f"{names[0]} has {a.shape[0]} rows but {names[1]} has {b.shape[0]}")


def finish(t: torch.Tensor, to_numpy: bool) -> ArrayLike:
    """Return ``t`` as numpy when the caller passed no tensor, else as the tensor itself."""
    return t.detach().cpu().numpy() if to_numpy else t


def first_occurrence(lists: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, K]``: True at each valid id's first position in its row (padding and repeats False)."""
    if lists.shape[1] == 0:
        return torch.zeros_like(lists, dtype=torch.bool)
    vals, order = torch.sort(lists, dim=1, stable=True)
    repeat = torch.zeros_like(vals, dtype=torch.bool)
    repeat[:, 1:] = vals[:, 1:] == vals[:, :-1]
    keep_sorted = (vals >= 0) & ~repeat
    keep = torch.empty_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep


def isin_rows(values: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, K]``: ``values[b, i]`` occurs in ``pool[b]``; negative ids never match.

    Sort each pool row once and binary-search it (``O(B·(K+M)·log M)`` time, ``O(B·(K+M))``
    memory), so B = 100k rows of 100 ids cost a few tensors of that size, not a ``B·K·M`` cube.
    """
    if pool.shape[1] == 0 or values.shape[1] == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    sorted_pool, _ = torch.sort(pool, dim=1)
    idx = torch.searchsorted(sorted_pool, values.contiguous()).clamp_(max=pool.shape[1] - 1)
    return (torch.gather(sorted_pool, 1, idx) == values) & (values >= 0)


def position_in(values: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Int64 ``[B, K]``: first position of ``values[b, i]`` in ``pool[b]``, or ``pool.shape[1]``
    when absent (negative ids are always absent)."""
    width = pool.shape[1]
    if width == 0 or values.shape[1] == 0:
        return torch.full_like(values, width)
    sorted_pool, order = torch.sort(pool, dim=1, stable=True)  # stable: equal ids keep first position first
    idx = torch.searchsorted(sorted_pool, values.contiguous()).clamp_(max=width - 1)
    found = (torch.gather(sorted_pool, 1, idx) == values) & (values >= 0)
    pos = torch.gather(order, 1, idx)
    return torch.where(found, pos, torch.full_like(pos, width))


def csr_pairs(
    indptr: object, indices: object, rows: int, num_items: int, device: torch.device, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) index pairs of a CSR pair describing ``rows`` rows.

    ``indptr`` has ``rows + 1`` entries and need not start at 0 (a slice of a larger CSR
    pointer works as is); row ``r`` holds ``indices[indptr[r]:indptr[r+1]]``.
    """
    ptr = as_tensor(indptr, f"{name} indptr", device, torch.int64)
    idx = as_tensor(indices, f"{name} indices", device, torch.int64)
    if ptr.ndim != 1 or ptr.numel() != rows + 1:
        raise ConfigError(f"{name}: indptr must have {rows + 1} entries (one more than rows), got {ptr.numel()}")
    counts = ptr[1:] - ptr[:-1]
    if bool((counts < 0).any()) or int(ptr[0]) < 0 or int(ptr[-1]) > idx.numel():
        raise ConfigError(f"{name}: indptr must be non-decreasing and within indices (length {idx.numel()})")
    cols = idx[int(ptr[0]) : int(ptr[-1])]
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= num_items):
        raise ConfigError(f"{name}: item ids must lie in [0, {num_items})")
    row_ids = torch.repeat_interleave(torch.arange(rows, device=device), counts)
    return row_ids, cols


def exclusion_mask(exclude: object, rows: int, num_items: int, device: torch.device) -> torch.Tensor | None:
    """``exclude`` (bool mask ``[B, N]`` or CSR pair ``(indptr, indices)``) as a bool mask, or None."""
    if exclude is None:
        return None
    if isinstance(exclude, tuple):
        if len(exclude) != 2:
            raise ConfigError("exclude: a CSR exclusion is the pair (indptr, indices)")
        r, c = csr_pairs(exclude[0], exclude[1], rows, num_items, device, "exclude")
        mask = torch.zeros(rows, num_items, dtype=torch.bool, device=device)
        mask[r, c] = True
        return mask
    mask = as_tensor(exclude, "exclude", device)
    if mask.dtype != torch.bool:
        raise ConfigError(f"exclude: expected a bool mask [B, N] or a CSR pair (indptr, indices), got {mask.dtype}")
    if tuple(mask.shape) != (rows, num_items):
        raise ConfigError(f"exclude: mask shape {tuple(mask.shape)} does not match scores ({rows}, {num_items})")
    return mask


def _distinct_sorted(lists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted, and a mask of its distinct valid ids (first of each run of equal ids)."""
    vals, _ = torch.sort(lists, dim=1)
    keep = vals >= 0
    keep[:, 1:] &= vals[:, 1:] != vals[:, :-1]
    return vals, keep


def set_overlap(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(|A ∩ B|, |A|, |B|)`` per row as ``float64 [B]``, over distinct valid ids (one sort per side)."""
    sa, keep_a = _distinct_sorted(a)
    sb, keep_b = _distinct_sorted(b)
    if sb.shape[1] == 0 or sa.shape[1] == 0:
        inter = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
    else:
        idx = torch.searchsorted(sb, sa).clamp_(max=sb.shape[1] - 1)
        inter = ((torch.gather(sb, 1, idx) == sa) & keep_a).sum(1).to(torch.float64)
    return inter, keep_a.sum(1).to(torch.float64), keep_b.sum(1).to(torch.float64)
