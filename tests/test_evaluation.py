"""Evaluation is chosen once per target kind (raysteal.experiment.evaluation): the drivers ask
for a run's evaluation and never branch on the target's kind themselves."""

from __future__ import annotations

from pathlib import Path

from raysteal.experiment.config import parse_experiment
from raysteal.experiment.evaluation import EVALUATIONS, evaluation_for, evaluation_of
from raysteal.experiment.execute import COLLABORATIVE, EpochProbe
from raysteal.experiment.execute_sequential import SEQUENTIAL, SequentialEpochProbe
from raysteal.experiment.run import expand_runs

RAYSTEAL = Path(__file__).resolve().parents[1] / "raysteal"


def _first_run(model: str, attack: dict):
    spec = {
        "experiment": "kinds",
        "seeds": 1,
        "datasets": [{"name": "synthetic", "options": {"num_users": 200, "num_items": 100}}],
        "targets": [{"model": model}],
        "attacks": [attack],
        "k": 10,
    }
    return expand_runs(parse_experiment(spec))[0]


def test_a_run_gets_the_evaluation_of_its_target_kind():
    collaborative = _first_run("bpr", {"attack": "ptd"})
    sequential = _first_run("sasrec", {"attack": "dfme", "budget_queries": 100})
    assert evaluation_for(collaborative) is COLLABORATIVE and evaluation_for(sequential) is SEQUENTIAL
    assert COLLABORATIVE.clone_name(collaborative) == collaborative.attack.clone
    assert SEQUENTIAL.clone_name(sequential) == "sasrec"
    assert SEQUENTIAL.clone_name(_first_run("sasrec", {"attack": "popularity"})) == "popularity"


def test_each_evaluation_names_what_its_probe_and_its_row_report():
    assert set(EVALUATIONS) == {"collaborative", "sequential"}
    for evaluation in EVALUATIONS.values():
        assert set(evaluation.probe_metrics) <= set(evaluation.final_metrics)
    assert COLLABORATIVE.keeps_work is False and SEQUENTIAL.keeps_work is True
    assert SEQUENTIAL.probe_user_cap == 1024 and COLLABORATIVE.probe_user_cap is None


def test_prepared_data_picks_its_evaluation():
    from raysteal.experiment.context import SequentialRunData

    fake = SequentialRunData.__new__(SequentialRunData)
    assert evaluation_of(fake) is SEQUENTIAL and evaluation_of(object()) is COLLABORATIVE
    assert EpochProbe.__module__.endswith("execute") and SequentialEpochProbe.__module__.endswith("execute_sequential")


def test_no_driver_branches_on_the_target_kind():
    """Only the evaluation module tells prepared data's kind apart (the target preparation builds it)."""
    offenders = [
        f"{path.relative_to(RAYSTEAL)}"
        for path in RAYSTEAL.rglob("*.py")
        if "isinstance(data, SequentialRunData)" in path.read_text() and path.name != "evaluation.py"
    ]
    assert offenders == []
