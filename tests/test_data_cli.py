"""`raysteal data list | info | fetch` through typer's CliRunner; data-dir resolution; registry errors."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raysteal.cli import app
from raysteal.data import dataset_names, load_dataset
from raysteal.errors import DataFileError, UnknownNameError
from raysteal.paths import DATA_ENV, data_dir

runner = CliRunner()


def run(*args: str, env: dict | None = None):
    return runner.invoke(app, ["data", *args], env=env)


# ------------------------------------------------------------------- paths
def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv(DATA_ENV)
    assert data_dir() == tmp_path / "xdg" / "raysteal" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "raysteal" / "data"
    (tmp_path / "afile").write_text("not a directory")
    with pytest.raises(DataFileError, match="afile: is a file, not a data directory \\(given explicitly\\)"):
        data_dir(tmp_path / "afile")


def test_missing_file_names_paths_and_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataFileError) as err:
        load_dataset("tafeng")
    msg = str(err.value)
    assert str(tmp_path / "tafeng" / "ta_feng_all_months_merged.csv.gz") in msg
    assert "raysteal data fetch tafeng" in msg and "RAYSTEAL_DATA" in msg


def test_unknown_dataset_lists_known():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("movielens")
    for name in dataset_names():
        assert name in str(err.value)


# --------------------------------------------------------------------- CLI
def test_list(tmp_path):
    result = run("list", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["datasets"]}
    assert set(rows) == set(dataset_names())
    assert rows["synthetic"]["status"] == "generated" and rows["ml-1m"]["status"] == "missing"
    assert rows["tafeng"]["paper"] == "dedupe+kcore10"
    text = run("list", "--data-dir", str(tmp_path))
    assert text.exit_code == 0 and "raysteal data fetch ml-1m" in text.output


def test_info_on_a_written_file(tmp_path):
    path = tmp_path / "ml-1m" / "ml-1m.seq.tsv.gz"
    path.parent.mkdir()
    rows = "".join(f"{u}\t{i}\n" for u in range(1, 7) for i in range(1, 3 + u))
    path.write_bytes(gzip.compress(("user_id\tmovie_id\n" + rows).encode()))
    result = run("info", "ml-1m", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["users"], out["items"], out["interactions"]) == (6, 8, 3 + 4 + 5 + 6 + 7 + 8)
    assert out["density"] == pytest.approx(33 / 48)
    assert out["user_activity_quantiles"]["1.0"] == 8 and out["source"] == str(path)
    result = run("info", "ml-1m", "--data-dir", str(tmp_path), "--kcore", "4", "--json")
    out = json.loads(result.output)
    assert out["preprocess"] == "kcore4" and out["interactions"] < 33
    text = run("info", "ml-1m", "--data-dir", str(tmp_path))
    assert text.exit_code == 0 and "interactions  33" in text.output


def test_info_synthetic_and_errors(tmp_path):
    out = json.loads(run("info", "synthetic", "--json").output)
    assert (out["users"], out["items"]) == (2000, 500)
    result = run("info", "nope")
    assert isinstance(result.exception, UnknownNameError)
    result = run("info", "ml-1m", "--data-dir", str(tmp_path / "empty"))
    assert isinstance(result.exception, DataFileError)


def test_fetch_cli_from_file_url(tmp_path):
    src = tmp_path / "beauty.txt"
    src.write_text("1 1\n1 2\n")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    args = ["fetch", "beauty", "--data-dir", str(tmp_path / "d"), "--url", src.as_uri(), "--sha256", digest]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and (tmp_path / "d" / "beauty" / "beauty.txt").is_file()
    assert "already present" in run(*args).output


@pytest.mark.realdata
def test_info_real_counts(shared_data):
    env = {DATA_ENV: str(shared_data)}
    out = json.loads(run("info", "ml-1m", "--json", env=env).output)
    assert (out["users"], out["items"], out["interactions"]) == (6040, 3706, 1000209)
    out = json.loads(run("info", "tafeng", "--preprocess", "paper", "--json", env=env).output)
    assert (out["users"], out["items"], out["interactions"]) == (19451, 10480, 630767)
    out = json.loads(run("info", "ml-1m", "--kcore", "5", "--json", env=env).output)
    assert (out["users"], out["items"], out["interactions"]) == (6040, 3416, 999611)


def test_console_entry_point_reports_errors_cleanly(tmp_path, monkeypatch, capsys):
    """`raysteal data info` with a missing file: exit 2 and one line, no traceback."""
    import sys

    from raysteal.cli import main

    monkeypatch.setattr(sys, "argv", ["raysteal", "data", "info", "ml-100k", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'ml-100k': no data file found") and "Traceback" not in err
    assert Path(tmp_path / "ml-100k" / "u.data").as_posix() in err


def test_info_reads_a_file_of_the_users(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("who;what;when\n" + "".join(f"u{u};i{(u + t) % 7};{t}\n" for u in range(5) for t in range(4)))
    result = run(
        "info",
        str(path),
        "--column",
        "user=who",
        "--column",
        "item=what",
        "--column",
        "timestamp=when",
        "--column",
        "delimiter=;",
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["users"], out["interactions"]) == (5, 20) and out["source"] == str(path.resolve())
    bad = run("info", str(path), "--column", "colour=red")
    assert bad.exit_code != 0 and "does not take those options" in str(bad.exception or bad.output)
    assert run("info", "ml-1m", "--format", "table").exit_code != 0  # file options on a registered name
    malformed = run("info", str(path), "--column", "who")
    assert malformed.exit_code != 0 and "--column expects key=value, got 'who'" in str(malformed.exception)


def test_info_on_a_mistyped_path_says_file_not_found(tmp_path):
    missing = run("info", str(tmp_path / "nosuch.csv"))
    assert isinstance(missing.exception, DataFileError) and "file not found" in str(missing.exception)
    directory = run("info", str(tmp_path))
    assert isinstance(directory.exception, DataFileError) and "is a directory" in str(directory.exception)
    assert isinstance(run("info", "ml-2m").exception, UnknownNameError)  # a name, not a path
    dotted = run("info", "amazon.beauty")  # a file here, or a dataset name with a dot: both are said
    assert isinstance(dotted.exception, DataFileError) and "known datasets: beauty" in str(dotted.exception)
