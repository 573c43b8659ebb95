"""DFME: data-free model extraction of a black-box sequential recommender (Yue et al., RecSys 2021).

The attacker holds nothing but the query client: it grows synthetic sequences against the black
box (autoregressive or random, :func:`raysteal.extraction.synthesis.synthesize`), every prefix one
top-k query under the budget, then trains a student on all prefixes with Yue et al.'s ranking
loss (:mod:`raysteal.extraction.losses`). With a query budget ``B`` (Table 8's QSD-k rows of Zhu
et al.) the recipe grows ``ceil(B / max_len)`` sequences, so the whole budget is spent. Given a
run directory it resumes where an earlier attempt died (:mod:`raysteal.extraction.resume`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from raysteal.attacks.registry import register_recipe
from raysteal.attacks.result import AttackResult
from raysteal.errors import ConfigError
from raysteal.extraction.config import ExtractionConfigBase
from raysteal.extraction.resume import gathered_once, run_key, student_resume_options
from raysteal.extraction.student import dfme_objective, seeded_student, train_student
from raysteal.extraction.synthesis import query_allowance, synthesize
from raysteal.extraction.types import SequenceKnowledge
from raysteal.oracle.protocol import BlackBoxClient


class DFMEConfig(ExtractionConfigBase):
    """DFME hyperparameters (all fields of :class:`ExtractionConfigBase`)."""

    attack: Literal["dfme"] = "dfme"  # pyright: ignore[reportIncompatibleVariableOverride]  # see ExtractionConfigBase.attack

    def row_labels(self) -> dict[str, Any]:
        return {"setting": "synthetic", "baseline": True, "variant": "dfme"}


def synthesis_plan(config: ExtractionConfigBase, client: BlackBoxClient, max_len: int) -> tuple[int, int | None]:
    """``(num_sequences, query_budget)`` from the config's budgets and the client's remaining one.

    ``budget_sequences`` fixes the number of sequences; with a query budget only, there are
    ``ceil(budget / max_len)`` sequences so the budget is spent in full. Neither, with an
    unlimited client, is a ``ConfigError``.
    """
    allowance = query_allowance(client, config.budget_queries)
    if config.budget_sequences is not None:
        return int(config.budget_sequences), allowance
    if allowance is None:
        raise ConfigError("budget_sequences / budget_queries: set one (the black box's budget is unlimited)")
    return max(1, math.ceil(allowance / max_len)), allowance


def sequence_length(config: ExtractionConfigBase, knowledge: SequenceKnowledge, client: BlackBoxClient) -> int:
    """Synthetic sequence length: ``config.max_len``, else the teacher's (knowledge, then client)."""
    length = config.max_len or knowledge.max_len or getattr(client.info, "max_len", None)
    if not length:
        raise ConfigError("max_len: the teacher's max_len is unknown; set max_len")
    return int(length)


@register_recipe(
    "dfme",
    DFMEConfig,
    needs=("queries",),
    summary="Yue et al. 2021: data-free synthetic sequences + ranking-loss distillation",
    resumable=True,
)
def dfme(
    config: DFMEConfig,
    knowledge: SequenceKnowledge,
    client: BlackBoxClient,
    *,
    seed: int,
    device: str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None = None,
    progress: bool = False,
    workdir: str | os.PathLike | None = None,
) -> AttackResult:
    """Synthesize under the budget, then distil a fresh ``config.student`` with the ranking loss.

    ``workdir``: the run's directory; the synthesis and the student's epochs saved there by an
    earlier attempt are taken up again (no query is repeated)."""
    if knowledge.num_items != client.num_items:
        raise ConfigError(f"knowledge has {knowledge.num_items} items but the black box {client.num_items}")
    max_len = sequence_length(config, knowledge, client)
    num_sequences, budget = synthesis_plan(config, client, max_len)
    synth_seed, student_seed, train_seed = np.random.SeedSequence([int(seed), 0xDF3E]).spawn(3)

    def grow() -> tuple[Any, dict[str, Any]]:
        started = time.perf_counter()
        grown = synthesize(
            client,
            strategy=config.synthesis,
            num_sequences=num_sequences,
            max_len=max_len,
            k=config.k,
            rng=np.random.default_rng(synth_seed),
            query_batch=config.query_batch,
            query_budget=budget,
        )
        return grown, {"synthesis_seconds": time.perf_counter() - started}

    data, meta, reused = gathered_once(workdir, run_key(config, seed, knowledge.num_items), grow)
    student = seeded_student(config.student_config(max_len), knowledge.num_items, int(student_seed.generate_state(1)[0]))
    stats = train_student(
        student,
        data,
        dfme_objective(config.margin),
        seed=int(train_seed.generate_state(1)[0]),
        device=device,
        on_epoch=on_epoch,
        progress=progress,
        **student_resume_options(workdir),
        **config.training_options(),
    )
    info: dict[str, Any] = {
        "synthesis": config.synthesis,
        "sequences": data.num_sequences,
        "queried_prefixes": int(data.queried.sum()),
        "synthesis_seconds": meta["synthesis_seconds"],
        "data_reused": reused,
        **{key: value for key, value in stats.items() if key != "history"},
        "history": stats["history"],
    }
    return AttackResult(clone=student, queries=data.queries, info=info)
