"""glibc malloc tuning for CPU training: it is applied, it removes the page faults, it can be switched off."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from raysteal.training import cpu_memory
from raysteal.training.cpu_memory import restore_malloc_defaults, retain_freed_memory

pytestmark = pytest.mark.skipif(cpu_memory._glibc() is None, reason="needs glibc (Linux)")


@pytest.fixture(autouse=True)
def defaults_afterwards():
    yield
    restore_malloc_defaults()


def _faults_of_reallocating(megabytes: int = 64, times: int = 3) -> int:
    """Minor page faults of the last of ``times`` allocate-fill-free cycles of a large tensor."""
    faults = 0
    for _ in range(times):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.ones(megabytes << 18)  # float32: 4 bytes each
        del block
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults


def test_retained_memory_is_reused_without_page_faults():
    restore_malloc_defaults()
    default_faults = _faults_of_reallocating()
    assert default_faults > 10_000  # 64 MiB freshly mapped each time: ~16k pages
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
    retained_faults = _faults_of_reallocating()
    assert retained_faults < default_faults / 4


def test_switched_off_by_environment(monkeypatch):
    restore_malloc_defaults()
    monkeypatch.setenv(cpu_memory.ENV_SWITCH, "0")
    assert not retain_freed_memory()
    assert _faults_of_reallocating() > 10_000


def test_cpu_training_applies_it():
    from raysteal.data.splits import leave_one_out
    from raysteal.training import fit, seeded_model
    from tests.model_fixtures import toy_log

    restore_malloc_defaults()
    split = leave_one_out(toy_log())
    fit(seeded_model({"model": "bpr", "embedding_dim": 4}, split.train.num_users, split.train.num_items, 0), split,
        {"epochs": 1}, device="cpu", progress=False)
    assert cpu_memory._applied


def test_not_glibc_is_a_no_op(monkeypatch):
    restore_malloc_defaults()
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not retain_freed_memory()
