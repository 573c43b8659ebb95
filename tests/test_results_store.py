"""Run ids survive new optional settings: finished runs stay finished across versions; a run's
scratch directory lives until its row is written."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysteal.experiment.config import load_experiment
from raysteal.experiment.run import Run, expand_runs
from raysteal.results.store import ResultStore, run_id, run_ids

ROOT = Path(__file__).resolve().parents[1]


def _infonce_ablation_seed0() -> dict:
    config = load_experiment(ROOT / "experiments" / "bahsd" / "ablations-ml1m.yaml", seeds=1)
    return next(r.spec for r in expand_runs(config) if r.spec["attack"].get("infonce") is False)


def test_run_id_is_pinned_to_the_id_stored_before_later_settings():
    """The ids raysteal stored for this run: before ``target.checkpoint`` existed (the canonical
    id), and while it sat in the hash at its default. A new setting of an entry that is not
    registered in ``ADDED_RUN_FIELDS`` changes the first and fails here."""
    run = _infonce_ablation_seed0()
    assert run["target"]["checkpoint"] is None
    assert run_id(run) == "e62261fefc85ea9163b75b7f"
    assert run_ids(run) == ["e62261fefc85ea9163b75b7f", "52ba0ca9a9c8b861fdf68ecc"]


def test_a_setting_away_from_its_default_changes_the_id():
    run = _infonce_ablation_seed0()
    other = {**run, "target": {**run["target"], "checkpoint": "/tmp/teacher.pt"}}
    assert run_id(other) != run_id(run)
    assert run_id({**run, "seed": 1}) != run_id(run)


def test_a_row_stored_under_an_earlier_id_counts_as_finished(tmp_path):
    run = _infonce_ablation_seed0()
    store = ResultStore(tmp_path)
    assert not store.is_finished(run_ids(run))
    store.write_row(run_ids(run)[1], {"run_id": run_ids(run)[1], "agr@10": 0.5})
    assert store.is_finished(run_ids(run))
    assert store.is_finished(run_ids(run), store.finished())
    assert not store.is_finished(run_ids({**run, "seed": 1}))


def test_a_runs_scratch_directory_goes_with_its_row(tmp_path):
    store = ResultStore(tmp_path / "out")
    work = store.work_dir("run-a")
    assert work.is_absolute() and work == (tmp_path / "out" / "partial" / "run-a").resolve()
    for rid in ("run-a", "run-b", "run-c"):
        (store.partial_dir / rid).mkdir(parents=True)
        (store.partial_dir / rid / "extraction.npz").write_bytes(b"x")
    store.write_row("run-a", {"agr@k": 0.5})
    assert not work.exists() and (store.partial_dir / "run-b").exists()
    # a row written by a process that died before removing the directory: the next invocation does
    pq.write_table(pa.Table.from_pylist([{"agr@k": 0.4}]), store.runs_dir / "run-b.parquet")
    assert store.clear_finished_work() == ["run-b"]
    assert sorted(p.name for p in store.partial_dir.iterdir()) == ["run-c"]  # an unfinished run keeps its work
    assert store.stray_work({"run-c"}) == [] and store.stray_work({"run-x"}) == ["run-c"]


def test_the_runner_names_scratch_directories_it_will_not_resume_and_keeps_them(tmp_path):
    from raysteal.distributed.experiment_runner import _warn_stray_work

    store = ResultStore(tmp_path)
    (store.partial_dir / "old-id").mkdir(parents=True)
    with pytest.warns(RuntimeWarning, match=r"1 scratch directory of runs not among this invocation's \(old-id\)"):
        _warn_stray_work(store, {"new-id"})
    assert (store.partial_dir / "old-id").is_dir()


def test_a_damaged_row_file_is_named_not_a_pyarrow_traceback(tmp_path):
    from raysteal.errors import DataFileError

    store = ResultStore(tmp_path)
    store.write_row("good", {"agr@k": 0.5})
    (store.runs_dir / "broken.parquet").write_bytes(b"junk")
    with pytest.raises(DataFileError, match=r"broken\.parquet: not a readable Parquet file"):
        store.load()


def test_results_file_holds_every_row_in_one_schema(tmp_path):
    """Runs differ in columns and in a setting's kind (unset in one, a number or text in others):
    ``results.parquet`` is one table pandas reads directly, which the per-run files are not."""
    import pandas as pd

    store = ResultStore(tmp_path)
    assert store.export() is None  # nothing yet
    store.write_row("a", {"run_id": "a", "attack": "ptd", "agr@k": 0.5, "hp/margin": None, "info/x": 1})
    store.write_row("b", {"run_id": "b", "attack": "ptq", "agr@k": 0.6, "hp/margin": 0.5, "info/y": "z", "queries": 10})
    store.write_row("c", {"run_id": "c", "attack": "qsd", "agr@k": 0.7, "hp/margin": "auto"})
    with pytest.raises(Exception):  # noqa: B017 -- whatever pyarrow raises on the mixed schemas: why the single file exists
        pd.read_parquet(tmp_path / "runs")
    frame = pd.read_parquet(store.export()).set_index("run_id").sort_index()
    assert list(frame.index) == ["a", "b", "c"] and frame["agr@k"].tolist() == [0.5, 0.6, 0.7]
    assert frame["queries"].isna().tolist() == [True, False, True] and frame.loc["b", "info/y"] == "z"
    assert frame["hp/margin"].isna().tolist() == [True, False, False]  # unset stays missing, not "None"
    assert frame.loc["b", "hp/margin"] == "0.5" and frame.loc["c", "hp/margin"] == "auto"


def test_results_file_keeps_booleans_apart_from_numbers(tmp_path):
    import pandas as pd

    store = ResultStore(tmp_path)
    store.write_row("a", {"run_id": "a", "hp/x": True})
    store.write_row("b", {"run_id": "b", "hp/x": 1.5})
    frame = pd.read_parquet(store.export()).set_index("run_id").sort_index()
    assert frame["hp/x"].tolist() == ["True", "1.5"]  # not 1.0 and 1.5


def _table4_bpr_seed0() -> Run:
    config = load_experiment(ROOT / "experiments" / "zhu2023" / "table4-ml1m.yaml", seeds=1)
    return next(r for r in expand_runs(config) if r.target.model == "bpr")


def test_a_revised_preset_gives_its_runs_new_ids_and_pinning_the_old_value_keeps_them(monkeypatch):
    """A preset setting changed after results were published (``REVISED_SETTINGS``): a file that
    leaves it to the preset names a new target and gets new ids; one that pins the earlier value
    (Zhu et al.'s files pin uniform negatives) keeps the ids its rows were stored under."""
    import raysteal.training.presets as presets

    model_cfg, train_cfg = presets.PRESETS["bpr"]
    monkeypatch.setitem(presets.PRESETS, "bpr", ({**model_cfg, "negative_candidates": 1}, train_cfg))
    monkeypatch.setitem(presets.REVISED_SETTINGS, "bpr", {})  # before the revision
    pinned = _table4_bpr_seed0()
    assert pinned.target.params == {"negative_candidates": 1}
    unpinned = Run.from_spec({**pinned.spec, "target": {**pinned.spec["target"], "params": {}}})
    published = unpinned.id
    assert pinned.id == published == run_id(unpinned.spec)  # the pinned earlier default stays out of the id
    monkeypatch.setitem(presets.PRESETS, "bpr", ({**model_cfg, "negative_candidates": 8}, train_cfg))
    monkeypatch.setitem(presets.REVISED_SETTINGS, "bpr", {"negative_candidates": 1})
    assert presets.revised_settings("bpr", {}) == {"negative_candidates": 8}
    assert presets.revised_settings("bpr", {"negative_candidates": 1}) == {}
    assert unpinned.id != published and published not in unpinned.ids
    assert pinned.id == published
    four = Run.from_spec({**pinned.spec, "target": {**pinned.spec["target"], "params": {"negative_candidates": 4}}})
    assert four.id not in (published, unpinned.id)


def test_rows_name_a_pinned_earlier_default_as_before_and_a_revised_target_by_its_setting(monkeypatch):
    import raysteal.training.presets as presets

    run = _table4_bpr_seed0()
    assert run.target.params == {"negative_candidates": 1} and run.target_settings == {}
    assert presets.revised_settings("bpr", {}) == {"negative_candidates": 8}  # the shipped preset
    model_cfg, train_cfg = presets.PRESETS["bpr"]
    monkeypatch.setitem(presets.PRESETS, "bpr", ({**model_cfg, "negative_candidates": 8}, train_cfg))
    monkeypatch.setitem(presets.REVISED_SETTINGS, "bpr", {"negative_candidates": 1})
    assert run.target_settings == {}
    unpinned = Run.from_spec({**run.spec, "target": {**run.spec["target"], "params": {}}})
    assert unpinned.target_settings == {"negative_candidates": 8}


def test_a_revised_train_setting_gives_new_ids_and_pinning_its_old_value_keeps_them(monkeypatch):
    """A preset's train setting changed after results were published (``train.<key>`` in
    ``REVISED_SETTINGS``): runs that leave it to the preset get new ids; a file that pins the
    earlier value, newly, keeps the ids its rows were stored under."""
    import raysteal.training.presets as presets

    run = _table4_bpr_seed0()
    published = run.id
    model_cfg, train_cfg = presets.PRESETS["bpr"]
    monkeypatch.setitem(presets.PRESETS, "bpr", (model_cfg, {**train_cfg, "lr": train_cfg["lr"] / 2, "refit": True}))
    monkeypatch.setitem(presets.REVISED_SETTINGS, "bpr", {"negative_candidates": 1, "train.lr": train_cfg["lr"], "train.refit": False})
    assert presets.revised_settings("bpr", {"negative_candidates": 1}) == {"train.lr": train_cfg["lr"] / 2, "train.refit": True}
    assert run.id != published and run.target_settings == {"train.lr": train_cfg["lr"] / 2, "train.refit": True}
    pinned = Run.from_spec({**run.spec, "target": {**run.spec["target"], "train": {"lr": train_cfg["lr"], "refit": False}}})
    assert presets.revised_settings("bpr", {"negative_candidates": 1}, {"lr": train_cfg["lr"], "refit": False}) == {}
    assert pinned.id == published and pinned.target_settings == {}
    half = Run.from_spec({**run.spec, "target": {**run.spec["target"], "train": {"lr": train_cfg["lr"], "epochs": 3}}})
    assert half.id not in (published, run.id)  # another setting pinned beside it still names its own target
