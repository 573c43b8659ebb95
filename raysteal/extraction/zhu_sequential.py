"""Zhu et al.'s attacks applied to sequential targets (arXiv 2312.11571, App. A.3, Table 8).

==============  =================================================================================
``seq_ptd``     PTD: the student trained on the attacker's real sequences with its own next-item
                objective (the model's sampler and loss, e.g. full-softmax CE for SASRec).
``seq_ptq``     PTQ: PTD, then the stealing loss (Eq. 10–12) on the black box's top-k lists for
                those sequences (the whole sequence by default, or every prefix).
``seq_ptaq``    PTAQ: the student first pre-trained on the auxiliary (user-disjoint) sequences,
                then PTQ. For sequential students the auxiliary knowledge enters as this
                pre-training (the item-embedding attention of Eq. 5–8 is defined for MF clones).
==============  =================================================================================

The stealing loss is Zhu et al.'s: per queried list ``L_r + L_p`` with ``L_rank`` over the
``k − 1`` consecutive pairs and ``L_item`` of each list item against one sampled negative
(BPR+Hinge by default, as for PTQ/PTAQ in Table 7), averaged over the queried lists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypedDict

import numpy as np
import torch
from pydantic import Field

from raysteal.attacks.objectives import PairLoss, stealing_loss
from raysteal.attacks.registry import register_recipe
from raysteal.attacks.result import AttackResult
from raysteal.data.interactions import Interactions
from raysteal.data.splits import leave_one_out
from raysteal.errors import ConfigError
from raysteal.extraction.config import ExtractionConfigBase
from raysteal.extraction.phase_cache import array_digest, shared_phases
from raysteal.extraction.student import seeded_student, student_scores, train_student
from raysteal.extraction.synthesis import label_sequences, query_allowance
from raysteal.extraction.types import SequenceKnowledge, StudentBatch
from raysteal.models.base import PAD
from raysteal.oracle.protocol import BlackBoxClient
from raysteal.training.loop import optimize
from raysteal.training.trainer import fit, private_rng, resolve_device


class _ZhuSequentialConfig(ExtractionConfigBase):
    """PTD/PTQ/PTAQ on sequences: Zhu et al.'s top-50 lists, BPR+Hinge stealing loss, plus the
    data phases (``data_epochs`` on the attacker's sequences, ``aux_epochs`` of pre-training on
    the auxiliary ones for PTAQ) with the student's own next-item objective."""

    uses_real_sequences: ClassVar[bool] = True

    k: int = Field(50, ge=1)
    num_negatives: int = Field(50, ge=1, description="negatives per queried list (list item p pairs with negative p mod n)")
    data_epochs: int = Field(30, ge=0)
    data_batch_size: int = Field(128, ge=1)
    data_lr: float = Field(1e-3, gt=0.0)
    aux_epochs: int = Field(30, ge=0)
    data_patience: int | None = Field(
        None,
        ge=1,
        description=(
            "early stopping of the data phases on the attacker's own held-out items: each sequence's last item "
            "is held out, validated every data_eval_every epochs (NDCG@10), best weights kept; None: fixed epochs"
        ),
    )
    data_eval_every: int = Field(5, ge=1)
    prefixes: Literal["last", "all"] = "last"
    rank_loss: Literal["bpr", "hinge"] = "bpr"
    item_loss: Literal["bpr", "hinge"] = "hinge"


class SeqPTDConfig(_ZhuSequentialConfig):
    attack: Literal["seq_ptd"] = "seq_ptd"  # pyright: ignore[reportIncompatibleVariableOverride]  # see ExtractionConfigBase.attack
    uses_queries: ClassVar[bool] = False


class SeqPTQConfig(_ZhuSequentialConfig):
    attack: Literal["seq_ptq"] = "seq_ptq"  # pyright: ignore[reportIncompatibleVariableOverride]  # see ExtractionConfigBase.attack


class SeqPTAQConfig(_ZhuSequentialConfig):
    attack: Literal["seq_ptaq"] = "seq_ptaq"  # pyright: ignore[reportIncompatibleVariableOverride]  # see ExtractionConfigBase.attack


@dataclass(frozen=True)
class ZhuStealingObjective:
    """Zhu et al.'s stealing loss (Eq. 10–12) per queried list, averaged over the batch."""

    rank_loss: PairLoss = "bpr"
    item_loss: PairLoss = "hinge"
    margin: float = 0.5

    def __call__(self, student, batch: StudentBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        scores = student_scores(student, batch).float()
        lists, negatives = batch.lists, batch.negatives
        pick = torch.arange(lists.shape[1], device=lists.device) % negatives.shape[1]
        paired = negatives[:, pick]
        list_scores = scores.gather(1, lists.clamp(min=0))
        neg_scores = scores.gather(1, paired.clamp(min=0))[..., None]
        valid = (lists >= 0) & (paired >= 0)
        per_list = stealing_loss(list_scores, neg_scores, valid, self.rank_loss, self.item_loss, self.margin)
        loss = per_list.mean()
        return loss, {"stealing": loss.detach()}


def sequences_log(sequences: np.ndarray, num_items: int, name: str) -> Interactions:
    """Left-padded sequences ``[N, L]`` as an :class:`Interactions` log (row ``n`` = user ``n``)."""
    seqs = np.asarray(sequences, dtype=np.int64)
    valid = seqs != PAD
    users, _ = np.nonzero(valid)
    return Interactions(users=users, items=seqs[valid], num_users=len(seqs), num_items=num_items, name=name)


def fit_next_item(
    student,
    sequences: np.ndarray,
    num_items: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: str,
    amp: bool,
    name: str,
    on_epoch: Callable[[int, float], None] | None = None,
    patience: int | None = None,
    eval_every: int = 5,
) -> list[float]:
    """Train ``student`` on real sequences with its own sampler and loss (the PTD phase);
    ``on_epoch(epoch, mean_loss)`` reports each epoch (it cannot stop this phase).

    ``patience``: model selection on the attacker's own data, never the target's -- each
    sequence's last item is held out (the one before it validates, leave-one-out), NDCG@10 on it
    every ``eval_every`` epochs, stop after ``patience`` validations without improvement and keep
    the best weights (:func:`raysteal.training.fit`)."""
    if epochs == 0:
        return []
    log = sequences_log(sequences, num_items, name)
    if patience is not None:
        return _fit_with_early_stopping(
            student,
            log,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            device=device,
            amp=amp,
            on_epoch=on_epoch,
            patience=patience,
            eval_every=eval_every,
        )
    dev = resolve_device(device)
    student.to(dev)
    sampler = student.make_sampler(log, batch_size)
    sample_seed, rng_seed = np.random.SeedSequence([seed, 7]).generate_state(2)
    with private_rng(int(rng_seed), dev):
        result = optimize(
            student,
            sampler,
            student.loss,
            epochs,
            lr,
            torch.Generator().manual_seed(int(sample_seed)),
            device=dev,
            amp=amp,
            weight_decay=weight_decay,
            on_epoch=on_epoch,
        )
    return result.losses


def _fit_with_early_stopping(
    student,
    log: Interactions,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: str,
    amp: bool,
    on_epoch,
    patience: int,
    eval_every: int,
) -> list[float]:
    config = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "patience": patience,
        "eval_every": eval_every,
        "amp": "auto" if amp else "off",
    }
    report = None if on_epoch is None else (lambda entry: on_epoch(int(entry["epoch"]), float(entry["loss"])))
    result = fit(student, leave_one_out(log), config, seed=seed, device=device, progress=False, on_epoch=report)
    return [float(entry["loss"]) for entry in result.history]


class _FitOptions(TypedDict):
    """The keyword arguments that both :func:`fit_next_item` phases share."""

    num_items: int
    batch_size: int
    lr: float
    weight_decay: float
    device: str
    amp: bool
    patience: int | None
    eval_every: int


def _data_phase_spec(
    config: _ZhuSequentialConfig, knowledge: SequenceKnowledge, aux_sequences: np.ndarray | None, *, max_len: int, seed: int, device: str
) -> dict[str, Any]:
    """Everything the data phases of :func:`_zhu` depend on (the key of :func:`shared_phases`):
    the student, the sequences, the phases' settings, the seed and the kind of device; no target."""
    return {
        "student": config.student_config(max_len),
        "num_items": int(knowledge.num_items),
        "sequences": array_digest(knowledge.sequences),
        "auxiliary": array_digest(aux_sequences),
        "aux_epochs": int(config.aux_epochs) if aux_sequences is not None else 0,
        "data": {
            name: getattr(config, name)
            for name in ("data_epochs", "data_batch_size", "data_lr", "weight_decay", "amp", "data_patience", "data_eval_every")
        },
        "seed": seed,
        "device": resolve_device(device).type,
    }


def _zhu(
    config: _ZhuSequentialConfig,
    knowledge: SequenceKnowledge,
    client: BlackBoxClient,
    *,
    seed: int,
    device: str,
    on_epoch: Callable | None,
    progress: bool,
    auxiliary: bool,
    steal: bool,
    phase_cache: str | os.PathLike | None = None,
) -> AttackResult:
    own_sequences = knowledge.sequences
    if own_sequences is None or len(own_sequences) == 0:
        raise ConfigError(f"{config.attack} needs the attacker's real sequences (knowledge.sequences)")
    aux_sequences = knowledge.auxiliary if auxiliary else None
    if auxiliary and (aux_sequences is None or len(aux_sequences) == 0):
        raise ConfigError(f"{config.attack} needs auxiliary sequences (knowledge.auxiliary)")
    max_len = config.max_len or knowledge.max_len
    init_seed, aux_seed, data_seed, train_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence([int(seed), 0x2A0]).spawn(4))
    student = seeded_student(config.student_config(max_len), knowledge.num_items, init_seed)
    info: dict[str, Any] = {}
    started = time.perf_counter()
    common = _FitOptions(
        num_items=knowledge.num_items,
        batch_size=config.data_batch_size,
        lr=config.data_lr,
        weight_decay=config.weight_decay,
        device=device,
        amp=config.amp,
        patience=config.data_patience,
        eval_every=config.data_eval_every,
    )
    report = None if steal or on_epoch is None else (lambda epoch, loss: on_epoch(epoch, {"loss": loss}))

    def data_phases() -> dict[str, Any]:
        trained: dict[str, Any] = {}
        if aux_sequences is not None:
            trained["aux_losses"] = fit_next_item(
                student, aux_sequences, epochs=config.aux_epochs, seed=aux_seed, name="auxiliary", **common
            )
        trained["data_losses"] = fit_next_item(
            student, own_sequences, epochs=config.data_epochs, seed=data_seed, name="attacker", on_epoch=report, **common
        )
        trained["data_seconds"] = time.perf_counter() - started
        return trained

    if phase_cache is not None and report is None:  # phases that report each epoch (to Tune) train in the run
        spec = _data_phase_spec(config, knowledge, aux_sequences, max_len=max_len, seed=int(seed), device=device)
        info.update(shared_phases(student, spec, phase_cache, data_phases))
    else:
        info.update(data_phases())
    queries = 0
    if steal:
        seqs = own_sequences if config.budget_sequences is None else own_sequences[: config.budget_sequences]
        data = label_sequences(
            client,
            seqs,
            k=config.k,
            prefixes=config.prefixes,
            query_batch=config.query_batch,
            query_budget=query_allowance(client, config.budget_queries),
        )
        queries = data.queries
        objective = ZhuStealingObjective(config.rank_loss, config.item_loss, config.margin)
        stats = train_student(
            student, data, objective, seed=train_seed, device=device, on_epoch=on_epoch, progress=progress, **config.training_options()
        )
        info.update({key: value for key, value in stats.items()}, queried_prefixes=int(data.queried.sum()))
    student.eval()
    return AttackResult(clone=student, queries=queries, info=info)


def _zhu_recipe(name: str, config_cls: type, needs: tuple[str, ...], summary: str, *, auxiliary: bool, steal: bool) -> Callable:
    """Register one of Zhu et al.'s sequential recipes: :func:`_zhu` with its phases switched on."""

    def recipe(
        config: _ZhuSequentialConfig,
        knowledge: SequenceKnowledge,
        client: BlackBoxClient,
        *,
        seed: int,
        device: str = "cpu",
        on_epoch: Callable | None = None,
        progress: bool = False,
        phase_cache: str | os.PathLike | None = None,
    ) -> AttackResult:
        options = {"seed": seed, "device": device, "on_epoch": on_epoch, "progress": progress, "phase_cache": phase_cache}
        return _zhu(config, knowledge, client, auxiliary=auxiliary, steal=steal, **options)

    recipe.__name__ = recipe.__qualname__ = name
    recipe.__doc__ = summary
    return register_recipe(name, config_cls, needs=needs, summary=summary, shares_phases=True)(recipe)


seq_ptd = _zhu_recipe(
    "seq_ptd",
    SeqPTDConfig,
    ("target_data",),
    "Zhu et al. PTD on a sequential target: next-item training on the attacker's sequences",
    auxiliary=False,
    steal=False,
)
seq_ptq = _zhu_recipe(
    "seq_ptq",
    SeqPTQConfig,
    ("target_data", "queries"),
    "Zhu et al. PTQ on a sequential target: PTD, then the stealing loss on queried lists",
    auxiliary=False,
    steal=True,
)
seq_ptaq = _zhu_recipe(
    "seq_ptaq",
    SeqPTAQConfig,
    ("target_data", "auxiliary", "queries"),
    "Zhu et al. PTAQ on a sequential target: auxiliary pre-training, then PTQ",
    auxiliary=True,
    steal=True,
)
