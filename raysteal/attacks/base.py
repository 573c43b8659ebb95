"""The contract between collaborative attacks and their callers: config, knowledge, ``run_attack``.

An attack run = a registered recipe (:mod:`raysteal.attacks.registry`; Zhu et al.'s in
:mod:`raysteal.attacks.zhu2023`) applied to the attacker's knowledge, optionally with a query client
(the black box), under one seed; it returns an :class:`~raysteal.attacks.result.AttackResult`. It
runs in-process, no Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from raysteal.attacks.clones import arch_of, clone_model_config
from raysteal.attacks.fitting import AttackContext
from raysteal.attacks.registry import attack_names, get_recipe
from raysteal.attacks.result import AttackResult
from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import ModelConfig, Recommender
from raysteal.oracle.protocol import BlackBoxClient
from raysteal.training.trainer import resolve_device

if TYPE_CHECKING:
    from raysteal.attacks.fitting import EpochCallback


class AttackConfig(NumbersAreNotBooleans):
    """Hyperparameters of one attack run. Defaults follow Zhu et al. App. A.1 (Adam 1e-3, batch
    2048, embedding 64, top-50 lists, margin 0.5); the epoch budgets, which the paper leaves at
    "until convergence", were fixed in advance on ML-1M from data the attacker legitimately holds,
    never from the agreement being reported: ``aux_epochs`` and ``epochs`` where full-ranking
    NDCG@50 on a leave-one-out item of the auxiliary data / the attacker's own target users stops
    improving (PTD flat from 120 on, PTA peaking at 120–140), ``finetune_epochs`` where agreement
    on 20% of the queried lists held out of the fine-tune stops improving (120–180). Fields a
    recipe does not use are ignored by it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: ClassVar[str] = "collaborative"
    """The recipe family whose recipes this config validates (:data:`raysteal.attacks.registry.FAMILIES`)."""

    attack: str = Field(description="registered attack name (see attack_names())")
    clone: str = Field("bpr", description="clone architecture: bpr | lmf | neumf (ncf); independent of the target")
    clone_options: dict[str, Any] = Field(default_factory=dict, description="extra model hyperparameters of the clone")
    embedding_dim: int = Field(64, ge=1, description="clone (and auxiliary model) embedding size")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate of every phase")
    batch_size: int = Field(2048, ge=1, description="triples per step (data phases); list items per step (stealing phase)")
    k: int = Field(50, ge=1, description="length of the queried top-k lists")
    margin: float = Field(0.5, ge=0.0, description="margin m of the hinge loss (Eq. 9)")
    rank_loss: Literal["bpr", "hinge"] = Field("bpr", description="stealing loss on consecutive list pairs (Eq. 11); QSD defaults to hinge")
    item_loss: Literal["hinge", "bpr"] = Field("hinge", description="stealing loss of list items vs negatives (Eq. 12)")
    data_loss: Literal["bpr", "logistic"] = Field("bpr", description="objective on interactions: BPR (Eq. 4, Alg. 1) or pointwise logistic")
    epochs: int = Field(120, ge=0, description="epochs over the attacker's target data (PTD/PTA phase)")
    finetune_epochs: int = Field(
        150, ge=0, description="epochs of the stealing loss over the queried lists (PTQ/PTAQ fine-tune, QSD training)"
    )
    aux_epochs: int = Field(60, ge=0, description="epochs of the auxiliary model over the auxiliary data")
    num_negatives: int = Field(1, ge=1, description="sampled negatives per positive interaction")
    query_negatives: int = Field(1, ge=1, description="sampled negatives per queried list item (n_j in Eq. 12)")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay (0 = Adam)")
    amp: bool = Field(True, description="bf16 autocast on a CUDA device (ignored on the CPU)")

    @model_validator(mode="before")
    @classmethod
    def _qsd_default_loss(cls, data: Any) -> Any:
        """QSD uses Hinge+Hinge unless told otherwise (App. A.2)."""
        if isinstance(data, dict) and data.get("attack") == "qsd" and "rank_loss" not in data:
            return {**data, "rank_loss": "hinge"}
        return data

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, value: str) -> str:
        get_recipe(value, cls.family)
        return value

    @field_validator("clone")
    @classmethod
    def _known_clone(cls, value: str) -> str:
        return arch_of(value).name

    @model_validator(mode="after")
    def _valid_clone_options(self) -> AttackConfig:
        self.clone_config()
        return self

    def clone_config(self) -> ModelConfig:
        """The clone's (and auxiliary model's) validated model config."""
        try:
            return clone_model_config(self.clone, self.embedding_dim, self.clone_options)
        except ConfigError as err:
            raise ValueError(f"clone_options: {err}") from None

    @property
    def stealing_loss_name(self) -> str:
        """Table 7's label, e.g. ``"BPR+Hinge"`` (ranking loss + item loss)."""
        return f"{self.rank_loss.upper() if self.rank_loss == 'bpr' else 'Hinge'}+{self.item_loss.upper() if self.item_loss == 'bpr' else 'Hinge'}"


def make_attack_config(config: AttackConfig | dict[str, Any]) -> AttackConfig:
    """Validate a dict into an :class:`AttackConfig`; errors (``ConfigError``) name each bad key."""
    if isinstance(config, AttackConfig):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"attack config must be a mapping, got {type(config).__name__}")
    if "attack" not in config:
        raise ConfigError(f"attack config needs an 'attack' key; known attacks: {', '.join(attack_names())}")
    try:
        return AttackConfig(**config)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ").removeprefix(f"{key}: ")
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {msg}" if key else msg)
        raise ConfigError(f"invalid attack config: {'; '.join(problems)}") from None


@dataclass
class Knowledge:
    """What the attacker has (Zhu et al. §3.2, Table 3).

    ``target_data``: its known target users' interactions, users re-indexed ``0..n-1``;
    ``target_user_ids``: those users' ids in the target system (sent to the black box);
    ``auxiliary``: user-disjoint data over the same item space; ``query_users``: indices
    ``0..n-1`` of known users it may query (``None``: all of them); ``auxiliary_model``: an
    auxiliary model already trained on ``auxiliary`` (``zhu2023.train_auxiliary_model``), shared
    between runs instead of training one per run.
    """

    target_data: Interactions | None
    target_user_ids: np.ndarray
    auxiliary: Interactions | None = None
    query_users: np.ndarray | None = None
    auxiliary_model: Recommender | None = None

    def __post_init__(self) -> None:
        self.target_user_ids = np.asarray(self.target_user_ids, dtype=np.int64).ravel()
        n = self.target_user_ids.size
        if self.target_data is not None and self.target_data.num_users != n:
            raise ConfigError(f"target_data has {self.target_data.num_users} users but target_user_ids {n}")
        if self.query_users is not None:
            self.query_users = np.asarray(self.query_users, dtype=np.int64).ravel()
            if self.query_users.size and (self.query_users.min() < 0 or self.query_users.max() >= n):
                raise ConfigError(f"query_users must index the {n} known users (0..{n - 1})")
            if np.unique(self.query_users).size != self.query_users.size:
                raise ConfigError("query_users holds repeated users")
        items = {log.num_items for log in (self.target_data, self.auxiliary) if log is not None}
        if len(items) > 1:
            raise ConfigError(f"target_data and auxiliary must share one item space, got {sorted(items)} items")

    @property
    def num_users(self) -> int:
        """Number of known target users (the clone's users)."""
        return int(self.target_user_ids.size)

    def queryable(self) -> np.ndarray:
        """Indices of the known users that may be queried."""
        return np.arange(self.num_users) if self.query_users is None else self.query_users

    def num_items(self, client: BlackBoxClient | None = None) -> int:
        """Catalogue size, from the attacker's data or else the black box's public shape."""
        for log in (self.target_data, self.auxiliary, self.auxiliary_model):
            if log is not None:
                return int(log.num_items)
        if client is not None:
            return int(client.num_items)
        raise ConfigError("cannot tell the catalogue size: no target_data, auxiliary data or client")

    @classmethod
    def from_split(
        cls,
        target_train: Interactions,
        known_users: np.ndarray,
        auxiliary: Interactions | None = None,
        query_fraction: float = 0.8,
        seed: int | np.random.Generator = 0,
    ) -> Knowledge:
        """Knowledge of the attacker holding ``known_users`` of the target's training log: their
        rows (re-indexed), the auxiliary log, and a seeded ``query_fraction`` of them to query
        (the rest are the held-out users of protocol (b))."""
        if not 0.0 < query_fraction <= 1.0:
            raise ConfigError(f"query_fraction must lie in (0, 1], got {query_fraction}")
        known = np.asarray(known_users, dtype=np.int64)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n_query = min(max(int(round(query_fraction * known.size)), 1), known.size)
        query = np.sort(rng.choice(known.size, size=n_query, replace=False))
        return cls(target_train.select_users(known, name=f"{target_train.name}/attacker"), known, auxiliary, query)


def run_attack(
    config: AttackConfig | dict[str, Any],
    knowledge: Knowledge,
    client: BlackBoxClient | None,
    seed: int,
    device: str | torch.device = "auto",
    on_epoch: EpochCallback | None = None,
) -> AttackResult:
    """Run one collaborative attack recipe: validate, check the knowledge it needs, build and train the clone.

    ``on_epoch(epoch, stats) -> bool | None`` (optional) sees every clone-training epoch
    (:data:`raysteal.attacks.fitting.EpochCallback`); returning ``True`` stops training early."""
    cfg = make_attack_config(config)
    recipe = get_recipe(cfg.attack, cfg.family)
    missing = [
        need
        for need, have in (
            ("target_data", knowledge.target_data is not None),
            ("auxiliary", knowledge.auxiliary is not None or knowledge.auxiliary_model is not None),
            ("queries", client is not None),
        )
        if need in recipe.needs and not have
    ]
    if missing:
        what = {"target_data": "knowledge.target_data", "auxiliary": "knowledge.auxiliary", "queries": "a query client"}
        raise ConfigError(f"attack {cfg.attack!r} needs {', '.join(what[m] for m in missing)}")
    dev = resolve_device(device)
    ctx = AttackContext(seed=int(seed), device=dev, amp=cfg.amp, on_epoch=on_epoch)
    started = time.perf_counter()
    clone = recipe.fn(cfg, knowledge, client, ctx)
    clone.to(dev).eval()
    info = {
        "attack": cfg.attack,
        "clone": cfg.clone,
        "stealing_loss": cfg.stealing_loss_name,
        "device": str(dev),
        "train_seconds": time.perf_counter() - started,
        **ctx.info,
    }
    if on_epoch is not None:
        info.update(clone_epochs=ctx.epoch, stopped_early=ctx.stopped)
    return AttackResult(clone=clone, queries=ctx.queries, info=info, answered_users=ctx.answered_users)
