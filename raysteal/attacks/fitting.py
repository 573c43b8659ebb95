"""Training steps shared by the recipes: fit a clone on interactions (Eq. 4) or on queried lists
(Eq. 10–12), batched on tensors through :func:`raysteal.training.loop.optimize`.

``AttackContext`` carries what every step needs (device, AMP, the run's seed) and collects the
``info`` each step logs. Every phase draws its randomness from its own named child of the run's
seed, so adding a phase never shifts another phase's random stream.

An optional epoch callback (``AttackContext.on_epoch``) sees every clone-training epoch (all
phases but the auxiliary model's), numbered across phases; it is the time axis of Ray Tune's ASHA.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from raysteal.attacks.clones import pair_scores
from raysteal.attacks.objectives import DataLoss, PairLoss, data_loss, stealing_loss
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import BatchSampler, Recommender
from raysteal.models.pair_samplers import PairSampler, SeenPairs
from raysteal.training.loop import optimize

EpochCallback = Callable[[int, dict[str, Any]], "bool | None"]
"""``on_epoch(epoch, stats) -> bool | None``: called after each clone-training epoch. ``epoch``
counts clone epochs across phases from 1; ``stats`` holds ``phase``, ``phase_epoch``, ``loss``
and ``model`` (the clone being trained). Returning ``True`` stops training: the current phase
ends and later phases are skipped; the clone is used as it is."""

AUXILIARY_PHASES = frozenset({"aux"})
"""Phases that train something other than the clone (not seen by the epoch callback)."""


class StopTraining(Exception):
    """Raised inside the optimisation loop when the epoch callback asks to stop."""

    def __init__(self, phase_epoch: int):
        super().__init__(phase_epoch)
        self.phase_epoch = phase_epoch


@dataclass
class AttackContext:
    """Per-run state: device, AMP, seed, the info dict the run reports, and the optional epoch
    callback (``epoch`` clone epochs seen so far; ``stopped`` once it asked to stop)."""

    seed: int
    device: torch.device
    amp: bool = False
    queries: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    on_epoch: EpochCallback | None = None
    epoch: int = 0
    stopped: bool = False
    answered_users: np.ndarray | None = None  # the known users whose lists the black box answered

    def child_seed(self, phase: str) -> int:
        """A 63-bit seed for ``phase``, derived from the run seed and the phase name."""
        ss = np.random.SeedSequence([int(self.seed), zlib.crc32(phase.encode())])
        return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))

    def generator(self, phase: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.child_seed(phase))

    def log(self, phase: str, values: dict[str, Any]) -> None:
        self.info[phase] = values

    def epoch_hook(self, phase: str, model: Recommender, inner: Callable[[int, float], None] | None) -> Callable[[int, float], None] | None:
        """The ``optimize`` callback of ``phase``: ``inner`` then, for clone phases, ``on_epoch``."""
        on_epoch = self.on_epoch
        if on_epoch is None or phase in AUXILIARY_PHASES:
            return inner

        def hook(phase_epoch: int, loss: float) -> None:
            if inner is not None:
                inner(phase_epoch, loss)
            self.epoch += 1
            stats = {"phase": phase, "phase_epoch": phase_epoch, "loss": loss, "model": model, "answered_users": self.answered_users}
            if on_epoch(self.epoch, stats) is True:
                self.stopped = True
                raise StopTraining(phase_epoch)

        return hook

    def run_phase(self, model: Recommender, phase: str, step: Callable[[Callable | None], Any], on_epoch: Callable | None) -> Any:
        """Run ``step(epoch_callback)`` (one ``optimize`` call) unless stopped; ``None`` if it stopped."""
        if self.stopped:
            self.log(phase, {"epochs": 0, "skipped": True})
            return None
        try:
            return step(self.epoch_hook(phase, model, on_epoch))
        except StopTraining as stop:
            model.eval()
            self.log(phase, {"epochs": stop.phase_epoch, "stopped": True})
            return None


def fit_interactions(
    model: Recommender,
    log: Interactions,
    ctx: AttackContext,
    phase: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    num_negatives: int,
    loss: DataLoss = "bpr",
    weight_decay: float = 0.0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """Train ``model`` on ``log`` (users 0..n-1 = the model's users) with the data objective
    (Eq. 4 BPR, or the pointwise logistic loss), ``num_negatives`` unseen items per positive."""
    if epochs == 0:
        return
    sampler = PairSampler(log, batch_size, num_negatives, reject_seen=True)

    def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = torch.cat([batch["pos"][:, None], batch["neg"]], dim=1)
        s = pair_scores(model, batch["users"], items)
        return data_loss(loss, s[:, 0], s[:, 1:])

    model.to(ctx.device)
    result = ctx.run_phase(
        model,
        phase,
        lambda hook: optimize(model, sampler, loss_fn, epochs, lr, ctx.generator(phase), ctx.device, ctx.amp, weight_decay, on_epoch=hook),
        on_epoch,
    )
    if result is not None:
        ctx.log(phase, result.summary())


class ListSampler(BatchSampler):
    """Epochs of ``{"users": [b], "lists": [b, K], "neg": [b, K, n]}`` over queried lists.

    ``neg`` holds ``n`` items per list item drawn uniformly from the catalogue and redrawn (a
    few vectorised rounds) where they are in the user's list or among its ``known`` items.
    """

    def __init__(
        self,
        users: np.ndarray,
        lists: np.ndarray,
        num_items: int,
        users_per_batch: int,
        num_negatives: int = 1,
        known: Interactions | None = None,
    ):
        if lists.ndim != 2 or len(users) != len(lists):
            raise ConfigError(f"need one list per user: {len(users)} users, lists of shape {lists.shape}")
        if num_negatives < 1 or users_per_batch < 1:
            raise ConfigError("num_negatives and users_per_batch must be >= 1")
        self.users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        self.lists = torch.as_tensor(np.asarray(lists, dtype=np.int64))
        self.num_items = int(num_items)
        self.users_per_batch = int(users_per_batch)
        self.num_negatives = int(num_negatives)
        u = np.repeat(np.asarray(users, dtype=np.int64), lists.shape[1])
        i = np.asarray(lists, dtype=np.int64).ravel()
        keys = [u[i >= 0] * self.num_items + i[i >= 0]]
        if known is not None:
            keys.append(known.users * np.int64(self.num_items) + known.items)
        self.seen = SeenPairs(torch.from_numpy(np.unique(np.concatenate(keys))), self.num_items)

    def __len__(self) -> int:
        return -(-len(self.users) // self.users_per_batch)

    def _negatives(self, users: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator, rounds: int = 6) -> torch.Tensor:
        owner = users[:, None, None].expand(shape).reshape(-1)
        flat = torch.randint(0, self.num_items, (owner.numel(),), generator=generator)
        redo = torch.nonzero(self.seen.contains(owner, flat)).view(-1)
        for _ in range(rounds):
            if redo.numel() == 0:
                break
            flat[redo] = torch.randint(0, self.num_items, (redo.numel(),), generator=generator)
            redo = redo[self.seen.contains(owner[redo], flat[redo])]
        return flat.view(shape)

    def epoch(self, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(len(self.users), generator=generator)
        for start in range(0, len(order), self.users_per_batch):
            rows = order[start : start + self.users_per_batch]
            users, lists = self.users[rows], self.lists[rows]
            neg = self._negatives(users, (len(rows), lists.shape[1], self.num_negatives), generator)
            yield {"users": users, "lists": lists, "neg": neg}


def fit_lists(
    model: Recommender,
    users: np.ndarray,
    lists: np.ndarray,
    ctx: AttackContext,
    phase: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    num_negatives: int,
    rank_loss: PairLoss,
    item_loss: PairLoss,
    margin: float,
    known: Interactions | None = None,
    weight_decay: float = 0.0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """Fit ``model`` to the target's ranked ``lists`` of ``users`` with the stealing loss (Eq. 10–12).

    A batch holds about ``batch_size`` list items (``batch_size // K`` users); the loss is each
    user's ``L_S^i`` averaged over the batch's users. ``known`` (the attacker's interactions)
    keeps the user's own items out of the negatives.
    """
    if epochs == 0 or len(users) == 0:
        ctx.log(phase, {"epochs": 0, "users": int(len(users))})
        return
    width = lists.shape[1]
    sampler = ListSampler(users, lists, model.num_items, max(1, batch_size // width), num_negatives, known)

    def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        lst, neg = batch["lists"], batch["neg"]
        b, k = lst.shape
        items = torch.cat([lst.clamp(min=0), neg.reshape(b, -1)], dim=1)
        s = pair_scores(model, batch["users"], items)
        per_user = stealing_loss(s[:, :k], s[:, k:].reshape(b, k, -1), lst >= 0, rank_loss, item_loss, margin)
        return per_user.mean()

    model.to(ctx.device)
    result = ctx.run_phase(
        model,
        phase,
        lambda hook: optimize(model, sampler, loss_fn, epochs, lr, ctx.generator(phase), ctx.device, ctx.amp, weight_decay, on_epoch=hook),
        on_epoch,
    )
    if result is not None:
        ctx.log(phase, {**result.summary(), "users": int(len(users))})
