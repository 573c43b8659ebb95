"""GRO: train the target so that its top-k lists teach a clone badly (Zhang et al., "Defense Against
Model Extraction Attacks on Recommender Systems", WSDM 2024, arXiv 2310.16335).

The defender simulates the thief. Beside the target it trains a *student*, which learns from the
target's top-k lists the way a data-free extraction does (Yue et al., RecSys 2021: a margin
ranking loss over consecutive listed items plus listed items against sampled negatives). The
lists are not differentiable, so GRO writes each one as a *swap matrix* ``A [k, num_items]``, row
``r`` one-hot at the item ranked ``r``: the student's scores of the listed items are ``A @ s`` and
the student's loss has a gradient with respect to ``A``. Entry ``(r, j)`` of that gradient says
how much the student's loss would grow if item ``j`` took rank ``r``. For each rank, the item
with the largest entry is the swap that misleads the student most, and the *swap loss* trains the
target to score it above the item it ranks there now: ``max(0, t[listed_r] - t[swap_r])``, which
is ``(A - A') t`` with ``A'`` the swapped matrix. The target minimises its own loss plus
``strength`` (the paper's lambda) times the swap loss, while the student keeps learning from the
lists; both take one step per batch.

The student's negatives term hinges every listed item against every sampled negative of its list
(:func:`all_pairs_hinge_mean`); the authors' released trainer pairs each listed item with one
negative, as Yue et al. do.

The gradient of the loss through ``A @ s`` is the outer product ``g s^T`` (``g``: the gradient
with respect to the student's scores of the listed items), so its row maximum is the student's
top-scored item where ``g > 0`` and its lowest-scored item where ``g < 0``; this module takes that
closed form rather than building the ``[N, k, num_items]`` matrix. A rank with ``g = 0`` (no
active hinge) asks for no swap.

Sequential next-item targets (SASRec, GRU4Rec, NARM, STAMP; the paper's setting): the student
reads the target's training windows, at every predicting position (``positions: all``, as the
paper's code) or at the last one of each window (``last``, cheaper). Collaborative targets (BPR,
LMF, NeuMF; carried over from the paper): the queries are the distinct users of each training
batch, and the student (a collaborative model) learns their lists, as Zhu et al.'s clones learn
users' lists. The student's passes and the target's extra pass run on their own random streams,
so ``strength: 0`` trains bit-for-bit the target plain training gives on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, field_validator

from raysteal.config_numbers import NumbersAreNotBooleans, validated_section
from raysteal.errors import ConfigError, UnknownNameError
from raysteal.models.base import ModelConfig, Recommender, make_config, model_class
from raysteal.models.sequence_layers import SequentialRecommender, shift_items, target_positions
from raysteal.training.config import TrainConfig
from raysteal.training.trainer import seeded_model

MAX_STRENGTH = 1000.0
"""Upper end of ``strength``: the paper's best values lie in 0.001 .. 1."""


class GROConfig(NumbersAreNotBooleans):
    """GRO as a target training option: how strongly the target misleads a simulated student."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strength: float = Field(ge=0.0, le=MAX_STRENGTH, description="lambda: weight of the swap loss beside the target's own loss")
    k: int = Field(100, ge=2, le=1000, description="length of the target lists the student learns from (GRO and Yue et al.: 100)")
    student: str | None = Field(
        None, description="the simulated clone's architecture, a sequential model name (default: the target's own config)"
    )
    margin: float = Field(0.5, ge=0.0, description="margin of the student's ranking loss (Yue et al.: 0.5)")
    student_lr: float | None = Field(None, gt=0.0, description="the student's AdamW learning rate (default: the target's lr)")
    positions: Literal["all", "last"] = Field(
        "all", description="where the student reads the target's lists: every predicting position of a window, or its last"
    )

    @field_validator("student")
    @classmethod
    def _next_item_student(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            problem = gro_capable(value)
        except UnknownNameError as err:
            raise ValueError(str(err).strip('"')) from None
        if problem is not None:
            raise ValueError(problem)
        return model_class(value).name


def make_gro_config(config: dict[str, Any] | GROConfig) -> GROConfig:
    """Validate a mapping into a :class:`GROConfig`; a bad key or value is a one-line ``ConfigError``."""
    return validated_section(GROConfig, config, "gro", "strength, k, student, ...")


def gro_capable(name: str) -> str | None:
    """Why the registered model ``name`` cannot take part in GRO, or ``None`` when it can: a
    collaborative model, or a sequential one trained on next-item windows (its scores readable at
    any position of a window)."""
    cls = model_class(name)
    if not cls.sequential:
        return None
    if not issubclass(cls, SequentialRecommender) or cls.make_sampler is not SequentialRecommender.make_sampler:
        return f"{cls.name!r} is not trained on next-item windows (GRO reads the target's lists at window positions)"
    return None


def student_config(config: GROConfig, target: ModelConfig) -> ModelConfig:
    """The student's model config: the target's own, or the named model at its defaults (reading
    the target's window, ``max_len``, when sequential); a student of the other kind than the
    target (user ids vs. sequences) is a ``ConfigError``."""
    if config.student is None:
        return target
    sequential = model_class(target.model).sequential
    if model_class(config.student).sequential != sequential:
        kind = "sequential" if sequential else "collaborative"
        raise ConfigError(f"gro: student {config.student!r} cannot read the queries of a {kind} target {target.model!r}")
    return make_config({"model": config.student, **({"max_len": getattr(target, "max_len", 200)} if sequential else {})})


def student_ranking_loss(listed: torch.Tensor, negatives: torch.Tensor, margin: float) -> torch.Tensor:
    """Yue et al.'s extraction loss on one batch of lists: ``listed [N, k]`` the student's scores of
    the target's items in rank order, ``negatives [N, m]`` of sampled unlisted items. Hinge with
    ``margin`` over the ``k - 1`` consecutive pairs plus every listed item against every negative
    (:func:`all_pairs_hinge_mean`)."""
    pairs = F.relu(margin - (listed[:, :-1] - listed[:, 1:])).mean()
    return pairs + all_pairs_hinge_mean(listed, negatives, margin)


class _AllPairsHinge(torch.autograd.Function):
    """``mean_{n,i,j} relu(margin - (pos[n, i] - neg[n, j]))`` from sorted rows: for each ``pos[n, i]``
    the negatives above ``pos[n, i] - margin`` are a suffix of its row's sorted negatives, so the
    sum is their count times ``margin - pos[n, i]`` plus their suffix sum; backward, ``pos[n, i]``
    gets minus that count and ``neg[n, j]`` the count of ``pos[n, i] < neg[n, j] + margin``, both
    over ``N k m``. ``O(N (k + m) log m)`` where the ``[N, k, m]`` hinge tensor costs ``N k m``."""

    @staticmethod
    def forward(ctx, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:  # noqa: D102
        rows, width = neg.shape
        ordered = neg.sort(dim=1).values
        below = torch.searchsorted(ordered, pos - margin, right=True)  # negatives at or under pos - margin
        above = width - below  # negatives the hinge is active for, [N, k]
        suffix = torch.cat([ordered.flip(1).cumsum(1).flip(1), ordered.new_zeros(rows, 1)], dim=1)
        total = (above.to(pos.dtype) * (margin - pos) + suffix.gather(1, below)).sum()
        ctx.margin = margin
        ctx.save_for_backward(pos, neg, above)
        return total / (pos.numel() * width)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):  # noqa: D102
        pos, neg, above = ctx.saved_tensors
        scale = grad_outputs[0] / (pos.numel() * neg.shape[1])
        grad_pos = grad_neg = None
        if ctx.needs_input_grad[0]:
            grad_pos = -above.to(pos.dtype) * scale
        if ctx.needs_input_grad[1]:
            under = torch.searchsorted(pos.sort(dim=1).values, neg + ctx.margin)  # pos strictly under neg + margin
            grad_neg = under.to(neg.dtype) * scale
        return grad_pos, grad_neg, None


def all_pairs_hinge_mean(pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """``relu(margin - (pos[:, :, None] - neg[:, None, :])).mean()`` for ``pos [N, k]``, ``neg [N, m]``:
    the same value and gradients (to float rounding) without the ``[N, k, m]`` tensor
    (:class:`_AllPairsHinge`; ``benchmarks/gro_step.py``)."""
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[0] != neg.shape[0] or neg.shape[1] == 0 or pos.shape[1] == 0:
        return F.relu(margin - (pos[:, :, None] - neg[:, None, :])).mean()
    return _AllPairsHinge.apply(pos.contiguous(), neg.contiguous(), float(margin))


def swap_items(grad: torch.Tensor, student_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each rank, the item whose swap into it raises the student's loss most (the row maximum
    of the swap matrix's gradient ``grad[n, r] * s[n, j]``): ``(items [N, k], active [N, k])``,
    ``active`` false where the gradient is zero (no swap asked)."""
    top = student_scores.argmax(dim=1, keepdim=True)
    bottom = student_scores.argmin(dim=1, keepdim=True)
    items = torch.where(grad > 0, top, bottom)
    return items, grad != 0


def swap_loss(target_scores: torch.Tensor, listed: torch.Tensor, swaps: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """GRO's swap loss ``mean(max(0, (A - A') t))``: the target's score of each listed item above
    the item that would mislead the student at that rank (zero where no swap is asked)."""
    gap = target_scores.gather(1, listed) - target_scores.gather(1, swaps)
    return (F.relu(gap) * active).mean()


def in_rows(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``bool [N, m]``: whether ``values[n, j]`` is one of ``rows[n]`` (``rows [N, k]``), by a binary
    search of each sorted row: ``(values[:, :, None] == rows[:, None, :]).any(-1)`` without the
    ``[N, m, k]`` comparison."""
    if rows.shape[1] == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    ordered = rows.sort(dim=1).values
    at = torch.searchsorted(ordered, values).clamp_(max=rows.shape[1] - 1)
    return ordered.gather(1, at) == values


class _RandomStream:
    """A private torch RNG stream (dropout) for work that must not shift the trainer's own."""

    def __init__(self, seed: int, device: torch.device):
        self.devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self.devices):
            torch.manual_seed(seed)
            self.cpu = torch.get_rng_state()
            self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, d)
            yield
            self.cpu = torch.get_rng_state()
            self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]


class GROObjective:
    """The target's training loss under GRO, one call per batch: steps the student on the target's
    lists, then returns ``target loss + strength * swap loss`` for the trainer to step the target.

    ``student`` must already sit on ``device``; ``grad_clip`` clips the student's gradients as the
    trainer clips the target's. ``summary()`` gives the mean swap and student losses so far."""

    def __init__(
        self,
        config: GROConfig,
        student: Recommender,
        *,
        lr: float,
        seed: int,
        device: torch.device,
        grad_clip: float | None = None,
    ):
        self.config, self.student, self.grad_clip = config, student, grad_clip
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
        self.stream = _RandomStream(seed, device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._swap = torch.zeros((), device=device)
        self._student = torch.zeros((), device=device)
        self.steps = 0

    def _queries(self, batch: dict[str, torch.Tensor]) -> Callable[[Recommender], torch.Tensor]:
        """How a model (target or student) scores this batch's queries: ``[N, num_items]``."""
        if "targets" not in batch:  # a collaborative batch: its distinct users
            users = torch.unique(batch["users"])
            return lambda model: model.score(users)
        indices = shift_items(batch["inputs"])
        if self.config.positions == "last":
            rows = torch.arange(indices.shape[0], device=indices.device)
            cols = torch.full_like(rows, indices.shape[1] - 1)
        else:
            rows, cols = target_positions(batch["targets"])

        def at_positions(model: Recommender) -> torch.Tensor:
            assert isinstance(model, SequentialRecommender)
            return model.logits(model.represent(indices, rows, cols))

        return at_positions

    def _negatives(self, listed: torch.Tensor, num_items: int) -> torch.Tensor:
        """``[N, k]`` items drawn uniformly; a draw that is listed is drawn once more (a rare second hit stays)."""
        first = torch.randint(0, num_items, listed.shape, device=listed.device, generator=self.generator)
        second = torch.randint(0, num_items, listed.shape, device=listed.device, generator=self.generator)
        return torch.where(in_rows(listed, first), second, first)

    def student_step(self, scores_of: Callable[[Recommender], torch.Tensor], listed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One AdamW step of the student on the target's lists ``listed [N, k]`` of the queries
        ``scores_of`` reads; returns the gradient of its loss with respect to its scores of the
        listed items and its scores (both detached), for :func:`swap_items`."""
        self.student.train()
        scores = scores_of(self.student)
        picked = scores.gather(1, listed)
        negatives = scores.gather(1, self._negatives(listed, scores.shape[1]))
        loss = student_ranking_loss(picked, negatives, self.config.margin)
        self.optimizer.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(loss, picked, retain_graph=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.grad_clip)
        self.optimizer.step()
        self._student += loss.detach().float()
        return grad, scores.detach()

    def __call__(self, model: Recommender, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target's loss on ``batch`` (a batch of its own sampler) under GRO."""
        own = model.loss(batch)
        scores_of = self._queries(batch)
        k = min(self.config.k, model.num_items - 1)
        with self.stream.active():
            target_scores = scores_of(model)
            listed = target_scores.detach().topk(k, dim=1).indices
            grad, student_scores = self.student_step(scores_of, listed)
        swaps, active = swap_items(grad, student_scores)
        swap = swap_loss(target_scores, listed, swaps, active)
        self._swap += swap.detach().float()
        self.steps += 1
        return own + self.config.strength * swap

    def summary(self) -> dict[str, float]:
        """Mean swap loss and student loss over the steps taken (one sync)."""
        n = max(self.steps, 1)
        return {"steps": self.steps, "swap_loss": float(self._swap) / n, "student_loss": float(self._student) / n}


def gro_objective(
    config: GROConfig,
    target: ModelConfig,
    train: TrainConfig,
    num_users: int,
    num_items: int,
    *,
    seed: int,
    device: torch.device,
) -> GROObjective:
    """The objective :func:`raysteal.training.fit` minimises for a GRO target: a fresh student
    (:func:`student_config`) initialised from ``seed`` on ``device``, stepped with AdamW at
    ``student_lr`` (else the target's ``lr``) and the target's ``grad_clip``."""
    student_seed, stream_seed = (int(s >> np.uint64(1)) for s in np.random.SeedSequence([seed, 0x6E0]).generate_state(2, np.uint64))
    student = seeded_model(student_config(config, target), num_users, num_items, student_seed).to(device)
    lr = config.student_lr if config.student_lr is not None else train.lr
    return GROObjective(config, student, lr=lr, seed=stream_seed, device=device, grad_clip=train.grad_clip)
