"""Checks of an experiment against its data, once the experiment file is read.

:func:`check_experiment_data` loads and preprocesses each dataset the runs use (on the driver,
before Ray starts, any target trains or anything is written) and refuses, in one line naming
the file, the dataset and the key:

* a data file that cannot be read (empty, header only, corrupt Parquet, ...);
* a list length (``k``, an attack's ``k``) longer than the dataset's catalogue;
* a dataset too small for the protocol: a group of users (target, auxiliary, attacker,
  evaluation) that would be empty, so the rows would hold NaN agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError, DataFileError, RaystealError
from raysteal.experiment.config import DatasetEntry, ExperimentConfig, SplitConfig
from raysteal.experiment.context import DatasetContext, load_log, split_log
from raysteal.experiment.run import Run, expand_runs

SEQUENTIAL_MIN_ITEMS = 10
"""A sequential target's rows report Agr@10 and NDCG@10: its catalogue needs 10 items."""


@dataclass(frozen=True)
class UserGroups:
    """How many users each part of the protocol gets in one run."""

    target: int  # the target's users (its half of the log)
    auxiliary: int  # the auxiliary half's users the attacker holds
    attacker: int  # target users the attacker knows
    evaluation: int  # users the clone is scored on beside the queried ones (see ``evaluated``)
    evaluated: str  # what ``evaluation`` counts

    def describe(self) -> str:
        return (
            f"target {self.target}, auxiliary {self.auxiliary}, attacker {self.attacker}, evaluation {self.evaluation} ({self.evaluated})"
        )


def check_experiment_data(
    config: ExperimentConfig, source: str, data_dir: str | None = None, wanted: Callable[[Run], bool] | None = None
) -> None:
    """Load every dataset of ``config``'s runs (those ``wanted`` keeps: e.g. the unfinished ones)
    and check each run against it; the first problem is a ``ConfigError`` / ``DataFileError``."""
    for index, entry in enumerate(config.datasets):
        runs = [(i, run) for i, run in _dataset_runs(config, entry) if wanted is None or wanted(run)]
        if not runs:
            continue
        where = f"{source}: datasets.{index} ({entry.label!r})"
        log = _read_log(entry, data_dir, where)
        contexts: dict[str, DatasetContext] = {}
        checked: set[tuple] = set()  # group counts already checked (they repeat across attacks and seeds)
        for attack_index, run in runs:
            _check_list_lengths(config, run, attack_index, log.num_items, f"{where}, attack {run.attack_name!r}")
            key = run.split.model_dump_json()
            if key not in contexts:
                contexts[key] = _split(log, entry, run.split, where)
            same = _groups_key(run, key)
            if same not in checked:
                _check_groups(run, contexts[key], log, f"{where}, attack {run.attack_name!r}")
                checked.add(same)


def _dataset_runs(config: ExperimentConfig, entry: DatasetEntry) -> list[tuple[int, Run]]:
    """``(attack index, run)`` for every run of ``entry`` (run ids as in the full grid)."""
    out = []
    for index, attack in enumerate(config.attacks):
        part = config.model_copy(update={"datasets": [entry], "attacks": [attack]})
        out += [(index, run) for run in expand_runs(part)]
    return out


def _read_log(entry: DatasetEntry, data_dir: str | None, where: str) -> Interactions:
    """The entry's preprocessed log; an unreadable file is a ``DataFileError`` naming it."""
    try:
        return load_log(entry, data_dir)
    except DataFileError as err:
        raise DataFileError(f"{where}: {err}") from None
    except RaystealError as err:
        raise ConfigError(f"{where}: {err}") from None
    except (OSError, ValueError, pa.ArrowException) as err:  # a reader's own failure, named
        raise DataFileError(f"{where}: {entry.path or entry.name}: not readable ({type(err).__name__}: {err})") from None


def _split(log: Interactions, entry: DatasetEntry, split: SplitConfig, where: str) -> DatasetContext:
    try:
        return split_log(log, entry, split)
    except RaystealError as err:
        raise ConfigError(f"{where}: {log.num_users} users after preprocessing: {err}") from None


# ------------------------------------------------------------------ list lengths
def _check_list_lengths(config: ExperimentConfig, run: Run, attack_index: int, num_items: int, where: str) -> None:
    """The run's ``k`` and its attack's own list length fit the catalogue (what
    :func:`raysteal.experiment.execute.check_list_lengths` checks in the worker)."""
    sequential = run.sequential
    if sequential and num_items < SEQUENTIAL_MIN_ITEMS:
        raise ConfigError(
            f"{where}: a sequential target ({run.target.model!r}) reports Agr@10 and NDCG@10, which need "
            f"at least {SEQUENTIAL_MIN_ITEMS} items; this catalogue has {num_items} after preprocessing"
        )
    k_key = "grid.k" if "k" in config.grid else "k"
    lengths = [(k_key, run.k, "")]
    attack_k = getattr(run.attack, "k", None)
    if attack_k is not None:
        key, note = _attack_k_key(config, attack_index, sequential, k_key)
        lengths.append((key, attack_k, note))
    for key, value, note in lengths:
        if value > num_items:
            raise ConfigError(
                f"{where}: {key}={value}{note} is larger than the catalogue ({num_items} items after "
                f"preprocessing); lower {key} or use a larger dataset"
            )


def _attack_k_key(config: ExperimentConfig, attack_index: int, sequential: bool, k_key: str) -> tuple[str, str]:
    """Where the attack's list length comes from (key, note): the grid, the attack entry, its
    default (a sequential attack's own) or the experiment's ``k``."""
    if "attack.k" in config.grid:
        return "grid.attack.k", ""
    if "k" in config.attacks[attack_index]:
        return f"attacks.{attack_index}.k", ""
    return (f"attacks.{attack_index}.k", " (its default)") if sequential else (k_key, "")


# ------------------------------------------------------------------ user groups
def _check_groups(run: Run, ctx: DatasetContext, log: Interactions, where: str) -> None:
    """Refuse a run one of whose user groups would be empty (its rows would hold NaN), and the
    sequential-only split settings on a collaborative target (they would be ignored)."""
    split = run.split
    if not run.sequential and (split.attacker_population or split.scored_users != "all"):
        raise ConfigError(
            f"{where}: split.attacker_population and split.scored_users apply to sequential targets only; "
            f"target {run.target.model!r} is collaborative (its attacker holds attacker_fraction of the target users)"
        )
    if run.sequential and (split.target_training != "leave_one_out" or split.attacker_unit != "users"):
        raise ConfigError(
            f"{where}: split.target_training and split.attacker_unit apply to collaborative targets only (Zhu et al.'s "
            f"protocol); target {run.target.model!r} is sequential"
        )
    groups, problem = (_sequential_groups if run.sequential else _collaborative_groups)(run, ctx)
    if problem:
        raise ConfigError(
            f"{where}: too small for the protocol ({log.num_users} users after preprocessing): "
            f"{groups.describe()}; {problem}. Use a larger dataset, or change split "
            "(aux_fraction, attacker_fraction, query_fraction)"
        )


def _groups_key(run: Run, split_key: str) -> tuple:
    """What a run's group counts depend on: the split; for a sequential attacker holding real
    users' sequences, also the seed that draws them."""
    if not run.sequential:
        return split_key, "collaborative"
    uses = run.uses_real_sequences
    return split_key, "sequential", uses, run.seed if uses else None


def _auxiliary_held(run: Run, ctx: DatasetContext) -> int:
    """Users of the auxiliary half the attacker holds (``split.auxiliary_size`` of them)."""
    users = ctx.auxiliary.num_users
    size = run.split.auxiliary_size
    return max(1, int(round(size * users))) if users and size < 1.0 else users


def _target_problem(run: Run, ctx: DatasetContext) -> str:
    """What is missing on the target / auxiliary side ("" when nothing)."""
    if ctx.target.num_users < 2:
        return "the target needs at least 2 users (head and tail groups)"
    if run.split.aux_fraction > 0 and ctx.auxiliary.num_users == 0:
        return "the auxiliary half is empty (split.aux_fraction > 0 asks for one)"
    return ""


@dataclass(frozen=True)
class _KnowledgeView:
    """The split's logs as :func:`raysteal.experiment.execute.build_knowledge` reads them (no target trained yet)."""

    train: Interactions
    auxiliary: Interactions


@dataclass(frozen=True)
class _EvaluationView:
    """The split's evaluation users as :mod:`raysteal.experiment.execute_sequential` draws from them."""

    train: Interactions
    eval_users: np.ndarray


def _collaborative_groups(run: Run, ctx: DatasetContext) -> tuple[UserGroups, str]:
    """A collaborative run's groups, drawn as :func:`raysteal.experiment.execute.build_knowledge` draws them."""
    problem = _target_problem(run, ctx)
    known = queried = 0
    if ctx.target.num_users:
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.experiment.execute import build_knowledge

        train = ctx.target if run.split.target_training == "whole" else ctx.loo.train
        knowledge = build_knowledge(run, _KnowledgeView(train=train, auxiliary=ctx.auxiliary))
        assert knowledge.query_users is not None  # build_knowledge always draws them
        known, queried = len(knowledge.target_user_ids), len(knowledge.query_users)
    held_out = known - queried
    groups = UserGroups(ctx.target.num_users, _auxiliary_held(run, ctx), known, held_out, f"held-out attacker users; {queried} queried")
    if not problem and run.split.query_fraction < 1.0 and held_out == 0:
        problem = (
            f"no attacker user is held out of the queries (query_fraction {run.split.query_fraction} of "
            f"{known} known users), so agr@k/heldout would be NaN"
        )
    return groups, problem


def _sequential_groups(run: Run, ctx: DatasetContext) -> tuple[UserGroups, str]:
    """A sequential run's groups: the users with a held-out item the attacker does not know are scored."""
    problem = _target_problem(run, ctx)
    evaluable = ctx.loo.evaluable_users
    known = np.zeros(0, dtype=np.int64)
    scorable = np.ones(len(evaluable), dtype=bool)
    if ctx.target.num_users:
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.experiment.execute_sequential import known_users, scored_users

        view = _EvaluationView(train=ctx.loo.train, eval_users=np.asarray(evaluable))
        scorable = scored_users(run, view)  # outside the attacker population, in the split's half
        if run.uses_real_sequences:
            known = known_users(run, view)
    scored = int((scorable & ~np.isin(evaluable, known)).sum())
    groups = UserGroups(
        ctx.target.num_users,
        _auxiliary_held(run, ctx),
        len(known),
        scored,
        "users with a held-out item the attacker does not know (outside its population and the split's half)",
    )
    if not problem and scored == 0:
        problem = "no user is left to score the student on (a user needs 3 interactions to hold one out), so agr@k would be NaN"
    return groups, problem
