"""BAHSD: black-box adaptive distillation of a sequential recommender under long-tailed users.

The source (arXiv 2606.03091) is available as an abstract only; this is the concrete design
written from it (docs/attacks/bahsd.md, items 1–5):

1. sequences — synthetic (grown against the black box like DFME,
   :func:`raysteal.extraction.synthesis.synthesize`) or, with ``source="real"``, the attacker's
   own sequences (``SequenceKnowledge.sequences``, labelled by
   :func:`~raysteal.extraction.synthesis.label_sequences`); every prefix one top-``k`` query;
2. multi-scale consistency probing (:mod:`raysteal.extraction.probing`) gives each prefix a
   reliability ``c`` and each listed item a cross-scale stability; probes are queries;
3. the student is trained by :class:`BAHSDObjective` (:mod:`raysteal.extraction.bahsd_losses`)::

       L = mean_s [ w(c_s)·KL_T(c_s) + (1 − w(c_s))·(L_rank,s + λ·L_InfoNCE,s) ]

**Budget split** (so BAHSD and DFME compare at equal total queries ``B``): one synthetic
sequence of ``max_len`` items costs ``max_len`` synthesis queries plus
``p = probes_per_sequence(max_len, spec)`` probes (views × probed prefixes; with the defaults,
2 suffix scales on the last prefix and every 8th before it, views that would repeat the prefix
or another view skipped: ``p = 13`` for ``max_len = 50``, ``50`` for ``200``), so BAHSD grows
``ceil(B / (max_len + p))`` sequences (DFME: ``ceil(B / max_len)``), synthesis may spend ``B``
minus the probes reserved for them, and probing spends what synthesis left (never more than
planned). The probe share of the budget is about ``p / (max_len + p)`` (20% with the defaults),
tuned with ``probe_every`` / ``probe_scales`` / ``probe_dropout`` / ``probe_views``. With real
sequences the budget is split in proportion to the labelling and probing queries they need.
``probing=False`` spends everything on sequences.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from raysteal.attacks.registry import register_recipe
from raysteal.attacks.result import AttackResult
from raysteal.errors import ConfigError
from raysteal.extraction.bahsd_losses import (
    bahsd_loss,
    dynamic_temperature,
    info_nce,
    item_weights,
    kl_rank_distillation,
    listwise_consistency,
    mixing_weight,
    pairwise_consistency,
)
from raysteal.extraction.config import ExtractionConfigBase
from raysteal.extraction.dfme import sequence_length
from raysteal.extraction.probing import (
    ProbeSpec,
    constant_extras,
    planned_probe_queries,
    prefix_lengths,
    probe,
    probes_per_sequence,
    suffix_lengths,
)
from raysteal.extraction.resume import gathered_once, run_key, student_resume_options, without_added_settings
from raysteal.extraction.student import (
    dfme_objective,
    first_columns,
    sample_negatives,
    seeded_student,
    student_hidden,
    train_student,
)
from raysteal.extraction.synthesis import label_sequences, query_allowance, synthesize
from raysteal.extraction.types import ExtractionSet, SequenceKnowledge, StudentBatch
from raysteal.models.base import PAD
from raysteal.models.sequence_layers import SequentialRecommender, last_positions
from raysteal.oracle.protocol import BlackBoxClient

_ONE_OBJECTIVE = {"adaptive": False, "infonce": False, "probe_training": False}
SINGLE_OBJECTIVE_BASELINES: dict[str, dict[str, Any]] = {
    # the KL branch (fixed temperature) for every prefix
    "kl": {**_ONE_OBJECTIVE, "fixed_weight": 1.0, "dynamic_temperature": False, "ranking_consistency": False},
    # unweighted ListMLE for every prefix (w = 0: the KL is not computed)
    "listwise": {**_ONE_OBJECTIVE, "fixed_weight": 0.0, "ranking_consistency": True, "rank_loss": "listwise", "stability_weighting": False},
}
"""The one-size-fits-all baselines that are BAHSD's own objective with one branch kept: the
settings each overrides (the ranking baseline is Yue et al.'s loss itself, ``dfme_objective``)."""


class BAHSDConfig(ExtractionConfigBase):
    """BAHSD hyperparameters: every temperature, margin, weight, threshold and probe scale.

    Defaults are starting points for a search (experiment files / Ray Tune), not tuned values.
    The ablation switches (``probing``, ``dynamic_temperature``, ``infonce``,
    ``ranking_consistency``, ``stability_weighting``, ``adaptive``) each remove one component.
    """

    attack: Literal["bahsd"] = "bahsd"  # pyright: ignore[reportIncompatibleVariableOverride]  # see ExtractionConfigBase.attack
    # ---- sequences
    source: Literal["synthetic", "real"] = Field("synthetic", description="synthetic sequences (DFME-style) or knowledge.sequences")
    real_prefixes: Literal["all", "last", "spaced"] = Field(
        "all",
        description=(
            "with source='real': query every prefix, shortest first while the budget lasts (all), the whole sequence only "
            "(last), or an even subsample of each sequence's prefixes, long ones included (spaced)"
        ),
    )
    # ---- one-size-fits-all baselines on the same sequences and budget (issue: "the long-tailed setting")
    baseline: Literal["none", "ranking", "kl", "listwise"] = Field(
        "none",
        description=(
            "none: BAHSD; ranking: Yue et al.'s ranking loss for every prefix; kl: the KL branch (fixed_temperature) for every "
            "prefix; listwise: ListMLE over the list, negatives below it (Xia et al. 2008), for every prefix, unweighted. "
            "A baseline sends no probes and spends the whole budget on prefixes"
        ),
    )
    variant: str | None = Field(
        None,
        max_length=60,
        description="short name of this configuration in result rows (default: "
        "'defaults' for BAHSD, 'ranking-for-all' / 'kl-for-all' / 'listwise-for-all' for the baselines)",
    )
    # ---- probing (design item 1)
    probing: bool = Field(True, description="ablation: False = no probes, c = default_reliability, budget all to sequences")
    probe_scales: list[float] = Field(default_factory=lambda: [0.5, 0.25], description="suffix views, as fractions of the prefix")
    probe_dropout: list[float] = Field(default_factory=list, description="item-dropout rates of dropout views")
    probe_views: int = Field(1, ge=1, description="dropout views per rate")
    probe_every: int = Field(8, ge=1, description="probe the last queried prefix and every n-th before it")
    probe_metric: Literal["rbo", "jaccard"] = "rbo"
    rbo_p: float = Field(0.9, gt=0.0, lt=1.0, description="RBO persistence")
    default_reliability: float = Field(0.5, ge=0.0, le=1.0, description="c of unprobed sequences")
    # ---- probes that teach (each probe answer is the black box's top-k for a real input)
    probe_training: bool = Field(True, description="ablation: False = probe answers only feed the reliability, they train nothing")
    probe_weight: float = Field(
        1.0, ge=0.0, description="weight of the probe views' loss beside the prefixes' (L = L_prefixes + this · L_views)"
    )
    probe_train_views: int | None = Field(
        4, ge=1, description="probe views trained per sequence per step (drawn anew each step); None = all"
    )
    probe_infonce: bool = Field(
        True, description="InfoNCE pulls each view's representation toward its prefix's, weighted by their answers' agreement"
    )
    # ---- high-confidence branch (item 2)
    dynamic_temperature: bool = Field(True, description="ablation: False = fixed_temperature for every prefix")
    t_min: float = Field(1.0, gt=0.0, description="T at c = 0")
    t_max: float = Field(4.0, gt=0.0, description="T at c = 1")
    temperature_gamma: float = Field(1.0, gt=0.0, description="T(c) = t_min + (t_max - t_min) c^gamma")
    fixed_temperature: float = Field(2.0, gt=0.0)
    kl_scale_t2: bool = Field(True, description="multiply KL by T^2 (Hinton et al. 2015)")
    kl_exclude_seen: bool = Field(True, description="drop the prefix's items from the student softmax (the black box never lists them)")
    # ---- low-confidence branch (item 3)
    ranking_consistency: bool = Field(True, description="ablation: False = no ranking term in the low branch")
    rank_loss: Literal["pairwise", "listwise"] = "pairwise"
    stability_weighting: bool = Field(True, description="ablation: False = every list item weighs 1")
    stability_floor: float = Field(0.1, ge=0.0, le=1.0, description="item weight floor + (1 - floor) * stability")
    infonce: bool = Field(True, description="ablation: False = no contrastive term")
    infonce_weight: float = Field(0.1, ge=0.0, description="lambda")
    infonce_tau: float = Field(0.2, gt=0.0)
    infonce_scale: float = Field(0.5, gt=0.0, le=1.0, description="second view: the last ceil(scale * len) items of the prefix")
    infonce_prefixes: int | None = Field(
        None,
        ge=2,
        description=(
            "InfoNCE over this many prefixes of each batch, drawn at random, their term scaled by the batch's share "
            "(None: every prefix); the second view's encoder pass is most of a step's time"
        ),
    )
    # ---- mixing (item 4)
    adaptive: bool = Field(True, description="ablation: False = w = fixed_weight for every prefix")
    threshold: float = Field(0.5, description="w(c) = sigmoid((c - threshold) / sharpness)")
    threshold_quantile: float | None = Field(
        None, gt=0.0, lt=1.0, description="if set, threshold = this quantile of the measured reliabilities"
    )
    sharpness: float = Field(0.1, gt=0.0)
    fixed_weight: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def uses_real_sequences(self) -> bool:  # type: ignore[override]
        """With ``source="real"`` the runner hands the attacker its users' sequences (and never
        scores those users)."""
        return self.source == "real"

    @property
    def probes(self) -> bool:
        """Whether this configuration sends probes (BAHSD with ``probing``, never a baseline)."""
        return self.probing and self.baseline == "none"

    def row_labels(self) -> dict[str, Any]:
        default = {"none": "defaults", "ranking": "ranking-for-all", "kl": "kl-for-all", "listwise": "listwise-for-all"}[self.baseline]
        return {"setting": self.source, "baseline": self.baseline != "none", "variant": self.variant or default}

    def objective(self, threshold: float) -> Any:
        """The training objective: :class:`BAHSDObjective`, or a baseline's single objective."""
        if self.baseline == "ranking":
            return dfme_objective(self.margin)
        if self.baseline in SINGLE_OBJECTIVE_BASELINES:
            return BAHSDObjective.from_config(self.model_copy(update=SINGLE_OBJECTIVE_BASELINES[self.baseline]), threshold)
        return BAHSDObjective.from_config(self, threshold)

    @field_validator("probe_scales", "probe_dropout", mode="before")
    @classmethod
    def _numbers_from_text(cls, value: Any) -> Any:
        """``"0.5,0.25"`` is ``[0.5, 0.25]`` and ``""`` is ``[]``: a searcher that takes only scalar
        choices (Optuna) can choose among sets of views."""
        if isinstance(value, str):
            try:
                return [float(part) for part in value.replace(" ", "").split(",") if part]
            except ValueError:
                raise ValueError(f"expected numbers separated by commas, got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> BAHSDConfig:
        if self.t_max < self.t_min:
            raise ValueError(f"t_max ({self.t_max}) must be >= t_min ({self.t_min})")
        if self.probing:
            self.probe_spec()  # raises on bad scales / rates
        return self

    def probe_spec(self) -> ProbeSpec:
        try:
            return ProbeSpec(
                scales=tuple(self.probe_scales),
                dropout=tuple(self.probe_dropout),
                views=self.probe_views,
                every=self.probe_every,
                metric=self.probe_metric,
                rbo_p=self.rbo_p,
                default_reliability=self.default_reliability,
            )
        except ConfigError as err:
            raise ValueError(str(err)) from None


# --------------------------------------------------------------------------- objective
def suffix_inputs(inputs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[P, W]``: the last ``lengths[p]`` items of prefix ``inputs[rows[p], :cols[p] + 1]``, left-padded."""
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    back = (width - 1) - torch.arange(width, device=inputs.device)
    src = cols[:, None] - back[None, :]
    vals = inputs[rows[:, None], src.clamp(min=0)]
    keep = (back[None, :] < lengths[:, None]) & (src >= 0)
    return torch.where(keep, vals, torch.full_like(vals, PAD))


def prefix_item_mask(inputs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, num_items: int) -> torch.Tensor:
    """Bool ``[P, num_items]``: the items of prefix ``inputs[rows[p], :cols[p] + 1]``."""
    seq = inputs[rows]
    upto = torch.arange(inputs.shape[1], device=inputs.device)[None, :] <= cols[:, None]
    ok = upto & (seq != PAD)
    mask = torch.zeros(len(rows), num_items, dtype=torch.bool, device=inputs.device)
    r = torch.arange(len(rows), device=inputs.device)[:, None].expand_as(seq)
    mask[r[ok], seq[ok]] = True
    return mask


@dataclass(frozen=True)
class BAHSDObjective:
    """The adaptive hierarchical objective (design item 4) as a :class:`StudentObjective`.

    Reads ``batch.extras``: ``reliability [B, L]``, ``stability [B, L, k]`` and ``view_len
    [B, L]`` (the InfoNCE view's length), indexed at each selected prefix. Their column axis is
    the ExtractionSet's; ``train_student`` drops leading all-padding columns from ``inputs``
    (``cols`` shift with them), so the extras are read at ``cols + (L_extras − L_inputs)``.
    """

    config: BAHSDConfig
    threshold: float

    def __repr__(self) -> str:
        """The loss's own settings (not the run's epochs, budget or student): the training-state key."""
        own = without_added_settings(self.config.model_dump(mode="json", exclude=set(ExtractionConfigBase.model_fields) - {"margin"}))
        return f"BAHSDObjective(threshold={self.threshold!r}, {json.dumps(own, sort_keys=True)})"

    @classmethod
    def from_config(cls, config: BAHSDConfig, threshold: float | None = None) -> BAHSDObjective:
        return cls(config, float(config.threshold if threshold is None else threshold))

    @property
    def kl_weighs_nothing(self) -> bool:
        """Whether the KL branch's weight is 0 for every prefix and view (one fixed mix of 0)."""
        return not self.config.adaptive and self.config.fixed_weight == 0.0

    def temperature(self, reliability: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.dynamic_temperature:
            return dynamic_temperature(reliability, cfg.t_min, cfg.t_max, cfg.temperature_gamma)
        return torch.full_like(reliability, cfg.fixed_temperature)

    def weight(self, reliability: torch.Tensor) -> torch.Tensor:
        if self.config.adaptive:
            return mixing_weight(reliability, self.threshold, self.config.sharpness)
        return torch.full_like(reliability, self.config.fixed_weight)

    def __call__(self, student: SequentialRecommender, batch: StudentBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        rows, cols, lists = batch.rows, batch.cols, batch.lists.long()
        needed = ["reliability"] + ["stability"] * cfg.ranking_consistency + ["view_len"] * cfg.infonce
        missing = [key for key in needed if key not in batch.extras]
        if missing:
            raise ConfigError(f"BAHSD objective: batch.extras lacks {missing} (probe the ExtractionSet first, see bahsd())")
        lead = batch.extras["reliability"].shape[1] - batch.inputs.shape[1]
        ecols = cols + lead
        reliability = batch.extras["reliability"][rows, ecols].float()
        hidden = student_hidden(student, batch)
        scores = student.logits(hidden).float()
        if self.kl_weighs_nothing:  # w = 0 for every prefix: the catalogue-wide KL would be computed for nothing
            temp, w, kl = self.temperature(reliability), torch.zeros_like(reliability), torch.zeros_like(reliability)
        else:
            temp, w, kl = self.high_branch(scores, lists, reliability, batch.inputs, rows, cols)
        logs: dict[str, Any] = {"kl": kl.mean().detach(), "w": w.mean().detach(), "temperature": temp.mean().detach()}

        rank = None
        if cfg.ranking_consistency:
            rank = self.ranking_term(scores, lists, batch.negatives.long(), batch.extras["stability"][rows, ecols].float())
            logs["rank"] = rank.mean().detach()

        contrastive = None
        if cfg.infonce and len(rows) > 1:
            contrastive = self.contrastive_term(student, batch, hidden, ecols)
            logs["infonce"] = contrastive.mean().detach()
        loss = bahsd_loss(w, kl, rank, contrastive, cfg.infonce_weight)
        if cfg.probes and cfg.probe_training and "probe_lists" in batch.extras and cfg.probe_weight > 0:
            view_loss = self.view_loss(student, batch, hidden, lead, logs)
            if view_loss is not None:
                loss = loss + cfg.probe_weight * view_loss
        return loss, logs

    def contrastive_term(
        self, student: SequentialRecommender, batch: StudentBatch, hidden: torch.Tensor, ecols: torch.Tensor
    ) -> torch.Tensor:
        """``[P]`` InfoNCE between each prefix and its suffix view (item 3). With ``infonce_prefixes``
        = m < P, over m prefixes drawn without replacement (in-batch negatives among them), each
        term scaled by P / m and the others 0: the batch mean of the term keeps its expectation over
        the draw of which prefixes enter, while the view pass encodes m views instead of P."""
        cfg = self.config
        rows, cols = batch.rows, batch.cols
        count = len(rows)
        take = None
        if cfg.infonce_prefixes is not None and cfg.infonce_prefixes < count:
            take = torch.randperm(count, device=rows.device)[: cfg.infonce_prefixes].sort().values
            rows, cols, ecols, hidden = rows[take], cols[take], ecols[take], hidden[take]
        lengths = batch.extras["view_len"][rows, ecols].long()
        second = student.represent_last(student.prepare(suffix_inputs(batch.inputs, rows, cols, lengths)))
        terms = info_nce(hidden.float(), second.float(), cfg.infonce_tau, groups=batch.sequence_ids[rows])
        if take is None:
            return terms
        return torch.zeros(count, dtype=terms.dtype, device=terms.device).index_copy(0, take, terms * (count / len(take)))

    def high_branch(
        self,
        scores: torch.Tensor,
        lists: torch.Tensor,
        reliability: torch.Tensor,
        inputs: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(T(c), w(c), KL_T)`` of each example (design item 2); the input's own items are left
        out of the student's softmax with ``kl_exclude_seen`` (the black box never lists them)."""
        temp, w = self.temperature(reliability), self.weight(reliability)
        exclude = prefix_item_mask(inputs, rows, cols, scores.shape[1]) if self.config.kl_exclude_seen else None
        return temp, w, kl_rank_distillation(scores, lists, temp, exclude=exclude, scale_t2=self.config.kl_scale_t2)

    def ranking_term(self, scores: torch.Tensor, lists: torch.Tensor, negatives: torch.Tensor, stability: torch.Tensor) -> torch.Tensor:
        """Ranking consistency (design item 3): pairwise or listwise, listed items weighted by
        their cross-scale stability (``stability_weighting``)."""
        cfg = self.config
        weights = item_weights(stability, cfg.stability_floor) if cfg.stability_weighting else torch.ones_like(stability)
        list_scores = scores.gather(1, lists.clamp(min=0))
        neg_scores = scores.gather(1, negatives.clamp(min=0))
        if cfg.rank_loss == "pairwise":
            return pairwise_consistency(list_scores, neg_scores, lists >= 0, weights, cfg.margin, negatives >= 0)
        return listwise_consistency(list_scores, neg_scores, lists >= 0, weights, negatives >= 0)

    def chosen_views(self, batch: StudentBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, v)``: the probe views trained this step — all of each sequence's, or
        ``probe_train_views`` of them drawn uniformly (from the training loop's private RNG)."""
        have = batch.extras["probe_lists"][..., 0] >= 0
        limit = self.config.probe_train_views
        if limit is not None and have.shape[1] > limit:
            keys = torch.where(have, torch.rand(have.shape, device=have.device), torch.full(have.shape, 2.0, device=have.device))
            have &= keys.argsort(1).argsort(1) < limit
        b, v = torch.nonzero(have, as_tuple=True)
        return b, v

    def view_loss(
        self, student: SequentialRecommender, batch: StudentBatch, prefix_hidden: torch.Tensor, lead: int, logs: dict[str, Any]
    ) -> torch.Tensor | None:
        """The probes' share of the loss: each chosen view is an input whose target is its own
        answer, under the same per-branch objective as its prefix (the prefix's reliability sets
        T(c) and w(c); its listed items weigh by their cross-scale stability), plus — with
        ``probe_infonce`` — InfoNCE between the view's and its prefix's representations, weighted
        by the agreement of their answers (views of one prefix are not each other's negatives)."""
        cfg = self.config
        b, v = self.chosen_views(batch)
        if b.numel() == 0:
            return None
        views = batch.extras["probe_views"][b, v].long()
        views = views[:, int(first_columns(views).min().clamp(max=views.shape[1] - 1)) :]
        indices = student.prepare(views)
        vrows, _ = last_positions(indices)
        hidden = student.represent_last(indices)
        scores = student.logits(hidden).float()
        lists = batch.extras["probe_lists"][b, v].long()
        owner_col = batch.extras["probe_col"][b, v].long()
        reliability = batch.extras["probe_reliability"][b, v].float()
        # every item of the view is excluded from its softmax (a student's prepare may trim the input)
        if self.kl_weighs_nothing:
            w, kl = torch.zeros_like(reliability), torch.zeros_like(reliability)
        else:
            _, w, kl = self.high_branch(scores, lists, reliability, views, vrows, torch.full_like(vrows, views.shape[1] - 1))
        rank = None
        if cfg.ranking_consistency:
            generator = torch.Generator(device=scores.device).manual_seed(int(torch.randint(0, 2**62, (1,))))
            negatives = sample_negatives(lists, batch.negatives.shape[1], student.num_items, generator)
            rank = self.ranking_term(scores, lists, negatives, batch.extras["probe_stability"][b, v].float())
        contrastive = None
        if cfg.infonce and cfg.probe_infonce and cfg.realign == 0.0:  # a realigned batch moves the prefixes
            agree = batch.extras["probe_agree"][b, v].float()
            contrastive = self.view_contrast(batch, prefix_hidden, hidden, b, owner_col - lead, agree)
        logs["probe_views"] = float(b.numel())
        logs["probe_kl"] = kl.mean().detach()
        return bahsd_loss(w, kl, rank, contrastive, cfg.infonce_weight)

    def view_contrast(
        self,
        batch: StudentBatch,
        prefix_hidden: torch.Tensor,
        view_hidden: torch.Tensor,
        b: torch.Tensor,
        owner_cols: torch.Tensor,
        agree: torch.Tensor,
    ) -> torch.Tensor:
        """``[Q]``: ``agree_q`` × InfoNCE between view ``q`` and its prefix (in-batch negatives; the
        other views and prefixes of the same sequence are left out of the softmax); 0 for a view whose prefix is
        not among this step's selected prefixes."""
        width = batch.inputs.shape[1]
        device = view_hidden.device
        where = torch.full((batch.inputs.shape[0], width), -1, dtype=torch.long, device=device)
        where[batch.rows, batch.cols] = torch.arange(batch.rows.numel(), device=device)
        inside = (owner_cols >= 0) & (owner_cols < width)
        owner = torch.where(inside, where[b, owner_cols.clamp(0, width - 1)], torch.full_like(b, -1))
        found = torch.nonzero(owner >= 0, as_tuple=True)[0]
        out = torch.zeros(b.numel(), device=device)
        if found.numel() < 2:
            return out
        # other prefixes of the same sequence share most of its items: not negatives (as for the prefixes' InfoNCE)
        terms = info_nce(view_hidden[found].float(), prefix_hidden[owner[found]].float(), self.config.infonce_tau, groups=b[found])
        return out.index_put((found,), agree[found] * terms)


# --------------------------------------------------------------------------- recipe
def _real_sequences(config: BAHSDConfig, knowledge: SequenceKnowledge) -> np.ndarray:
    if knowledge.sequences is None:
        raise ConfigError("source: 'real' needs the attacker's sequences (knowledge.sequences), which this attacker lacks")
    seqs = np.asarray(knowledge.sequences, dtype=np.int64)
    if seqs.ndim != 2:
        raise ConfigError(f"knowledge.sequences must be [N, L], got shape {seqs.shape}")
    if config.max_len is not None and seqs.shape[1] > config.max_len:
        seqs = seqs[:, -config.max_len :]
    keep = (seqs != PAD).any(1)
    if config.budget_sequences is not None:
        keep &= np.cumsum(keep) <= config.budget_sequences
    return seqs[keep]


def _queried_mask(seqs: np.ndarray, prefixes: str) -> ExtractionSet:
    """A dummy set whose ``queried`` mask is what ``label_sequences`` would query (for planning)."""
    valid = seqs != PAD
    if prefixes == "last":
        last = np.zeros_like(valid)
        rows = np.flatnonzero(valid.any(1))
        last[rows, seqs.shape[1] - 1 - np.argmax(valid[rows, ::-1], axis=1)] = True
        valid = last
    lists = np.where(valid, 0, -1).astype(np.int32)[..., None]
    return ExtractionSet(seqs, lists, 0)


def _gather_data(
    config: BAHSDConfig, knowledge: SequenceKnowledge, client: BlackBoxClient, rng: np.random.Generator, spec: ProbeSpec | None
) -> tuple[ExtractionSet, int | None, int]:
    """Sequences and their labels under the split budget; returns ``(data, probe_budget, max_len)``."""
    allowance = query_allowance(client, config.budget_queries)
    if allowance is not None and allowance < 1:
        raise ConfigError(
            f"budget_queries: a query budget of {allowance} cannot pay for a single query (the black box's remaining budget included)"
        )
    if config.source == "real":
        seqs = _real_sequences(config, knowledge)
        max_len = seqs.shape[1]
        label_cost = int(_queried_mask(seqs, config.real_prefixes).queried.sum())
        probe_cost = planned_probe_queries(_queried_mask(seqs, config.real_prefixes), spec) if spec else 0
        label_budget = allowance
        if allowance is not None and label_cost + probe_cost > allowance:
            label_budget = min(allowance, max(1, math.floor(allowance * label_cost / (label_cost + probe_cost))))
        data = label_sequences(
            client, seqs, k=config.k, prefixes=config.real_prefixes, query_batch=config.query_batch, query_budget=label_budget
        )
    else:
        max_len = sequence_length(config, knowledge, client)
        per_seq_probes = probes_per_sequence(max_len, spec) if spec else 0
        if config.budget_sequences is not None:
            n = int(config.budget_sequences)
        elif allowance is None:
            raise ConfigError("budget_sequences / budget_queries: set one (the black box's budget is unlimited)")
        else:
            n = max(1, math.ceil(allowance / (max_len + per_seq_probes)))
        # at least one query for the sequences while any is left; none when none is (synthesize
        # then refuses, as DFME does), never more than the allowance
        synth_budget = None if allowance is None else min(allowance, max(1, allowance - n * per_seq_probes))
        data = synthesize(
            client,
            strategy=config.synthesis,
            num_sequences=n,
            max_len=max_len,
            k=config.k,
            rng=rng,
            query_batch=config.query_batch,
            query_budget=synth_budget,
        )
    probe_budget = None if allowance is None else max(0, allowance - data.queries)
    return data, probe_budget, max_len


def _gather_and_probe(
    config: BAHSDConfig,
    knowledge: SequenceKnowledge,
    client: BlackBoxClient,
    data_seed: np.random.SeedSequence,
    probe_seed: np.random.SeedSequence,
) -> tuple[ExtractionSet, dict[str, Any]]:
    """Sequences and their labels, then the probes (or constant reliability without them); the
    data and what the row reports of their gathering (queries, prefixes probed, seconds)."""
    spec = config.probe_spec() if config.probes else None
    started = time.perf_counter()
    data, probe_budget, max_len = _gather_data(config, knowledge, client, np.random.default_rng(data_seed), spec)
    data_queries, gather_seconds = data.queries, time.perf_counter() - started
    started = time.perf_counter()
    if spec is not None:
        result = probe(client, data, spec, rng=np.random.default_rng(probe_seed), query_batch=config.query_batch, query_budget=probe_budget)
        data, probe_queries, probed = result.data, result.queries, result.probed_prefixes
    else:
        data = ExtractionSet(data.sequences, data.lists, data.queries, {**data.extras, **constant_extras(data, config.default_reliability)})
        probe_queries, probed = 0, 0
    return data, {
        "max_len": max_len,
        "queries_sequences": int(data_queries),
        "queries_probes": int(probe_queries),
        "probed_prefixes": int(probed),
        "synthesis_seconds": gather_seconds,
        "probe_seconds": time.perf_counter() - started,
    }


def _add_view_extras(data: ExtractionSet, config: BAHSDConfig) -> None:
    """The InfoNCE view length of every prefix and, where probes were kept, each probe view's
    reliability (that of the prefix it is a view of); derived, so added after the gathered data
    is saved or taken up again."""
    data.extras["view_len"] = suffix_lengths(prefix_lengths(data.sequences), config.infonce_scale).astype(np.int32)
    if "probe_col" in data.extras:
        cols = data.extras["probe_col"]
        rows = np.broadcast_to(np.arange(len(cols))[:, None], cols.shape)
        data.extras["probe_reliability"] = np.where(cols >= 0, data.extras["reliability"][rows, cols.clip(0)], 0.0).astype(np.float32)


@register_recipe(
    "bahsd",
    BAHSDConfig,
    needs=("queries",),
    resumable=True,
    summary="BAHSD: multi-scale probing + reliability-adaptive KL / ranking-consistency / InfoNCE distillation",
)
def bahsd(
    config: BAHSDConfig,
    knowledge: SequenceKnowledge,
    client: BlackBoxClient,
    *,
    seed: int,
    device: str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None = None,
    progress: bool = False,
    workdir: str | os.PathLike | None = None,
) -> AttackResult:
    """Sequences → probes → :class:`BAHSDObjective` training of a fresh ``config.student``.

    ``workdir``: the run's directory; the sequences, probes and student epochs saved there by an
    earlier attempt are taken up again (:mod:`raysteal.extraction.resume`; no query repeated)."""
    if knowledge.num_items != client.num_items:
        raise ConfigError(f"knowledge has {knowledge.num_items} items but the black box {client.num_items}")
    data_seed, probe_seed, student_seed, train_seed = np.random.SeedSequence([int(seed), 0xBA45D]).spawn(4)
    gather = functools.partial(_gather_and_probe, config, knowledge, client, data_seed, probe_seed)
    data, meta, reused = gathered_once(workdir, run_key(config, seed, knowledge.num_items), gather)
    max_len = int(meta["max_len"])
    _add_view_extras(data, config)

    queried = data.queried
    reliability = data.extras["reliability"]
    measured = data.extras["probed"] & queried
    threshold = config.threshold
    if config.threshold_quantile is not None and measured.any():
        threshold = float(np.quantile(reliability[measured], config.threshold_quantile))
    objective = config.objective(threshold)
    c = torch.from_numpy(reliability[queried])
    w = objective.weight(c) if isinstance(objective, BAHSDObjective) else torch.zeros_like(c)

    student = seeded_student(config.student_config(max_len), knowledge.num_items, int(student_seed.generate_state(1)[0]))
    stats = train_student(
        student,
        data,
        objective,
        seed=int(train_seed.generate_state(1)[0]),
        device=device,
        on_epoch=on_epoch,
        progress=progress,
        **student_resume_options(workdir),
        **config.training_options(),
    )
    info: dict[str, Any] = {
        "source": config.source,
        "synthesis": config.synthesis if config.source == "synthetic" else "real",
        "sequences": data.num_sequences,
        "queried_prefixes": int(queried.sum()),
        "queries_sequences": meta["queries_sequences"],
        "queries_probes": meta["queries_probes"],
        "probed_prefixes": meta["probed_prefixes"],
        # probe answers the student may train on (probe_train_views of a sequence's are drawn each step)
        "probe_answers_trainable": int((data.extras["probe_lists"][..., 0] >= 0).sum())
        if config.probes and config.probe_training and "probe_lists" in data.extras
        else 0,
        "reliability_mean": float(c.mean()) if len(c) else math.nan,
        "reliability_probed_mean": float(reliability[measured].mean()) if measured.any() else math.nan,
        "threshold": float(threshold),
        "high_confidence_share": float((w > 0.5).float().mean()) if len(w) else math.nan,
        "mixing_weight_mean": float(w.mean()) if len(w) else math.nan,
        "synthesis_seconds": meta["synthesis_seconds"],
        "probe_seconds": meta["probe_seconds"],
        "data_reused": reused,
        **{key: value for key, value in stats.items() if key != "history"},
        "history": stats["history"],
    }
    return AttackResult(clone=student, queries=data.queries, info=info)
