"""glibc malloc tuning for CPU training: it removes the page faults, it can be switched off, training applies it.

The allocator is process-wide, so fault counts are measured in fresh subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raysteal.training import cpu_memory
from raysteal.training.cpu_memory import restore_malloc_defaults, retain_freed_memory

pytestmark = pytest.mark.skipif(cpu_memory._glibc() is None, reason="needs glibc (Linux)")

PROBE = """
import json, os, resource, torch
from raysteal.training.cpu_memory import retain_freed_memory
applied = retain_freed_memory()

def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

faults, kept = [], []
for _ in range(12):  # allocate, fill and free 40 MiB (above the 32 MiB dynamic mmap limit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(40 << 18)
    held = rss()
    del block
    kept.append(rss() - held + (40 << 20))  # bytes of the freed block still in the process
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults, "kept": kept}))
"""
PAGES_OF_BLOCK = (40 << 20) // 4096


def _probe(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_without_page_faults_and_can_be_switched_off():
    """Every round maps 40 MiB afresh by default; tuned, the freed block stays and a later round reuses it
    with no faults. Minima, because the tuned heap needs a few rounds to grow and a busy machine adds stray faults."""
    off = _probe(**{cpu_memory.ENV_SWITCH: "0"})
    on = _probe(**{cpu_memory.ENV_SWITCH: "1"})
    assert not off["applied"] and on["applied"]
    assert min(off["faults"]) > 0.8 * PAGES_OF_BLOCK and max(off["kept"]) < 8 << 20  # munmap'd at every free
    assert min(on["kept"]) > 32 << 20  # free keeps the block in the heap
    assert min(on["faults"][2:]) < 0.05 * PAGES_OF_BLOCK
    assert sum(f < 0.05 * PAGES_OF_BLOCK for f in on["faults"]) >= len(on["faults"]) // 2


def test_cpu_training_applies_it_once():
    from raysteal.data.splits import leave_one_out
    from raysteal.training import fit, seeded_model
    from tests.model_fixtures import toy_log

    restore_malloc_defaults()
    try:
        split = leave_one_out(toy_log())
        fit(
            seeded_model({"model": "bpr", "embedding_dim": 4}, split.train.num_users, split.train.num_items, 0),
            split,
            {"epochs": 1},
            device="cpu",
            progress=False,
        )
        assert cpu_memory._applied and retain_freed_memory()  # idempotent
    finally:
        restore_malloc_defaults()


def test_not_glibc_is_a_no_op(monkeypatch):
    restore_malloc_defaults()
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not retain_freed_memory()


RELEASE = """
import json, os, torch
from raysteal.training.cpu_memory import release_freed_memory, retain_freed_memory

def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

retain_freed_memory()
base = rss()
blocks = [torch.ones(40 << 18) for _ in range(8)]  # 320 MiB, then freed: the tuned heap keeps it
del blocks
kept = rss() - base
released = release_freed_memory()
print(json.dumps({"kept": kept, "after": rss() - base, "released": released}))
"""


def test_freed_memory_goes_back_to_the_kernel_between_jobs():
    """A reused worker (a Tune trial after another) hands back what the last job freed."""
    out = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["released"] and figures["kept"] > 256 << 20
    assert figures["after"] < 64 << 20  # the 320 MiB left the process


def test_every_tune_trial_releases_the_workers_freed_memory_however_it_ends(monkeypatch):
    import raysteal.distributed.tune as tune_module

    calls = []
    monkeypatch.setattr(tune_module, "release_freed_memory", lambda: calls.append("released") or True)

    def stopped(config, data, setup):
        raise RuntimeError("stopped by the scheduler")

    monkeypatch.setattr(tune_module, "_trial", stopped)
    with pytest.raises(RuntimeError, match="stopped"):
        tune_module.tune_trial({}, data=object(), setup=None)
    assert calls == ["released"]
