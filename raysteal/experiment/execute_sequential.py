"""One run against a sequential target, in-process: knowledge → extraction → student → row.

Protocol (Yue et al. 2021 §4; BAHSD): the attacker holds a query client (ranked ids only) and,
for data-free attacks, nothing else; attacks with real knowledge (Zhu et al.'s PTD/PTQ/PTAQ on
sequential targets, Table 8) also hold ``attacker_fraction`` of the users' training sequences
and, when the split has one, the auxiliary half. The student is scored on every evaluable user
the attacker does not know — data-free attackers know none — with that user's history before its
held-out test item as input: Agr@1 / Agr@10 (Yue) overall and for head / tail users (the longest
20% of sequences are head), NDCG agreement, and the student's own HR / NDCG@10 on the held-out
next item beside the teacher's. The popularity clone (most popular unseen items) is the floor.
Against a watermarked target the clone is also put to ``raysteal verify``'s test
(:mod:`raysteal.experiment.watermark_check`): the row's ``carries_watermark`` and p-value.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np

import raysteal
from raysteal.attacks.registry import get_recipe
from raysteal.data.splits import attacker_users
from raysteal.errors import ConfigError
from raysteal.experiment.context import EvaluationUsers, SequentialRunData
from raysteal.experiment.execute import cache_hits, check_list_lengths, child_rng, finish_row, remembering, row_head
from raysteal.experiment.run import PopularityFloor
from raysteal.experiment.watermark_check import clone_watermark_columns
from raysteal.extraction import ExtractionConfigBase, SequenceKnowledge, run_extraction
from raysteal.extraction.evaluate import extraction_metrics, next_item_metrics, student_lists
from raysteal.extraction.resume import claim_run_directory
from raysteal.metrics import agreement_at_k, mean
from raysteal.oracle import RankingEngine, build_defenses
from raysteal.oracle.cost import defense_cost
from raysteal.training.guard import target_columns

if TYPE_CHECKING:
    from raysteal.experiment.run import Run
    from raysteal.oracle.protocol import BlackBoxClient


SEQUENTIAL_PROBE_METRICS = ("agr@1", "agr@10", "agr@10/head", "agr@10/tail", "ndcg_agr@10")
"""Per-epoch metrics of a sequential-extraction trial (Yue et al.'s Agr@1/Agr@10, BAHSD's head/tail)."""

SEQUENTIAL_FINAL_METRICS = SEQUENTIAL_PROBE_METRICS + (
    "kl@10",
    "agr@1/head",
    "agr@1/tail",
    "ndcg_agr@10/head",
    "ndcg_agr@10/tail",
    "agr@k",
    "student_hr@10",
    "student_ndcg@10",
    "queries",
    "wall_s",
)
"""Numeric row columns a Tune trial of a sequential target reports once, when it finishes (:func:`execute_sequential_run`)."""


def attacker_population(run: Run, data: EvaluationUsers) -> np.ndarray | None:
    """The users set apart as the attacker population (``split.attacker_population`` of the
    target's users, drawn from ``split.target_seed``: the same for every seed and attack), or
    ``None`` when the split has none."""
    share = run.split.attacker_population
    if not share:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([run.split.target_seed, 0xA77AC]))
    return np.sort(attacker_users(data.train, fraction=float(share), seed=rng))


def known_users(run: Run, data: EvaluationUsers) -> np.ndarray:
    """The target users whose sequences an attacker with real data holds (``split.attacker_fraction``
    of them, drawn from the run's seed): Zhu et al.'s 10% of the target users; with an attacker
    population, that share of the population (BAHSD's long-tailed setting)."""
    fraction = run.split.attacker_fraction
    population = attacker_population(run, data)
    if population is None:
        return np.sort(attacker_users(data.train, fraction=fraction, seed=child_rng(run.seed, 1)))
    n = min(max(int(round(fraction * len(population))), 1), len(population))
    return np.sort(child_rng(run.seed, 1).choice(population, size=n, replace=False))


def scored_users(run: Run, data: EvaluationUsers) -> np.ndarray:
    """bool ``[U]``: the evaluation users a run may be scored on, whatever its attack — all of them
    but the attacker population (when the split has one), and of those the ``search`` or ``report``
    half (``split.scored_users``; each user's half is fixed by ``target_seed``)."""
    keep = np.ones(len(data.eval_users), dtype=bool)
    population = attacker_population(run, data)
    if population is not None:
        keep &= ~np.isin(data.eval_users, population)
    half = run.split.scored_users
    if half != "all":
        rng = np.random.default_rng(np.random.SeedSequence([run.split.target_seed, 0x5EA4C]))
        in_search = rng.random(data.train.num_users)[data.eval_users] < 0.5
        keep &= in_search if half == "search" else ~in_search
    return keep


def sequential_knowledge(run: Run, data: SequentialRunData, needs_data: bool):
    """The attacker's knowledge and the mask of evaluation users it knows (never scored)."""
    known_eval = np.zeros(len(data.eval_users), dtype=bool)
    if not needs_data:
        return SequenceKnowledge(num_items=data.train.num_items, max_len=data.max_len), known_eval
    known = known_users(run, data)
    known_eval[np.isin(data.eval_users, known)] = True
    auxiliary = data.auxiliary.padded_sequences(data.max_len) if data.auxiliary.num_users else None
    knowledge = SequenceKnowledge(
        num_items=data.train.num_items,
        max_len=data.max_len,
        sequences=data.train.padded_sequences(data.max_len, known),
        auxiliary=auxiliary,
    )
    return knowledge, known_eval


def popularity_lists(data: SequentialRunData, sequences: np.ndarray, k: int) -> np.ndarray:
    """The popularity clone: the ``k`` most popular training items not in each input sequence."""
    order = np.argsort(-data.item_popularity, kind="stable")
    width = min(len(order), k + sequences.shape[1])  # enough candidates even if all inputs are popular
    head = order[:width]
    out = np.empty((len(sequences), k), dtype=np.int64)
    for start in range(0, len(sequences), 512):
        chunk = sequences[start : start + 512]
        seen = (head[None, :, None] == chunk[:, None, :]).any(-1)  # [chunk, width]
        rank = np.where(seen, width, np.arange(width)[None, :])
        out[start : start + len(chunk)] = head[np.argsort(rank, axis=1, kind="stable")[:, :k]]
    return out


def _scored_metrics(student: np.ndarray, data: SequentialRunData, keep: np.ndarray, is_head: np.ndarray, k: int) -> dict[str, float]:
    teacher = data.teacher_lists[keep]
    metrics = dict(extraction_metrics(student[keep], teacher, head=is_head[keep], test_items=data.test_items[keep]))
    metrics["agr@k"] = mean(np.asarray(agreement_at_k(teacher[:, :k], student[keep][:, :k])))
    teacher_acc = next_item_metrics(teacher, data.test_items[keep], k=10)
    student_acc = next_item_metrics(student[keep], data.test_items[keep], k=10)
    metrics.update({f"teacher_{name}": value for name, value in teacher_acc.items()})
    metrics.update({f"student_{name}": value for name, value in student_acc.items()})
    return metrics


def _known_user_agreement(student: np.ndarray, data: SequentialRunData, known: np.ndarray, k: int) -> dict[str, float]:
    """Agreement on the users an attacker with real data knows (for every attack, data-free ones
    included, so rows compare): Zhu et al.'s Table 8 protocol scores the attacker's own users,
    whose histories a PTD/PTQ/PTAQ student trained on; ``agr@k`` scores everyone else."""
    rows = np.isin(data.eval_users, known)
    if not rows.any():
        return {}
    teacher, mine = data.teacher_lists[rows], student[rows]
    return {
        "known_users": int(rows.sum()),
        "agr@k/known": mean(np.asarray(agreement_at_k(teacher[:, :k], mine[:, :k]))),
        "agr@10/known": mean(np.asarray(agreement_at_k(teacher[:, :10], mine[:, :10]))),
    }


def target_fingerprint(data: SequentialRunData) -> str:
    """Names the black box a run's saved answers came from: its top lists for the evaluation
    users (a retrained target answers differently), the dataset, target and code version."""
    digest = hashlib.sha256(np.ascontiguousarray(data.teacher_lists).tobytes()).hexdigest()[:24]
    return f"{data.dataset}/{data.target_name} lists={digest} raysteal={raysteal.__version__}"


def execute_sequential_run(
    run: Run,
    data: SequentialRunData,
    client: BlackBoxClient,
    device: str = "cpu",
    on_epoch=None,
    workdir: str | None = None,
    phase_cache: str | None = None,
) -> dict[str, Any]:
    """Run one sequential extraction and measure it; returns the results row.

    ``workdir``: the run's scratch directory (:meth:`raysteal.results.store.ResultStore.work_dir`);
    DFME and BAHSD keep their gathered data and student state there and an attempt after a crash
    goes on from them (the row's ``info/data_reused`` and ``info/resumed_epoch`` say so).
    ``phase_cache``: the results directory's shared cache; Zhu et al.'s recipes keep their data
    phases there, trained once for every run of the same seed (``info/phases_shared``)."""
    started, started_at = time.perf_counter(), time.time()
    k = run.k
    width = max(k, 10)
    name, config = run.attack_name, run.attack
    info: dict[str, Any] = {}
    hyper: dict[str, Any] = {}
    proof: dict[str, Any] = {}
    # the popularity floor is the floor of either setting
    labels: dict[str, Any] = {"setting": "floor", "baseline": False, "variant": "popularity"}
    if isinstance(config, PopularityFloor):
        knowledge, known_eval = sequential_knowledge(run, data, needs_data=False)
        student = popularity_lists(data, data.eval_sequences, width)
        queries, student_model = 0, "popularity"
    else:
        assert isinstance(config, ExtractionConfigBase), "a sequential target's run carries an extraction config"
        check_list_lengths(k, config.k, data.train.num_items)
        if workdir is not None and get_recipe(config.attack, "sequential").resumable:
            claim_run_directory(workdir, target_fingerprint(data))
        needs_data = bool(getattr(config, "uses_real_sequences", False))
        knowledge, known_eval = sequential_knowledge(run, data, needs_data)
        client = remembering(run, client)
        result = run_extraction(
            config, knowledge, client, seed=run.seed, device=device, on_epoch=on_epoch, workdir=workdir, phase_cache=phase_cache
        )
        student = np.asarray(student_lists(result.clone, data.eval_sequences, width, device=device))
        if run.target.watermark is not None:  # could the owner prove this theft? (raysteal verify's test)
            proof = clone_watermark_columns(result.clone, run.target.watermark, device=device)
        # a recipe counts the rows it asked for; the remembered ones were never charged (a run
        # resumed from its saved answers asks nothing, so its hits are those of this attempt: 0)
        queries, student_model = int(result.queries) - cache_hits(client).get("cache_hits", 0), str(config.student.get("model", "?"))
        hyper = config.model_dump(mode="json")
        info = result.info
        labels = config.row_labels()
    keep = ~known_eval & scored_users(run, data)
    if not keep.any():
        raise ConfigError("split: no evaluation user is left to score (attacker_population / scored_users / attacker_fraction leave none)")
    is_head = data.head_mask(run.split.head_fraction)

    # the floor of agr@k/lift: the popularity lists' agreement with the teacher on the same users
    popular = student[keep] if isinstance(config, PopularityFloor) else popularity_lists(data, data.eval_sequences[keep], width)
    floor = mean(np.asarray(agreement_at_k(data.teacher_lists[keep][:, :k], popular[:, :k])))
    row: dict[str, Any] = {
        **row_head(run, name, student_model),
        **labels,
        "hyperparameters": hyper,
        "eval_users": int(keep.sum()),
        "head_users": int((is_head & keep).sum()),
        **cache_hits(client),
        **_scored_metrics(student, data, keep, is_head, k),
        **_known_user_agreement(student, data, known_users(run, data), k),
        "popularity_agr@k": floor,
        **proof,
    }
    return finish_row(
        row, data=data, queries=queries, started=started, started_at=started_at, device=device, hyper=hyper, info=info, skip=("attack", "k")
    )


class SequentialEpochProbe:
    """Agreement of a student in training with a sequential teacher, on a seeded subset of the
    evaluation users (their real histories; the final row scores all of them): Yue et al.'s
    Agr@1 / Agr@10 and BAHSD's head / tail split, as in
    :func:`~raysteal.experiment.execute_sequential.execute_sequential_run`."""

    def __init__(self, run: Run, data, device: str = "cpu", max_users: int = 1024):
        keep = scored_users(run, data)  # never the attacker population, only the split's half
        if run.uses_real_sequences:
            keep &= ~np.isin(data.eval_users, known_users(run, data))  # nor the users whose histories it trained on
        scored = np.flatnonzero(keep)
        n = len(scored)
        rng = np.random.default_rng(np.random.SeedSequence([run.seed, 7]))
        self.rows = scored if n <= max_users else scored[np.sort(rng.choice(n, size=max_users, replace=False))]
        self.sequences = data.eval_sequences[self.rows]
        self.teacher = data.teacher_lists[self.rows]
        self.is_head = data.head_mask(run.split.head_fraction)[self.rows]
        self.device = device

    def __call__(self, stats: dict[str, Any]) -> dict[str, float]:
        """The measures of ``stats["model"]`` (an epoch's stats)."""
        lists = np.asarray(student_lists(stats["model"], self.sequences, max(10, self.teacher.shape[1]), device=self.device))
        return {k: float(v) for k, v in extraction_metrics(lists, self.teacher, head=self.is_head).items()}


class SequentialEvaluation:
    """How runs against a sequential target (SASRec, NARM, ...) are measured: the row
    (:func:`execute_sequential_run`), the per-epoch probe Tune reports
    (:class:`SequentialEpochProbe`) and the names of what they report."""

    kind: str = "sequential"
    probe_metrics: tuple[str, ...] = SEQUENTIAL_PROBE_METRICS
    final_metrics: tuple[str, ...] = SEQUENTIAL_FINAL_METRICS
    probe_user_cap: int | None = 1024  # a student scores long histories
    probe_scope: str = (
        "at most 1,024 seeded users of those the row scores: the row's own value when it scores no more; "
        "else the row of raysteal run can differ by that sampling of users"
    )
    keeps_work: bool = True  # DFME and BAHSD go on from the answers and student state saved in the run's scratch directory

    def execute(
        self,
        run: Run,
        data: SequentialRunData,
        client: BlackBoxClient,
        *,
        device: str = "cpu",
        on_epoch=None,
        workdir: str | None = None,
        aux_cache: str | None = None,
    ) -> dict[str, Any]:
        """The run's results row; ``aux_cache`` (the results directory's shared cache) keeps the
        training phases that Zhu et al.'s recipes share between runs (:mod:`raysteal.extraction.phase_cache`)."""
        return execute_sequential_run(run, data, client, device=device, on_epoch=on_epoch, workdir=workdir, phase_cache=aux_cache)

    def probe(self, run: Run, data: SequentialRunData, device: str, max_users: int) -> SequentialEpochProbe:
        return SequentialEpochProbe(run, data, device, max_users)

    def clone_name(self, run: Run) -> str:
        student = getattr(run.attack, "student", None)
        return "popularity" if student is None else str(student.get("model", "?"))

    def cost_columns(self, spec, data: SequentialRunData, k: int) -> dict[str, float]:
        """The columns every row of this target and ``k`` shares: the popularity guard's and the
        teacher's own Recall/NDCG@k on the evaluation users' next items, with and without the
        serving defense (its cost to users; the rows carry ``teacher_ndcg@10`` besides)."""
        engine = RankingEngine(spec.model)
        chain = build_defenses(spec.defenses, spec.item_popularity)
        cost = defense_cost(engine, chain, data.eval_sequences, data.test_items, k=k)
        return {
            **target_columns(data.target_metrics),
            "target_recall@k/all_users": cost[f"recall@{k}"],
            "target_ndcg@k/all_users": cost[f"ndcg@{k}"],
            "target_recall@k/defended": cost[f"recall@{k}/defended"],
            "target_ndcg@k/defended": cost[f"ndcg@{k}/defended"],
        }


SEQUENTIAL = SequentialEvaluation()
