"""Shared fixtures: where the real data lives, and one Ray runtime per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """``$RAYSTEAL_DATA`` or the project's ``../shared/data``, if present."""
    for candidate in (os.environ.get("RAYSTEAL_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets directory; tests using it are skipped when it is absent."""
    path = real_data_dir()
    if path is None:
        pytest.skip("real datasets not available (set RAYSTEAL_DATA)")
    return path


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray runtime for the whole session: auth off, small object store, short temp dir."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            object_store_memory=200 * 1024 * 1024,
            include_dashboard=False,
            _temp_dir="/tmp/ray",
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is faster and kinder to a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def target_cache(tmp_path_factory) -> str:
    """One trained-target cache for the sweeps of a test module (they share the target)."""
    return str(tmp_path_factory.mktemp("target-cache"))


@pytest.fixture
def benchmarks_on_path():
    """``benchmarks/`` importable for the test (its scripts are modules, not a package)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    yield
    sys.path.remove(str(REPO / "benchmarks"))
