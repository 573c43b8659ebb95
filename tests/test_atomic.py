"""Atomic writes: the old file or the whole new one, never half; no temp file left behind."""

from __future__ import annotations

import os

import pytest

from raysteal.atomic import write_atomically, write_text_atomically


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_text_atomically(tmp_path / "sub" / "f.json", "old")
    assert path.read_text() == "old" and path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would

    def half_then_fail(fh):
        fh.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["f.json"]
    write_text_atomically(path, "new")
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_copy_atomically_copies_the_bytes_and_leaves_no_temp_file(tmp_path):
    from raysteal.atomic import copy_atomically

    source = tmp_path / "rows.parquet"
    source.write_bytes(bytes(range(256)) * 10)
    (tmp_path / "out").mkdir()
    target = copy_atomically(source, tmp_path / "out" / "rows.parquet")
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rows.parquet"]
