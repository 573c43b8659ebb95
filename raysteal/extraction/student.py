"""Training a student sequential recommender on the black box's answers for queried prefixes.

:func:`train_student` is the one loop every sequential extraction recipe uses (DFME, BAHSD,
Zhu et al.'s PTQ on sequences): shuffled batches of sequences, every queried prefix of a batch
(or ``positions_per_sequence`` of them) as one :class:`StudentBatch`, an objective, AdamW, bf16
autocast on a GPU, deterministic on a CPU for a given seed.

How prefixes are scored (:func:`student_hidden`):

* **causal students** (SASRec, GRU4Rec, NARM, STAMP): one forward pass over the whole sequence;
  the hidden state at column ``t`` sees only items ``<= t``, so it predicts the item after the
  prefix ending at ``t``: exactly what ``lists[n, t]`` answers (Yue et al.'s code instead runs one
  forward pass per prefix — the main reason it needs 325 s per epoch).
* **non-causal students** (BERT4Rec: bidirectional attention, and a ``[MASK]`` appended by its
  ``prepare``): each selected prefix is scored separately, as its own left-padded sequence, in
  :data:`PREFIX_BUCKETS` forward passes of similar-length prefixes (correct, and ``L`` times
  dearer per prefix: use ``positions_per_sequence``).

Students exclude nothing while training; at evaluation they exclude the input's items like the
oracle (:mod:`raysteal.extraction.evaluate`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.extraction.losses import ranking_loss_scored, scored_items
from raysteal.extraction.training_state import load_training_state, save_training_state
from raysteal.extraction.types import ExtractionSet, StudentBatch, StudentObjective
from raysteal.models.base import PAD, ModelConfig
from raysteal.models.sequence_layers import SequentialRecommender, last_positions, shift_items
from raysteal.models.sequence_samplers import leading_padding
from raysteal.training.step import bf16_autocast, training_step
from raysteal.training.trainer import child_seeds, private_rng, seeded_model, training_device

_NEGATIVE_ROUNDS = 4
"""Redraw rounds for negatives that hit the list; any left after them are masked (-1)."""

PER_VIEW_PREFIX = "probe_"
"""Extras named so are laid out per probe view, not per position: realignment leaves them alone."""

PREFIX_BUCKETS = 8
"""Length groups a non-causal student's prefixes are scored in (:func:`student_hidden`)."""


# ------------------------------------------------------------------ scoring prefixes
def scores_in_one_pass(student: SequentialRecommender) -> bool:
    """Whether ``student`` can score all prefixes of a sequence in one forward pass: causal
    (no bidirectional encoder) and using the shared ``prepare`` (no appended tokens)."""
    encoder = getattr(student, "encoder", None)
    causal = bool(getattr(encoder, "causal", True))
    return causal and type(student).prepare is SequentialRecommender.prepare


def first_columns(inputs: torch.Tensor) -> torch.Tensor:
    """``[B]``: the column of each row's first item (``L`` for an all-padding row)."""
    valid = inputs != PAD
    first = valid.to(torch.int8).argmax(1)
    return torch.where(valid.any(1), first, torch.full_like(first, inputs.shape[1]))


def prefix_rows(inputs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``[P, W]``: prefix ``inputs[rows[p], :cols[p] + 1]`` of each pair, right-aligned, left-padded
    with ``PAD`` (``W`` = the longest prefix span)."""
    if rows.numel() == 0:
        return inputs.new_full((0, 1), PAD)
    first = first_columns(inputs)
    width = int((cols - first[rows]).max()) + 1
    src = cols[:, None] - (width - 1 - torch.arange(width, device=inputs.device))[None, :]
    gathered = inputs[rows[:, None], src.clamp(min=0)]
    return torch.where(src >= 0, gathered, torch.full_like(gathered, PAD))


def prefix_buckets(spans: torch.Tensor, buckets: int) -> list[torch.Tensor]:
    """Indices of ``spans`` (prefix lengths) cut into at most ``buckets`` groups of similar
    length, shortest first: each group is padded only to its own longest prefix."""
    order = spans.argsort(stable=True)
    return [chunk for chunk in order.tensor_split(max(1, min(buckets, spans.numel()))) if chunk.numel()] or [order]


def student_hidden(student: SequentialRecommender, batch: StudentBatch, buckets: int = PREFIX_BUCKETS) -> torch.Tensor:
    """Hidden states ``[P, d]`` predicting the item after each selected prefix of ``batch``.

    A non-causal student scores its prefixes in ``buckets`` forward passes of similar-length
    prefixes (the same states as one pass padded to the longest; less padding to attend over)."""
    if scores_in_one_pass(student):
        return student.represent(shift_items(batch.inputs), batch.rows, batch.cols)
    first = first_columns(batch.inputs)
    parts, places = [], []
    for group in prefix_buckets(batch.cols - first[batch.rows], buckets):
        indices = student.prepare(prefix_rows(batch.inputs, batch.rows[group], batch.cols[group]))
        rows, cols = last_positions(indices)
        parts.append(student.represent(indices, rows, cols))
        places.append(group)
    hidden = torch.cat(parts)
    return hidden[torch.cat(places).argsort()]


def student_scores(student: SequentialRecommender, batch: StudentBatch) -> torch.Tensor:
    """Full-catalogue student scores ``[P, num_items]`` of each selected prefix (nothing excluded)."""
    return student.logits(student_hidden(student, batch))


def student_scores_at(student: SequentialRecommender, batch: StudentBatch, items: torch.Tensor) -> torch.Tensor:
    """Student scores ``[P, m]`` of the items ``items [P, m]`` (ids ``>= 0``) of each selected
    prefix only: ``student_scores(student, batch).gather(1, items)``, without forming the
    full-catalogue scores where the student can (SASRec on a CPU; see ``scores_at``)."""
    return student.scores_at(student_hidden(student, batch), items)


# ------------------------------------------------------------------ the DFME objective
@dataclass(frozen=True)
class DFMEObjective:
    """Yue et al.'s ranking loss (:func:`raysteal.extraction.losses.ranking_loss`) on every prefix.

    Only the listed items' and the negatives' scores are computed (:func:`student_scores_at`): on
    a CPU, 200 of ML-1M's 3,706 items per prefix; the loss and gradients are those of the
    full-catalogue scores (``tests/test_extraction_dfme.py``)."""

    margin: float = 0.5

    def __call__(self, student: SequentialRecommender, batch: StudentBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        k = batch.lists.shape[1]
        scores = student_scores_at(student, batch, scored_items(batch.lists, batch.negatives)).float()
        return ranking_loss_scored(scores[:, :k], scores[:, k:], batch.lists.long(), batch.negatives.long(), self.margin)


def dfme_objective(margin: float = 0.5) -> StudentObjective:
    """The DFME objective: margin hinge over consecutive ranked pairs plus list vs negatives."""
    if not margin >= 0.0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    return DFMEObjective(float(margin))


# ------------------------------------------------------------------ batches
def keep_positions(queried: torch.Tensor, keep: int | None, generator: torch.Generator) -> torch.Tensor:
    """``queried [B, L]`` reduced to ``keep`` uniformly chosen queried prefixes per row."""
    if keep is None or keep >= queried.shape[1]:
        return queried
    noise = torch.rand(queried.shape, generator=generator, device=queried.device).masked_fill_(~queried, -1.0)
    top = noise.topk(keep, dim=1)
    chosen = torch.zeros_like(queried).scatter_(1, top.indices, top.values >= 0)
    return chosen & queried


def sample_negatives(lists: torch.Tensor, count: int, num_items: int, generator: torch.Generator) -> torch.Tensor:
    """``int64 [P, count]`` uniform items not in each row of ``lists [P, k]`` (collisions are
    redrawn a few rounds, re-checking only the redrawn entries; a negative still in the list
    after them is set to ``-1``, i.e. masked)."""
    rows = lists.shape[0]
    negatives = torch.randint(0, num_items, (rows, count), generator=generator, device=lists.device)
    if count == 0 or rows == 0 or lists.shape[1] == 0:
        return negatives
    hit_rows, hit_cols = torch.nonzero(listed(lists.long(), negatives, num_items), as_tuple=True)
    narrow = lists.int()  # the redrawn entries are checked against their rows, 4 bytes an item
    for _ in range(_NEGATIVE_ROUNDS):
        if hit_rows.numel() == 0:
            return negatives
        draws = torch.randint(0, num_items, (hit_rows.numel(),), generator=generator, device=lists.device)
        negatives[hit_rows, hit_cols] = draws
        still = (narrow.index_select(0, hit_rows) == draws.int()[:, None]).any(1)
        hit_rows, hit_cols = hit_rows[still], hit_cols[still]
    negatives[hit_rows, hit_cols] = -1
    return negatives


_LISTED_ROWS = 2048
"""Rows of the membership bitmap :func:`listed` marks at a time (7.6 MB for ML-1M)."""


def listed(lists: torch.Tensor, values: torch.Tensor, num_items: int) -> torch.Tensor:
    """``bool [P, q]``: whether ``values[p, j]`` (items in ``[0, num_items)``) is in ``lists[p]``
    (``-1`` = padding, never a match). Each block of rows marks its lists in a bitmap over the
    catalogue, reads the values there and unmarks them: no sort, no search, the bitmap zeroed once."""
    rows = lists.shape[0]
    out = torch.empty(values.shape, dtype=torch.bool, device=values.device)
    if out.numel() == 0:
        return out
    slots = torch.where((lists < 0) | (lists >= num_items), num_items, lists)  # padding (and strays): a spare column
    marks = torch.zeros((min(_LISTED_ROWS, rows), num_items + 1), dtype=torch.bool, device=values.device)
    for lo in range(0, rows, _LISTED_ROWS):
        hi = min(lo + _LISTED_ROWS, rows)
        block = marks[: hi - lo].scatter_(1, slots[lo:hi], True)
        torch.gather(block, 1, values[lo:hi], out=out[lo:hi])
        block.scatter_(1, slots[lo:hi], False)
    return out


def realign_shifts(queried: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """``int64 [B]`` right shifts: a ``share`` of the rows is cut at a uniformly chosen queried
    prefix, shifted so that prefix ends in the last column (0 for the other rows)."""
    rows, width = queried.shape
    noise = torch.rand((rows, width), generator=generator, device=queried.device).masked_fill_(~queried, -1.0)
    end = noise.argmax(dim=1)
    cut = torch.rand(rows, generator=generator, device=queried.device) < share
    return torch.where(cut & queried.any(1), width - 1 - end, torch.zeros_like(end))


def shift_right(values: torch.Tensor, shift: torch.Tensor, fill: int | bool) -> torch.Tensor:
    """Shift each row of ``values [B, L, ...]`` right by ``shift[b]`` columns, ``fill`` entering on the left."""
    width = values.shape[1]
    src = torch.arange(width, device=values.device)[None, :] - shift[:, None]
    index = src.clamp(min=0).view(*src.shape, *([1] * (values.ndim - 2))).expand_as(values)
    keep = (src >= 0).view(*src.shape, *([1] * (values.ndim - 2)))
    return torch.where(keep, values.gather(1, index), torch.full_like(values, fill))


def per_position(name: str, value: torch.Tensor, width: int) -> bool:
    """Whether extra ``name`` is laid out per prefix position (second axis = the sequence axis);
    ``probe_*`` extras are per probe view (:func:`raysteal.extraction.probing.probe_answer_extras`)."""
    return value.ndim >= 2 and value.shape[1] == width and not name.startswith(PER_VIEW_PREFIX)


class _BatchMaker:
    """Cuts :class:`StudentBatch` es out of an :class:`ExtractionSet` held on the device."""

    def __init__(
        self, data: ExtractionSet, device: torch.device, num_items: int, num_negatives: int, positions: int | None, realign: float = 0.0
    ):
        self.sequences = torch.as_tensor(np.ascontiguousarray(data.sequences), dtype=torch.int64).to(device)
        self.lists = torch.as_tensor(np.ascontiguousarray(data.lists)).to(device)
        self.queried = self.lists[..., 0] >= 0
        self.extras = {name: torch.as_tensor(np.ascontiguousarray(value)) for name, value in data.extras.items()}
        self.width = int(self.sequences.shape[1])
        self.device = device
        self.num_items = num_items
        self.num_negatives = num_negatives
        self.positions = positions
        self.realign = float(realign)

    def __call__(self, ids: torch.Tensor, generator: torch.Generator) -> StudentBatch | None:
        inputs, queried = self.sequences[ids], self.queried[ids]
        cpu_ids = ids.cpu()
        extras = {name: value[cpu_ids].to(self.device, non_blocking=True) for name, value in self.extras.items()}
        shift = None
        if self.realign > 0.0:
            shift = realign_shifts(queried, self.realign, generator)
            inputs, queried = shift_right(inputs, shift, PAD), shift_right(queried, shift, False)
            extras = {
                name: shift_right(value, shift, 0) if per_position(name, value, self.width) else value for name, value in extras.items()
            }
        keep = keep_positions(queried, self.positions, generator)
        rows, cols = torch.nonzero(keep, as_tuple=True)
        if rows.numel() == 0:
            return None
        source_cols = cols if shift is None else cols - shift[rows]
        lists = self.lists[ids[rows], source_cols].long()
        negatives = sample_negatives(lists, self.num_negatives, self.num_items, generator)
        lead = leading_padding(inputs)
        return StudentBatch(ids, inputs[:, lead:].contiguous(), rows, cols - lead, lists, negatives, extras)


# ------------------------------------------------------------------ the loop
def _check_student(student: Any, data: ExtractionSet) -> None:
    if not isinstance(student, SequentialRecommender):
        raise ConfigError(f"student must be a sequential recommender, got {type(student).__name__}")
    if data.sequences.ndim != 2 or data.lists.ndim != 3 or data.lists.shape[:2] != data.sequences.shape:
        raise ConfigError(f"ExtractionSet shapes disagree: sequences {data.sequences.shape}, lists {data.lists.shape}")
    top = max(int(data.sequences.max(initial=-1)), int(data.lists.max(initial=-1)))
    if top >= student.num_items:
        raise ConfigError(f"the extraction data holds item {top} but the student knows {student.num_items} items")
    width, max_len = data.sequences.shape[1], int(student.config.max_len)
    if scores_in_one_pass(student) and width > max_len:
        raise ConfigError(f"student.max_len ({max_len}) is shorter than the extraction sequences ({width}); raise student.max_len")


def _mean(total: Any, steps: int) -> float:
    value = float(total) if not isinstance(total, torch.Tensor) else float(total.detach().float())
    return value / max(steps, 1)


def _check_options(*, realign: float, epochs: int, batch_size: int, num_negatives: int, positions_per_sequence: int | None) -> None:
    if not 0.0 <= realign <= 1.0:
        raise ConfigError(f"realign must lie in [0, 1], got {realign}")
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_negatives < 0:
        raise ConfigError(f"num_negatives must be >= 0, got {num_negatives}")
    if positions_per_sequence is not None and positions_per_sequence < 1:
        raise ConfigError(f"positions_per_sequence must be >= 1 or None, got {positions_per_sequence}")


def _run_epoch(
    student: SequentialRecommender,
    objective: StudentObjective,
    step: Callable[..., Any],
    make_batch: _BatchMaker,
    generator: torch.Generator,
    batch_size: int,
) -> tuple[dict[str, float], int, int]:
    """One pass over the sequences in a fresh shuffled order, a ``step(loss_fn)`` per batch: the
    epoch's stats (mean loss and objective logs, seconds, prefixes), its steps and its prefixes."""
    started = time.perf_counter()
    student.train()
    total = torch.zeros((), device=make_batch.device)
    logs: dict[str, Any] = {}
    n_steps = n_prefixes = 0
    order = torch.randperm(len(make_batch.sequences), generator=generator, device=make_batch.device)
    for lo in range(0, len(order), batch_size):
        batch = make_batch(order[lo : lo + batch_size], generator)
        if batch is None:
            continue
        loss, parts = step(functools.partial(objective, student, batch))
        total += loss.detach().float()
        for name, value in parts.items():
            logs[name] = logs.get(name, 0.0) + (value.detach().float() if isinstance(value, torch.Tensor) else float(value))
        n_steps += 1
        n_prefixes += int(batch.rows.numel())
    stats = {"loss": _mean(total, n_steps), **{name: _mean(v, n_steps) for name, v in logs.items()}}
    stats.update(epoch_seconds=time.perf_counter() - started, prefixes=float(n_prefixes))
    return stats, n_steps, n_prefixes


def seeded_student(config: dict[str, Any] | ModelConfig, num_items: int, seed: int) -> SequentialRecommender:
    """A fresh student with no users (``seeded_model``, initialisation drawn from ``seed``); the
    extraction configs check that ``config`` names a sequential model."""
    student = seeded_model(config, 0, num_items, seed)
    if not isinstance(student, SequentialRecommender):
        raise ConfigError(f"the student must be a sequential model, got {student.name!r}")
    return student


def train_student(
    student: SequentialRecommender,
    data: ExtractionSet,
    objective: StudentObjective,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    positions_per_sequence: int | None = None,
    num_negatives: int = 100,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, dict[str, Any]], bool | None] | None = None,
    progress: bool = False,
    amp: bool = True,
    grad_clip: float | None = 5.0,
    realign: float = 0.0,
    state_path: str | os.PathLike | None = None,
    restart_if_unusable: bool = False,
) -> dict[str, Any]:
    """Fit ``student`` to ``data`` by minimising ``objective`` with AdamW; returns training stats.

    Each epoch shuffles the sequences; a batch of ``batch_size`` sequences carries all their
    queried prefixes (or ``positions_per_sequence`` random ones per sequence), ``num_negatives``
    uniform items outside each prefix's list, and ``data.extras`` sliced by sequence. The
    objective may log floats or 0-d tensors (averaged per epoch, synchronised once per epoch).
    ``on_epoch(epoch, stats)`` (1-based; the student in eval mode) is called after each epoch with
    ``{"loss", <objective logs>, "epoch_seconds", "prefixes"}``; returning ``True`` stops training
    (Ray Tune / ASHA). All randomness derives from ``seed``; the global torch RNG is untouched.

    ``realign`` (0..1): the share of each batch's sequences cut at a random queried prefix and
    shifted right so that it ends in the last column, so that students with positions counted from
    the right (SASRec) also see prefixes where shorter real sequences put them (extras indexed by
    position shift with them; the prefixes after a cut sit that step out).

    ``state_path``: the whole training state is written there after every epoch
    (:mod:`raysteal.extraction.training_state`) and training goes on after a saved epoch
    (``resumed_epoch``), ending where an uninterrupted run would. A state made with another seed,
    data size, optimiser, device type, AMP, clipping or objective (its ``repr``) is a
    ``ConfigError``, or with ``restart_if_unusable`` ignored with a warning.
    """
    _check_options(
        realign=realign, epochs=epochs, batch_size=batch_size, num_negatives=num_negatives, positions_per_sequence=positions_per_sequence
    )
    _check_student(student, data)
    dev = training_device(device)
    student.to(dev)
    use_amp = bf16_autocast(amp, dev)
    sample_seed, rng_seed = child_seeds(seed, 2)
    generator = torch.Generator(device=dev).manual_seed(sample_seed)
    make_batch = _BatchMaker(data, dev, student.num_items, num_negatives, positions_per_sequence, realign)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    step = functools.partial(training_step, optimizer, params, device=dev, amp=use_amp, grad_clip=grad_clip)
    state_key = _state_key(
        seed=seed,
        data=data,
        batch=batch_size,
        lr=lr,
        wd=weight_decay,
        positions=positions_per_sequence,
        negatives=num_negatives,
        realign=realign,
        parameters=sum(p.numel() for p in params),
        device=dev.type,
        amp=use_amp,
        grad_clip=grad_clip,
        objective=objective,
    )  # what a saved state must have been made with
    stopped = False
    started = time.perf_counter()
    with private_rng(rng_seed, dev):
        so_far = load_training_state(state_path, state_key, student, optimizer, generator, dev, restart_if_unusable)
        resumed_epoch = so_far.epoch
        for epoch in range(so_far.epoch + 1, epochs + 1):
            stats, n_steps, n_prefixes = _run_epoch(student, objective, step, make_batch, generator, batch_size)
            if not math.isfinite(stats["loss"]):
                raise ConfigError(f"student training diverged (loss {stats['loss']}); lower lr (now {lr})")
            so_far.add_epoch(epoch, stats, n_steps, n_prefixes)
            if progress:
                print(f"epoch {epoch}/{epochs} " + " ".join(f"{k}={v:.4g}" for k, v in stats.items()), file=sys.stderr)
            student.eval()
            # the student rides along (eval mode) so a caller can score it, e.g. Ray Tune's probe
            stopped = on_epoch is not None and on_epoch(epoch, {**stats, "model": student}) is True
            if state_path is not None:
                save_training_state(state_path, state_key, so_far, student, optimizer, generator, dev)
            if stopped:
                break
    student.eval()
    return _training_stats(so_far, resumed_epoch, time.perf_counter() - started, stopped, dev, use_amp)


def _state_key(*, seed: int, data: ExtractionSet, objective: StudentObjective, **settings: Any) -> str:
    """What a saved training state must have been made with (:func:`train_student`'s ``state_path``)."""
    head = f"seed={seed} sequences={data.num_sequences} queries={data.queries} "
    return head + " ".join(f"{name}={value}" for name, value in settings.items()) + f" objective={objective!r}"


def _training_stats(so_far, resumed_epoch: int, seconds: float, stopped: bool, dev: torch.device, amp: bool) -> dict[str, Any]:
    """:func:`train_student`'s returned stats."""
    history = so_far.history
    return {
        "epochs_run": len(history),
        "resumed_epoch": resumed_epoch,
        "steps": so_far.steps,
        "prefixes": so_far.prefixes,
        "train_seconds": seconds,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "stopped_early": stopped,
        "history": history,
        "device": str(dev),
        "amp": amp,
    }
