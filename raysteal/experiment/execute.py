"""One run of an experiment, in-process: knowledge → attack → clone → agreement row.

Protocol (Zhu et al. §5 and App. A.1, plus a held-out measure): the attacker knows
``attacker_fraction`` of the target users with their training interactions; it queries the
lists of ``query_fraction`` of them. ``agr@k`` is Zhu's Agreement@K (Eq. 3) on the queried users
(the paper's protocol: query fine-tuning is scored on the lists it fitted); ``agr@k/heldout``
is the agreement on the known users whose lists were never queried — the honest measure of
what was stolen. Both use all items as candidates with each user's seen items excluded.
``popularity_agr@k`` is the agreement the popularity recommender's lists reach on the same users
(the floor of ``agr@k/lift``; :mod:`raysteal.training.guard`). ``agr@k/served`` is the agreement
on the queried users with the lists the defended black box serves them (the run's serving
defenses applied to the true lists once, seeded; ``agr@k`` when nothing alters lists): what an
attacker sees rather than what the target ranks (Zhu et al.'s Fig. 7 reads agreement this way:
attacks that never query lose agreement there too). The target's and the clone's own
accuracy (``target_*`` / ``clone_*`` Recall and NDCG@k) follow the one protocol of
:mod:`raysteal.training.evaluate`: the test item ranked among the items the user has not
interacted with in training or validation, ties counted against it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch

import raysteal
from raysteal.attacks import AttackConfig, Knowledge, run_attack
from raysteal.data.splits import attacker_users, head_tail_groups, sampled_interactions
from raysteal.errors import ConfigError
from raysteal.experiment.aux_cache import needs_auxiliary_model, shared_auxiliary_model
from raysteal.experiment.context import AttackerLogs, RunData
from raysteal.metrics import agreement_at_k, mean, topk_items
from raysteal.oracle import RankingEngine, build_defenses
from raysteal.oracle.cache import CachingClient
from raysteal.oracle.cost import defense_cost
from raysteal.provenance import code_commit
from raysteal.results.summary import defense_name
from raysteal.training.evaluate import append_items, held_out_ranks
from raysteal.training.gro import GROConfig
from raysteal.training.guard import popularity_lists, ranked_accuracy, target_columns
from raysteal.watermark.spec import WatermarkConfig

if TYPE_CHECKING:  # annotations only: the oracle package is not imported here at run time
    from raysteal.experiment.run import Run
    from raysteal.oracle.protocol import BlackBoxClient


PROBE_METRICS = ("agr@k", "agr@k/heldout", "agr@k/all", "agr@10", "agr@10/heldout")
"""Metrics a Tune trial of a collaborative target reports after each clone-training epoch (ASHA's signal) and at the end."""

FINAL_METRICS = PROBE_METRICS + (
    "agr@k/served",
    "agr@k/head",
    "agr@k/tail",
    "target_recall@k",
    "target_ndcg@k",
    "clone_recall@k",
    "clone_ndcg@k",
    "queries",
    "wall_s",
)
"""Numeric row columns a Tune trial of a collaborative target reports once, when it finishes (usable with a FIFO scheduler)."""


def child_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


SERVED_LISTS_STREAM = 4
"""The random stream (:func:`child_rng`) of the defenses' draws in :func:`served_lists`."""


def served_lists(run: Run, data: RunData, lists: np.ndarray) -> np.ndarray:
    """``lists`` (the target's true top lists, ``[U, k]``) as the run's black box serves them:
    its serving defenses (popular-item mixing, noise, truncation, ...) applied once with a seeded
    draw, padded back to width ``k`` with ``-1`` (matching nothing) where a defense shortens them."""
    return build_defenses(run.defense_settings, data.train.item_counts).served(lists, child_rng(run.seed, SERVED_LISTS_STREAM))


def build_knowledge(run: Run, data: AttackerLogs):
    """The attacker's knowledge for this run (seeded by the run's seed)."""
    split, seed = run.split, run.seed
    if split.attacker_unit == "interactions":  # a share of the interactions: every user holding one of them
        held, known = sampled_interactions(data.train, split.attacker_fraction, seed=child_rng(seed, 1))
    else:
        known = np.sort(attacker_users(data.train, fraction=split.attacker_fraction, seed=child_rng(seed, 1)))
        held = data.train.select_users(known, name="attacker-target-data")
    rng = child_rng(seed, 2)
    order = rng.permutation(len(known))
    n_query = max(1, int(round(split.query_fraction * len(known))))
    query_users = np.sort(order[:n_query])
    auxiliary = data.auxiliary
    if split.auxiliary_size < 1.0 and auxiliary.num_users:
        aux_rng = child_rng(seed, 3)
        keep = np.sort(aux_rng.permutation(auxiliary.num_users)[: max(1, int(round(split.auxiliary_size * auxiliary.num_users)))])
        auxiliary = auxiliary.select_users(keep)
    knowledge = Knowledge(
        target_data=held,
        target_user_ids=known,
        auxiliary=auxiliary,
        query_users=query_users,
    )
    return knowledge


def clone_lists(clone, knowledge, k: int, device: str, chunk: int = 2048) -> np.ndarray:
    """The clone's top-``k`` for each known user, the user's known items excluded."""
    data = knowledge.target_data
    out = np.empty((data.num_users, k), dtype=np.int64)
    clone = clone.to(device).eval()
    with torch.no_grad():
        for start in range(0, data.num_users, chunk):
            stop = min(start + chunk, data.num_users)
            scores = clone.score(torch.arange(start, stop, device=device)).float().cpu()
            lo, hi = data.indptr[start], data.indptr[stop]
            indptr = data.indptr[start : stop + 1] - lo
            out[start:stop] = np.asarray(topk_items(scores, k, exclude=(indptr, data.items[lo:hi])))
    return out


def held_out_accuracy(clone, knowledge, data: RunData, k: int, device: str) -> dict[str, float]:
    """The target's and the clone's Recall/NDCG@k on the known users' test items, one protocol
    (:func:`raysteal.training.evaluate.held_out_ranks`: training and validation items excluded,
    ties against the test item); NaN where the target's ranks were not prepared
    (``data.target_metrics`` lacks ``test_ranks`` / ``valid_items``)."""
    ranks, valid = data.target_metrics.get("test_ranks"), data.target_metrics.get("valid_items")
    if ranks is None or valid is None:
        nan = float("nan")
        return {"target_recall@k": nan, "target_ndcg@k": nan, "clone_recall@k": nan, "clone_ndcg@k": nan}
    users = knowledge.target_user_ids
    known = knowledge.target_data
    exclude = append_items(known.indptr, known.items, np.asarray(valid)[users])
    clone_ranks = held_out_ranks(clone, np.arange(len(users)), data.test_items[users], exclude, device=device, batch_size=2048)
    target_recall, target_ndcg = ranked_accuracy(np.asarray(ranks)[users], k)
    clone_recall, clone_ndcg = ranked_accuracy(clone_ranks, k)
    return {"target_recall@k": target_recall, "target_ndcg@k": target_ndcg, "clone_recall@k": clone_recall, "clone_ndcg@k": clone_ndcg}


def _ray_node_id() -> str:
    """The Ray node this process runs on ("" outside Ray; never starts Ray)."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""


@overload
def remembering(run: Run, client: None) -> None: ...
@overload
def remembering(run: Run, client: BlackBoxClient) -> BlackBoxClient: ...
def remembering(run: Run, client: BlackBoxClient | None) -> BlackBoxClient | None:
    """``client`` behind the attacker's answer memory when the experiment sets ``query_cache``."""
    if client is None or not run.query_cache:
        return client

    return CachingClient(client)


def cache_hits(client: BlackBoxClient | None) -> dict[str, int]:
    """``{"cache_hits": n}`` for a remembering client (rows answered from memory), else nothing."""
    hits = getattr(client, "hits", None)
    return {} if hits is None else {"cache_hits": int(hits)}


def defense_columns(run: Run) -> dict[str, Any]:
    """``defense``: every defense of the run by name (:func:`raysteal.results.summary.defense_name`):
    those trained into the target first -- GRO by its strength, a watermark by its copies, each with
    its other settings where they differ from the defaults (never the watermark's secret key) --
    then the serving chain (``none``, ``popular_mixing(n=10)``, ``gro(strength=0.1)+shuffle(depth=20)``);
    ``target_defense``: the target's part alone; ``defense_chain``: the serving chain as written."""
    trained = []
    for kind, config, shown, hidden in (("gro", run.target.gro, "strength", ()), ("watermark", run.target.watermark, "copies", ("key",))):
        if config is not None:
            fields = (GROConfig if kind == "gro" else WatermarkConfig).model_fields
            changed = {k: v for k, v in config.items() if k not in hidden and k != shown and k in fields and v != fields[k].default}
            trained.append({"type": kind, shown: config[shown], **changed})
    return {
        "defense": defense_name(trained + run.defense_settings),
        "target_defense": defense_name(trained),
        "defense_chain": run.defense_settings,
    }


def row_head(run: Run, attack: str, clone: str) -> dict[str, Any]:
    """The columns every results row starts with: the run's id and what it ran (dataset,
    target, attack, clone, seed, k, defenses, budget, attacker share)."""
    return {
        "run_id": run.id,
        "experiment": run.experiment,
        "dataset": run.dataset.name,
        "preprocess": run.dataset.preprocess,
        "target": run.target.model,
        "target_params": run.target_settings,
        "attack": attack,
        "clone": clone,
        "seed": run.seed,
        "k": run.k,
        **defense_columns(run),
        "budget": -1 if run.budget is None else run.budget,
        "attacker_fraction": run.split.attacker_fraction,
        "head_fraction": run.split.head_fraction,
    }


def finish_row(
    row: dict[str, Any],
    *,
    data,
    queries: int,
    started: float,
    started_at: float,
    device: str,
    hyper: dict[str, Any],
    info: dict[str, Any],
    skip: tuple[str, ...],
) -> dict[str, Any]:
    """Add the target's own accuracy, the cost and provenance columns (queries, start, wall time,
    device, Ray node, code version and commit), and flat ``hp/*`` / ``info/*`` copies of the scalar
    hyperparameters (less ``skip``) and figures; returns ``row``."""
    row.update(
        {
            "target_test_ndcg@10_full": data.target_metrics.get("test", {}).get("ndcg@10_full", float("nan")),
            "queries": int(queries),
            "started_at": started_at,
            "wall_s": time.perf_counter() - started,
            "device": device,
            "node_id": _ray_node_id(),
            "code_version": raysteal.__version__,
            "code_commit": code_commit(),
        }
    )
    row.update({f"hp/{key}": value for key, value in hyper.items() if isinstance(value, (int, float, str, bool)) and key not in skip})
    row.update({f"info/{key}": value for key, value in info.items() if isinstance(value, (int, float, str, bool))})
    return row


def check_list_lengths(k: int, attack_k: int | None, num_items: int) -> None:
    """The experiment's K and an attack's own list length fit the target's catalogue (before any
    work: an attack that never queries would otherwise score lists longer than the catalogue)."""
    for name, value in (("k", k), ("attack k", attack_k)):
        if value is not None and int(value) > num_items:
            raise ConfigError(f"{name}={value} is larger than the catalogue ({num_items} items)")


def execute_run(
    run: Run, data: RunData, client: BlackBoxClient | None, device: str = "cpu", aux_cache: str | None = None, on_epoch=None
) -> dict[str, Any]:
    """Run one attack and measure it; returns the results row. With ``aux_cache``, auxiliary
    models are shared between runs through that directory (identical results, less training).
    ``on_epoch`` is passed to :func:`raysteal.attacks.run_attack` (e.g. Ray Tune's reports)."""
    import dataclasses

    started, started_at = time.perf_counter(), time.time()
    k, config = run.k, run.attack
    assert isinstance(config, AttackConfig), "a collaborative target's run carries an AttackConfig"
    check_list_lengths(k, getattr(config, "k", None), data.train.num_items)
    knowledge = build_knowledge(run, data)
    if aux_cache and needs_auxiliary_model(config) and knowledge.auxiliary is not None:
        aux = shared_auxiliary_model(config, knowledge.auxiliary, run.seed, device, aux_cache)
        knowledge = dataclasses.replace(knowledge, auxiliary_model=aux)
    client = remembering(run, client)
    output = run_attack(config, knowledge, client, seed=run.seed, device=device, on_epoch=on_epoch)
    clone_top = clone_lists(
        output.clone, knowledge, min(max(k, 10), data.train.num_items), device
    )  # Agr@10 needs 10, a tiny catalogue has fewer
    truth = data.truth_lists[knowledge.target_user_ids]
    # the users whose lists were answered: under a budget, a subset of those planned (query_users)
    queried = np.zeros(len(knowledge.target_user_ids), dtype=bool)
    queried[knowledge.query_users if output.answered_users is None else output.answered_users] = True
    agr_k = np.asarray(agreement_at_k(truth[:, :k], clone_top[:, :k]))
    agr_10 = np.asarray(agreement_at_k(truth[:, :10], clone_top[:, :10]))
    agr_served = np.asarray(agreement_at_k(served_lists(run, data, truth[:, :k]), clone_top[:, :k]))

    popular = popularity_lists(data.train, knowledge.target_user_ids, k)  # the floor: the same users, the target's log
    floor_k = np.asarray(agreement_at_k(truth[:, :k], popular))
    # head / tail (BAHSD's groups): every known user, as agr@k/all, by the length of
    # their history in the target's log
    head = head_tail_groups(data.train.user_lengths, run.split.head_fraction).is_head[knowledge.target_user_ids]
    row = {
        **row_head(run, config.attack, config.clone),
        "auxiliary_size": run.split.auxiliary_size,
        "item_overlap": run.split.item_overlap,
        "query_fraction": run.split.query_fraction,
        "target_training": run.split.target_training,
        "attacker_unit": run.split.attacker_unit,
        "hyperparameters": config.model_dump(),
        "known_users": int(len(knowledge.target_user_ids)),
        "queried_users": int(queried.sum()),
        "planned_queried_users": int(len(knowledge.queryable())),
        "agr@k": mean(agr_k[queried]),
        "agr@k/heldout": mean(agr_k[~queried]) if (~queried).any() else float("nan"),
        "agr@k/all": mean(agr_k),
        "agr@k/served": mean(agr_served[queried]),
        **cache_hits(client),
        "head_users": int(head.sum()),
        "agr@k/head": mean(agr_k[head]) if head.any() else float("nan"),
        "agr@k/tail": mean(agr_k[~head]) if (~head).any() else float("nan"),
        "agr@10": mean(agr_10[queried]),
        "agr@10/heldout": mean(agr_10[~queried]) if (~queried).any() else float("nan"),
        "popularity_agr@k": mean(floor_k[queried]),
        **held_out_accuracy(output.clone, knowledge, data, k, device),
    }
    return finish_row(
        row,
        data=data,
        queries=output.queries,
        started=started,
        started_at=started_at,
        device=device,
        hyper=config.model_dump(),
        info=output.info,
        skip=("attack", "clone", "k"),
    )


class EpochProbe:
    """Agreement of a clone in training with the target, on the attacker's known users.

    Built from the run exactly as :func:`~raysteal.experiment.execute.execute_run` builds the
    attacker's knowledge (same seed), so its numbers at the last epoch are the row's
    ``agr@k``, ``agr@k/heldout``, ``agr@k/all``, ``agr@10`` and ``agr@10/heldout`` (Zhu et al.
    Eq. 3) when the attacker knows at most ``max_users`` users (else a seeded subset of them).
    """

    def __init__(self, run: Run, data, device: str = "cpu", max_users: int = 4096):
        knowledge = build_knowledge(run, data)
        n = knowledge.num_users
        rng = np.random.default_rng(np.random.SeedSequence([run.seed, 7]))
        self.rows = np.arange(n) if n <= max_users else np.sort(rng.choice(n, size=max_users, replace=False))
        queried = np.zeros(n, dtype=bool)
        if knowledge.query_users is not None:
            queried[knowledge.query_users] = True
        else:
            queried[:] = True
        self.queried = queried[self.rows]
        self.k = run.k
        self.width = max(self.k, 10)
        self.truth = data.truth_lists[knowledge.target_user_ids[self.rows]]
        assert knowledge.target_data is not None  # build_knowledge always gives the known users' data
        self.seen = knowledge.target_data.select_users(self.rows, name="probe")
        self.device = device

    def lists(self, model, chunk: int = 2048) -> np.ndarray:
        """The model's top lists for the probe users, their known items excluded."""
        import torch

        out = np.empty((len(self.rows), self.width), dtype=np.int64)
        model.eval()
        with torch.no_grad():
            for start in range(0, len(self.rows), chunk):
                stop = min(start + chunk, len(self.rows))
                scores = model.score(torch.as_tensor(self.rows[start:stop], device=self.device)).float().cpu()
                lo, hi = self.seen.indptr[start], self.seen.indptr[stop]
                exclude = (self.seen.indptr[start : stop + 1] - lo, self.seen.items[lo:hi])
                out[start:stop] = np.asarray(topk_items(scores, self.width, exclude=exclude))
        return out

    def __call__(self, stats: dict[str, Any]) -> dict[str, float]:
        """The measures of ``stats["model"]`` (an epoch's stats); ``stats["answered_users"]``, once
        the attack holds its answers, are the queried users (as in the row)."""
        answered = stats.get("answered_users")
        queried = self.queried if answered is None else np.isin(self.rows, np.asarray(answered))
        lists = self.lists(stats["model"])
        agr_k = np.asarray(agreement_at_k(self.truth[:, : self.k], lists[:, : self.k]))
        agr_10 = np.asarray(agreement_at_k(self.truth[:, :10], lists[:, :10]))
        held = ~queried
        return {
            "agr@k": mean(agr_k[queried]),
            "agr@k/heldout": mean(agr_k[held]) if held.any() else math.nan,
            "agr@k/all": mean(agr_k),
            "agr@10": mean(agr_10[queried]),
            "agr@10/heldout": mean(agr_10[held]) if held.any() else math.nan,
        }


class CollaborativeEvaluation:
    """How runs against a collaborative target (BPR-MF, NeuMF, LMF) are measured: the row
    (:func:`execute_run`), the per-epoch probe Tune reports (:class:`EpochProbe`) and the names
    of what they report (:mod:`raysteal.experiment.evaluation` chooses it once per run)."""

    kind: str = "collaborative"
    probe_metrics: tuple[str, ...] = PROBE_METRICS
    final_metrics: tuple[str, ...] = FINAL_METRICS
    probe_user_cap: int | None = None
    probe_scope: str = "at most 4,096 of the attacker's known users: the row's own value when it knows no more"
    keeps_work: bool = False  # a collaborative attack starts over after a crash (no scratch directory)

    def execute(
        self,
        run: Run,
        data: RunData,
        client: BlackBoxClient | None,
        *,
        device: str = "cpu",
        on_epoch=None,
        workdir: str | None = None,
        aux_cache: str | None = None,
    ) -> dict[str, Any]:
        """The run's results row (``workdir`` unused: see :attr:`keeps_work`)."""
        return execute_run(run, data, client, device=device, aux_cache=aux_cache, on_epoch=on_epoch)

    def probe(self, run: Run, data: RunData, device: str, max_users: int) -> EpochProbe:
        return EpochProbe(run, data, device, max_users)

    def clone_name(self, run: Run) -> str:
        return str(getattr(run.attack, "clone", run.attack_name))

    def cost_columns(self, spec, data: RunData, k: int) -> dict[str, float]:
        """The columns every row of this target and ``k`` shares: the popularity guard's and the
        target's own Recall/NDCG@k over all its users, with and without the defense (Fig. 8)."""
        users = np.flatnonzero(data.test_items >= 0)
        engine = RankingEngine(spec.model, data.train.indptr, data.train.items)
        chain = build_defenses(spec.defenses, spec.item_popularity)
        cost = defense_cost(engine, chain, users, data.test_items[users], k=k)
        return {
            **target_columns(data.target_metrics),
            "target_recall@k/all_users": cost[f"recall@{k}"],
            "target_recall@k/defended": cost[f"recall@{k}/defended"],
            "target_ndcg@k/defended": cost[f"ndcg@{k}/defended"],
        }


COLLABORATIVE = CollaborativeEvaluation()
