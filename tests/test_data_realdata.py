"""Every registered loader on the real shared files: the counts quoted in shared/data/README.md."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from raysteal.data import (
    dataset_names,
    dataset_spec,
    leave_one_out,
    load_dataset,
    load_table,
    resolve_preprocess,
    split_target_auxiliary,
)
from raysteal.data.preprocess import build_interactions

pytestmark = pytest.mark.realdata


def counts(log) -> tuple[int, int, int]:
    return log.num_interactions, log.num_users, log.num_items


@functools.cache
def raw_table(name: str, root):
    """Each real file is parsed once per test session."""
    return load_table(name, root)[0]


@pytest.fixture(scope="module")
def ml1m_table(shared_data):
    assert load_table("ml-1m", shared_data)[1].name == "ml-1m.seq.tsv.gz"
    return raw_table("ml-1m", shared_data)


def test_ml1m_unfiltered_and_5core(ml1m_table):
    log = build_interactions(ml1m_table, "ml-1m")
    assert counts(log) == (1_000_209, 6_040, 3_706)
    assert log.user_lengths.min() == 20
    assert log.user_labels[0] == 1 and log.user_labels[-1] == 6040
    assert counts(build_interactions(ml1m_table, "ml-1m", "kcore5")) == (999_611, 6_040, 3_416)
    assert counts(build_interactions(ml1m_table, "ml-1m", "kcore10")) == (998_539, 6_040, 3_260)


def test_ml1m_order_is_the_files_chronology(ml1m_table, shared_data):
    """User 1's sequence starts 3186, 1721 as in the file; leave-one-out holds out its last rows."""
    log = build_interactions(ml1m_table, "ml-1m")
    first = log.item_labels[log.sequence(0)]
    assert first[:2].tolist() == [3186, 1721]
    split = leave_one_out(log)
    assert log.item_labels[split.test[0]] == first[-1] and log.item_labels[split.valid[0]] == first[-2]


def test_ml1m_paper_recipe(shared_data):
    assert counts(load_dataset("ml-1m", shared_data, preprocess="paper")) == (1_000_209, 6_040, 3_706)


def test_tafeng_raw_and_paper(shared_data):
    table = raw_table("tafeng", shared_data)
    raw = build_interactions(table, "tafeng")
    assert counts(raw) == (817_741, 32_266, 23_812)
    assert raw.user_labels.dtype == object and raw.user_labels[0].startswith("0")  # leading zeros kept
    assert counts(build_interactions(table, "tafeng", "dedupe")) == (743_228, 32_266, 23_812)
    paper = build_interactions(table, "tafeng", "dedupe+kcore10")
    assert counts(paper) == (630_767, 19_451, 10_480)
    assert paper.user_lengths.min() >= 10 and paper.item_counts.min() >= 10
    # chronological within each user
    same = paper.users[1:] == paper.users[:-1]
    assert np.all(np.diff(paper.timestamps)[same] >= 0)


def test_steam_200k(shared_data):
    table = raw_table("steam-200k", shared_data)
    assert counts(build_interactions(table, "s")) == (129_511, 12_393, 5_155)
    assert counts(build_interactions(table, "s", "kcore5")) == (110_889, 3_730, 2_628)  # README (no dedupe)
    assert counts(build_interactions(table, "s", "kcore10")) == (94_735, 2_134, 1_778)
    assert counts(build_interactions(table, "s", "dedupe")) == (128_804, 12_393, 5_155)
    assert counts(load_dataset("steam-200k", shared_data, preprocess="paper")) == (110_176, 3_726, 2_628)


def test_beauty_both_versions(shared_data):
    table = raw_table("beauty", shared_data)
    assert counts(build_interactions(table, "b")) == (353_962, 40_226, 54_542)
    assert counts(build_interactions(table, "b", "kcore5")) == (198_502, 22_363, 12_101)
    assert counts(load_dataset("beauty-5core", shared_data)) == (198_502, 22_363, 12_101)


def test_ml100k(shared_data):
    log = load_dataset("ml-100k", shared_data)
    assert counts(log) == (100_000, 943, 1_682)
    same = log.users[1:] == log.users[:-1]
    assert np.all(np.diff(log.timestamps)[same] >= 0)


def test_registered_expectations_hold(shared_data):
    """The counts each DatasetSpec advertises (``expected``) are what loading gives."""
    for name in dataset_names():
        spec = dataset_spec(name)
        if not spec.expected:
            continue
        table = raw_table(name, shared_data)
        for recipe, want in spec.expected.items():
            assert counts(build_interactions(table, name, resolve_preprocess(name, recipe))) == want, (name, recipe)


def test_split_on_real_data(shared_data):
    log = build_interactions(raw_table("tafeng", shared_data), "tafeng", resolve_preprocess("tafeng", "paper"))
    split = split_target_auxiliary(log, seed=0)
    assert split.target.num_users + split.auxiliary.num_users == 19_451
    assert split.item_overlap_ratio > 0.9
