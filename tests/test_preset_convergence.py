"""Issue 25 item 2: the default presets converge and clear the popularity guard on datasets of
different sizes. Two checks: the committed figures of ``benchmarks/targets.py`` (every row trained
with today's preset, on ML-100K, Steam-200k, Ta-feng, ML-1M and Amazon Beauty), and a real training of the
cheapest preset on the smallest real dataset and on the synthetic one (minutes of CPU)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from model_fixtures import trained_with

from raysteal.training.guard import DEFAULT_WARN_LIFT

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "results" / "targets"
DATASET_FILES = ("ml-100k.json", "steam-200k.json", "tafeng.json", "ml-1m.json", "beauty.json")
FLAT = 0.01
"""The last three validations may improve on the best before them by at most this (relative)."""
SHORT_OF_THE_GUARD: set[tuple[str, str]] = set()
"""Presets whose committed figures are still under the guard (the Targets page says so). A pair
that clears it must leave this set: the audit then checks it like the others."""


def is_todays_preset(row: dict[str, Any]) -> bool:
    """Whether ``row`` was trained with today's preset of its model, unchanged."""
    return trained_with(row)


def _preset_rows() -> list[dict[str, Any]]:
    rows = []
    for name in DATASET_FILES:
        rows += [row for row in json.loads((FIGURES / name).read_text()) if is_todays_preset(row)]
    return rows


def test_every_committed_preset_figure_clears_the_guard_and_stopped_on_a_flat_curve():
    rows = _preset_rows()
    assert {row["dataset"] for row in rows} == {"ml-100k", "steam-200k", "tafeng", "ml-1m", "beauty"}
    assert {"bpr", "lmf", "neumf", "sasrec"} <= {row["model"] for row in rows}
    for row in rows:
        where = (row["dataset"], row["model"])
        assert row["stopped_early"] and not row["stopped_by_time"], where
        assert row["last_validation_gain"] is None or row["last_validation_gain"] <= FLAT, where
        if where in SHORT_OF_THE_GUARD:
            assert row["target_lift"] < DEFAULT_WARN_LIFT, f"{where} clears the guard now: take it out of SHORT_OF_THE_GUARD"
        else:
            assert row["target_lift"] >= DEFAULT_WARN_LIFT, where


def test_a_changed_preset_leaves_its_old_figures_out_of_the_audit():
    (row,) = [r for r in json.loads((FIGURES / "ml-100k.json").read_text()) if r["model"] == "bpr" and is_todays_preset(r)]
    assert not is_todays_preset({**row, "model_config": {**row["model_config"], "negative_candidates": 1}})
    assert not is_todays_preset({**row, "train_config": {**row["train_config"], "lr": row["train_config"]["lr"] * 2}})


def _train_preset(benchmarks_on_path, dataset: str, model: str, data_dir: Path | None, **options: Any) -> dict[str, Any]:
    import torch
    from targets import bench_model

    from raysteal.data import load_dataset
    from raysteal.training import make_split

    torch.set_num_threads(2)
    log = load_dataset(dataset, data_dir=data_dir, **options)
    args = argparse.Namespace(
        dataset=dataset, preprocess="none", seed=0, device="cpu", progress=False, state_dir=None, save_dir=None, json=None
    )
    return bench_model(model, log, make_split(log, "leave_one_out"), args, None, ({}, {}))


@pytest.mark.realdata
@pytest.mark.slow
def test_the_neumf_preset_converges_past_the_guard_on_ml100k(shared_data, benchmarks_on_path):
    """The smallest real dataset (943 users): the preset's epochs scale up, it stops on a flat
    validation curve, and the target beats popularity by the guard's margin."""
    row = _train_preset(benchmarks_on_path, "ml-100k", "neumf", shared_data)
    assert row["epoch_scale"] > 1.0 and row["stopped_early"], row
    assert row["last_validation_gain"] is not None and row["last_validation_gain"] <= FLAT, row
    assert row["target_lift"] >= DEFAULT_WARN_LIFT, row


TASTE_DRIVEN = {"num_users": 2000, "num_items": 1000, "item_exponent": 0.6, "p_follow": 0.1, "seed": 0}
"""The quickstart's synthetic log: users pick from their own cluster mixture and rarely follow an
item's fixed successor. The default synthetic log is successor-driven, built for sequential
models: a collaborative preset learns little there beyond popularity (BPR: 1.16x, under the guard,
which is what the guard is for)."""


@pytest.mark.slow
def test_the_bpr_preset_converges_past_the_guard_on_a_taste_driven_synthetic_log(benchmarks_on_path):
    row = _train_preset(benchmarks_on_path, "synthetic", "bpr", None, **TASTE_DRIVEN)
    assert row["stopped_early"], row
    assert row["last_validation_gain"] is not None and row["last_validation_gain"] <= FLAT, row
    assert row["target_lift"] >= DEFAULT_WARN_LIFT, row
