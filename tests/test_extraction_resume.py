"""Run directories of resumable extraction runs: the gathered data is written once and read back
exactly; files made for another run, or unreadable, are refused and left as they are."""

from __future__ import annotations

import numpy as np
import pytest

from raysteal.errors import ConfigError
from raysteal.extraction.resume import (
    claim_run_directory,
    gathered_once,
    load_extraction_set,
    save_extraction_set,
    student_resume_options,
)
from raysteal.extraction.types import ExtractionSet


def _data() -> ExtractionSet:
    rng = np.random.default_rng(0)
    extras = {"reliability": rng.random((3, 4)).astype(np.float32), "probed": rng.random((3, 4)) > 0.5}
    return ExtractionSet(rng.integers(0, 9, (3, 4)), rng.integers(-1, 9, (3, 4, 2)).astype(np.int32), 12, extras)


def test_a_saved_set_reads_back_exactly(tmp_path):
    data = _data()
    save_extraction_set(tmp_path / "d.npz", "run-a", data, {"synthesis_seconds": 1.5, "max_len": 4})
    back, meta = load_extraction_set(tmp_path / "d.npz", "run-a")
    assert meta == {"synthesis_seconds": 1.5, "max_len": 4} and back.queries == 12
    for got, want in [(back.sequences, data.sequences), (back.lists, data.lists), *zip(back.extras.values(), data.extras.values())]:
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert set(back.extras) == set(data.extras)
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]  # no temp file left behind
    assert load_extraction_set(tmp_path / "absent.npz", "run-a") is None and load_extraction_set(None, "run-a") is None


def test_files_for_another_run_or_unreadable_are_refused_and_kept(tmp_path):
    path = tmp_path / "extraction.npz"  # where a run directory keeps its data
    save_extraction_set(path, "run-a", _data())
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="another run"):
        load_extraction_set(path, "run-b")
    with pytest.raises(ConfigError, match="another run"):
        gathered_once(tmp_path, "run-b", lambda: pytest.fail("must not gather over another run's data"))
    np.savez(tmp_path / "other.npz", sequences=np.zeros(2))
    with pytest.raises(ConfigError, match="not a raysteal-extraction-set"):
        load_extraction_set(tmp_path / "other.npz", "run-a")
    (tmp_path / "torn.npz").write_bytes(before[: len(before) // 2])
    with pytest.raises(ConfigError, match="unreadable"):
        load_extraction_set(tmp_path / "torn.npz", "run-a")
    assert path.read_bytes() == before


def test_gathered_once_gathers_only_the_first_time(tmp_path):
    calls = []

    def gather():
        calls.append(1)
        return _data(), {"synthesis_seconds": 2.0}

    first = gathered_once(tmp_path / "run", "k", gather)
    again = gathered_once(tmp_path / "run", "k", gather)
    assert calls == [1] and not first[2] and again[2] and again[1] == {"synthesis_seconds": 2.0}
    assert np.array_equal(first[0].lists, again[0].lists)
    assert gathered_once(None, "k", gather)[2] is False and calls == [1, 1]  # no directory: always gathers
    assert student_resume_options(None) == {}
    assert student_resume_options(tmp_path) == {"state_path": tmp_path / "student.state", "restart_if_unusable": True}


def test_a_save_that_fails_only_warns_the_spent_answers_are_still_used(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="cannot resume"):
        data, _, reused = gathered_once(blocked, "k", lambda: (_data(), {}))
    assert not reused and data.queries == 12


def test_a_run_directory_left_against_another_target_is_emptied(tmp_path):
    run = claim_run_directory(tmp_path / "run", "ml-1m/sasrec lists=aaa")
    save_extraction_set(run / "extraction.npz", "k", _data())
    assert (claim_run_directory(run, "ml-1m/sasrec lists=aaa") / "extraction.npz").exists()  # same target: kept
    claim_run_directory(run, "ml-1m/sasrec lists=bbb")  # retrained target: its old answers are worthless
    assert sorted(p.name for p in run.iterdir()) == ["target.txt"]
    assert (run / "target.txt").read_text() == "ml-1m/sasrec lists=bbb"


def test_a_setting_added_later_leaves_the_keys_of_earlier_runs_at_its_default():
    """A BAHSD run interrupted before ``infonce_prefixes`` existed resumes after it: the run key and
    the objective's key (the student state's) leave the field out at its default; set, it counts."""
    import json

    from raysteal.extraction.bahsd import BAHSDConfig, BAHSDObjective
    from raysteal.extraction.resume import ADDED_SETTINGS, run_key

    plain = BAHSDConfig(attack="bahsd", infonce=False)
    before = json.dumps({k: v for k, v in plain.model_dump(mode="json").items() if k not in ADDED_SETTINGS}, sort_keys=True)
    assert run_key(plain, 3, 50) == f"{before}|seed=3|items=50"
    assert "infonce_prefixes" not in repr(BAHSDObjective.from_config(plain))
    sampled = BAHSDConfig(attack="bahsd", infonce_prefixes=64)
    assert '"infonce_prefixes": 64' in run_key(sampled, 3, 50) and "infonce_prefixes" in repr(BAHSDObjective.from_config(sampled))
