"""Temp files of atomic writes (issue 23, hole 10): a writer killed mid-write leaves one, which the
next run removes -- only our own temp names, only those whose writer is gone; report figures are
written atomically too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

WRITER = """
import sys, time
from raysteal.atomic import write_atomically

def stall(fh):
    fh.write(b"half a row")
    fh.flush()
    print("writing", flush=True)
    time.sleep(600)

write_atomically(sys.argv[1], stall)
"""


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _killed_mid_write(target: Path) -> Path:
    """Run a writer of ``target`` in another process, SIGKILL it mid-write; returns its temp file."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (temp,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    assert not target.exists()
    return temp


def test_a_killed_writers_temp_file_is_removed_and_nothing_else(tmp_path):
    from raysteal.atomic import SETTLED_AFTER_S, STALE_AFTER_S, node_id, remove_stale_temp_files

    runs = tmp_path / "runs"
    killed = _killed_mid_write(runs / "abc.parquet")
    assert killed.name.startswith(f".abc.parquet.{node_id()}-") and killed.name.endswith(".tmp")
    assert remove_stale_temp_files(tmp_path) == []  # just written: left alone whoever wrote it
    _age(killed, SETTLED_AFTER_S + 5)
    keep = {  # name -> age in seconds
        f".def.parquet.{node_id()}-{os.getpid()}.abcd1234.tmp": 10 * STALE_AFTER_S,  # its writer lives
        ".ghi.parquet.abcd1234.tmp": SETTLED_AFTER_S + 5,  # an older version's name (no writer), written lately
        ".jkl.parquet.00000000-1.abcd1234.tmp": SETTLED_AFTER_S + 5,  # another machine's, written lately
        "notes.tmp": 10 * STALE_AFTER_S,  # not our name
        ".x.tmp": 10 * STALE_AFTER_S,  # not our name
        "abc.parquet": 10 * STALE_AFTER_S,
    }
    old = {".mno.parquet.abcd1234.tmp": STALE_AFTER_S + 5, ".pqr.parquet.00000000-1.abcd1234.tmp": STALE_AFTER_S + 5}
    for name, age in {**keep, **old}.items():
        (runs / name).write_text("x")
        _age(runs / name, age)
    removed = remove_stale_temp_files(tmp_path, tmp_path / "missing", None)
    assert sorted(removed) == sorted([killed, *(runs / name for name in old)])
    assert sorted(p.name for p in runs.iterdir()) == sorted(keep)


def test_raysteal_run_cleans_stale_temp_files_of_its_output_directory(tmp_path, monkeypatch):
    import pandas as pd
    from typer.testing import CliRunner

    import raysteal.distributed.experiment_runner as runner_module
    from raysteal.cli import app

    settled = 65.0  # older than raysteal.atomic.SETTLED_AFTER_S

    class _NoRows:
        def load(self):
            return pd.DataFrame()

    monkeypatch.setattr(runner_module, "run_experiment", lambda config, out_dir, **_: _NoRows())
    out = tmp_path / "out"
    killed = _age(_killed_mid_write(out / "runs" / "abc.parquet"), settled)
    spec = {
        "experiment": "small",
        "seeds": 1,
        "targets": [{"model": "bpr"}],
        "attacks": [{"attack": "popularity"}],
        "k": 10,
        "datasets": [{"name": "synthetic", "options": {"num_users": 80, "num_items": 40, "max_len": 12, "seed": 1}}],
    }
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(file), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not killed.exists()


def test_report_figures_are_written_atomically(tmp_path, monkeypatch):
    """A figure that fails half-way leaves the old PNG whole and no temp file (it was written in place)."""
    import matplotlib.figure

    from raysteal.report import render_report
    from raysteal.results import ResultStore

    store = ResultStore(tmp_path)
    for i, k in enumerate((10, 50)):
        store.write_row(
            f"r{i}",
            {
                "experiment": "demo",
                "dataset": "synthetic",
                "target": "bpr",
                "attack": "ptd",
                "clone": "bpr",
                "seed": 0,
                "k": k,
                "defense": [],
                "agr@k": 0.3 + i / 10,
                "queries": 1,
            },
        )
    spec = {"experiment": "demo", "report": [{"kind": "curve", "x": "k"}]}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.json").write_text(json.dumps(spec))
    png = render_report(tmp_path).parent / "demo-0-curve.png"
    whole = png.read_bytes()
    assert whole.startswith(b"\x89PNG")

    def half_then_fail(self, fname, **kwargs):
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "wb") as fh:
                fh.write(b"\x89PN")
        else:
            fname.write(b"\x89PN")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        render_report(tmp_path)
    assert png.read_bytes() == whole
    assert sorted(p.name for p in png.parent.iterdir()) == ["demo-0-curve.png", "report.md"]
