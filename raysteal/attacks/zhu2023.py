"""The attacks of Zhu et al. 2023 (*Model Stealing Attack against Recommender System*) on
collaborative targets, one short recipe each: knowledge → clone model → objective(s) → query strategy.

==============  ===================================================================================
``ptd``         §4.1 / App. A.1: a clone trained with BPR (Eq. 4) on the attacker's target data.
``pta``         §4.2, Eq. 5–8: auxiliary model → frozen item embeddings fused into the clone by attention.
``pta_pre``     Table 5 "PTA(Pre)": auxiliary item embeddings as the clone's initialisation.
``ptq``         §4.3: PTD, then the stealing loss (Eq. 10–12) on the queried top-K lists.
``ptaq``        Alg. 1: PTA, then the stealing loss.
``ptaq_pre``    Table 5 "PTAQ(Pre)": PTA(Pre), then the stealing loss.
``qsd``         App. A.1: query the known users, train only on the returned lists (no interactions).
``aux_frozen``  Ablation (not in the paper): frozen auxiliary item side, only user embeddings learned.
==============  ===================================================================================

The data objective is BPR for every clone architecture (Alg. 1 lines 3–13), or the pointwise
logistic loss with ``data_loss="logistic"``. The auxiliary model has the clone's architecture and
is trained on the auxiliary data with the same objective for ``aux_epochs``. The popularity
calibration clone is in :mod:`raysteal.attacks.baselines`; these attacks on sequential targets in
:mod:`raysteal.extraction.zhu_sequential`.
"""

from __future__ import annotations

import numpy as np
import torch

from raysteal.attacks.base import AttackConfig, Knowledge, make_attack_config
from raysteal.attacks.clones import FusedClone, frozen_aux_clone, plain_clone, pretrained_clone
from raysteal.attacks.fitting import AttackContext, fit_interactions, fit_lists
from raysteal.attacks.queries import query_top_k
from raysteal.attacks.registry import register_recipe
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import Recommender
from raysteal.oracle.protocol import BlackBoxClient
from raysteal.training.trainer import resolve_device


# ----------------------------------------------------------------------------- parts
def _config(cfg: AttackConfig):
    return cfg.clone_config()


def _new_clone(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return plain_clone(_config(cfg), kn.num_users, kn.num_items(client), ctx.child_seed("clone_init"))


def _fit_target_data(clone: Recommender, cfg: AttackConfig, kn: Knowledge, ctx: AttackContext) -> Recommender:
    if kn.target_data is None:  # run_attack refuses this earlier: the recipes that get here need target_data
        raise ConfigError(f"attack {cfg.attack!r} needs knowledge.target_data")
    fit_interactions(
        clone,
        kn.target_data,
        ctx,
        "clone",
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        num_negatives=cfg.num_negatives,
        loss=cfg.data_loss,
        weight_decay=cfg.weight_decay,
    )
    return clone


def _train_auxiliary(cfg: AttackConfig, auxiliary, ctx: AttackContext) -> Recommender:
    aux = plain_clone(_config(cfg), auxiliary.num_users, auxiliary.num_items, ctx.child_seed("aux_init"))
    fit_interactions(
        aux,
        auxiliary,
        ctx,
        "aux",
        epochs=cfg.aux_epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        num_negatives=cfg.num_negatives,
        loss=cfg.data_loss,
        weight_decay=cfg.weight_decay,
    )
    return aux.eval().requires_grad_(False)


def _auxiliary_model(cfg: AttackConfig, kn: Knowledge, ctx: AttackContext) -> Recommender:
    """The auxiliary model (Alg. 1 line 1): the one in the knowledge if given, else trained here."""
    if kn.auxiliary_model is None:
        return _train_auxiliary(cfg, kn.auxiliary, ctx)
    aux = kn.auxiliary_model
    if aux.config != _config(cfg) or aux.num_items != kn.num_items():
        raise ConfigError(
            f"knowledge.auxiliary_model ({aux.config.model_dump()}, {aux.num_items} items) does not match "
            f"the clone ({_config(cfg).model_dump()}, {kn.num_items()} items)"
        )
    ctx.log("aux", {"shared": True})
    return aux.eval().requires_grad_(False)


def train_auxiliary_model(
    config: AttackConfig | dict, auxiliary: Interactions, seed: int, device: str | torch.device = "auto"
) -> Recommender:
    """Train the auxiliary model exactly as a run of ``config`` with ``seed`` would (same
    architecture, epochs and random stream), to share it between runs via
    ``Knowledge.auxiliary_model`` (e.g. PTA, PTAQ, PTA(Pre) and aux_frozen of one seed)."""
    cfg = make_attack_config(config)
    ctx = AttackContext(seed=int(seed), device=resolve_device(device), amp=cfg.amp)
    return _train_auxiliary(cfg, auxiliary, ctx)


def _steal(
    clone: Recommender, cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext, use_data: bool = True
) -> Recommender:
    """Query the known users' top-K lists and fit them with the stealing loss (Alg. 1 lines 14–30)."""
    rng = np.random.default_rng(ctx.child_seed("query_subset"))
    answered = query_top_k(client, kn.target_user_ids, kn.queryable(), cfg.k, rng)
    ctx.queries += answered.queries
    ctx.answered_users = answered.users
    fit_lists(
        clone,
        answered.users,
        answered.lists,
        ctx,
        "steal",
        epochs=cfg.finetune_epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        num_negatives=cfg.query_negatives,
        rank_loss=cfg.rank_loss,
        item_loss=cfg.item_loss,
        margin=cfg.margin,
        known=kn.target_data if use_data else None,
        weight_decay=cfg.weight_decay,
    )
    return clone


def _fused_clone(cfg: AttackConfig, kn: Knowledge, ctx: AttackContext) -> FusedClone:
    aux = _auxiliary_model(cfg, kn, ctx)
    base = _new_clone(cfg, kn, None, ctx)
    clone = FusedClone(base.to(ctx.device), aux.to(ctx.device), ctx.generator("attention"))
    _fit_target_data(clone, cfg, kn, ctx)
    with torch.no_grad():
        users = torch.arange(kn.num_users, device=ctx.device)
        ctx.info["fusion_clone_weight_mean"] = {t: float(clone.clone_weight_full(t, users).mean()) for t in clone.tables}
    return clone


# ----------------------------------------------------------------------------- recipes
@register_recipe("ptd", AttackConfig, needs=("target_data",), summary="BPR on the attacker's partial target data (§4.1)")
def ptd(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return _fit_target_data(_new_clone(cfg, kn, client, ctx), cfg, kn, ctx)


@register_recipe("pta", AttackConfig, needs=("target_data", "auxiliary"), summary="attention fusion of auxiliary item embeddings (Eq. 5-8)")
def pta(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return _fused_clone(cfg, kn, ctx)


@register_recipe(
    "pta_pre", AttackConfig, needs=("target_data", "auxiliary"), summary="auxiliary item embeddings as initialisation (Table 5)"
)
def pta_pre(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    aux = _auxiliary_model(cfg, kn, ctx)
    clone = pretrained_clone(_config(cfg), aux, kn.num_users, ctx.child_seed("clone_init"))
    return _fit_target_data(clone, cfg, kn, ctx)


@register_recipe(
    "aux_frozen", AttackConfig, needs=("target_data", "auxiliary"), summary="ablation: frozen auxiliary item side, user embeddings only"
)
def aux_frozen(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    aux = _auxiliary_model(cfg, kn, ctx)
    clone = frozen_aux_clone(_config(cfg), aux, kn.num_users, ctx.child_seed("clone_init"))
    return _fit_target_data(clone, cfg, kn, ctx)


@register_recipe("ptq", AttackConfig, needs=("target_data", "queries"), summary="PTD, then the stealing loss on queried lists (Eq. 10-12)")
def ptq(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return _steal(ptd(cfg, kn, client, ctx), cfg, kn, client, ctx)


@register_recipe("ptaq", AttackConfig, needs=("target_data", "auxiliary", "queries"), summary="PTA, then the stealing loss (Alg. 1)")
def ptaq(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return _steal(pta(cfg, kn, client, ctx), cfg, kn, client, ctx)


@register_recipe(
    "ptaq_pre", AttackConfig, needs=("target_data", "auxiliary", "queries"), summary="PTA(Pre), then the stealing loss (Table 5)"
)
def ptaq_pre(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return _steal(pta_pre(cfg, kn, client, ctx), cfg, kn, client, ctx)


@register_recipe("qsd", AttackConfig, needs=("queries",), summary="query feedback only: stealing loss on the known users' lists (App. A.1)")
def qsd(cfg: AttackConfig, kn: Knowledge, client: BlackBoxClient | None, ctx: AttackContext) -> Recommender:
    return _steal(_new_clone(cfg, kn, client, ctx), cfg, kn, client, ctx, use_data=False)
