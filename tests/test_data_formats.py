"""Every file format on small files written by the tests, including malformed rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysteal.data import formats, load_dataset, load_file
from raysteal.errors import ConfigError, DataFileError, UnknownNameError


def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def pairs(log) -> list[tuple]:
    """(user label, item label) rows of a log, in log order."""
    return list(zip(log.user_labels[log.users].tolist(), log.item_labels[log.items].tolist()))


# ------------------------------------------------------------------ MovieLens
def test_grouplens_ratings_dat_sorted_by_time_then_item(tmp_path):
    path = write(tmp_path / "ratings.dat", "2::30::5::100\n1::20::3::50\n1::10::4::50\n1::5::1::10\n2::7::2::90\n")
    table = formats.read_grouplens_ratings(path)
    assert table.column_names == ["user", "item", "rating", "timestamp"]
    log = load_file(path)
    # user 1: t=10 item 5, then t=50 tie broken by ascending item id (10 before 20)
    assert pairs(log) == [(1, 5), (1, 10), (1, 20), (2, 7), (2, 30)]
    assert log.timestamps.tolist() == [10, 50, 50, 90, 100]
    assert (log.num_users, log.num_items) == (2, 5)


def test_grouplens_bad_row_names_file_and_line(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::10::4::50\n1::11::4::51\n1::12::4\n")
    with pytest.raises(DataFileError, match=r"ratings\.dat, line 3: expected 4 fields separated by '::', found 3"):
        formats.read_grouplens_ratings(path)
    path = write(tmp_path / "ratings.dat", "1::10::4::50\n\n1::x::4::51\n")
    with pytest.raises(DataFileError, match=r"line 3: column 'item': expected an integer, found 'x'"):
        formats.read_grouplens_ratings(path)


def test_ml100k_u_data_plain_and_gz(tmp_path):
    text = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n"
    for path in (write(tmp_path / "a" / "u.data", text), write(tmp_path / "b" / "u.data.gz", text, gz=True)):
        log = load_file(path)
        assert pairs(log) == [(186, 302), (196, 377), (196, 242)]  # 196's rows in time order
        assert log.num_interactions == 3


def test_ml100k_bad_row(tmp_path):
    path = write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", gz=False)
    with pytest.raises(DataFileError, match=r"u\.data, line 2: expected 4 fields"):
        formats.read_ml100k(path)


def test_seq_tsv_keeps_file_order(tmp_path):
    path = write(tmp_path / "seq.tsv.gz", "user_id\tmovie_id\n2\t9\n1\t30\n1\t10\n2\t3\n", gz=True)
    table = formats.read_user_item_tsv(path)
    assert table.column("item").to_pylist() == [9, 30, 10, 3]
    with pytest.raises(DataFileError, match=r"line 3: column 'user': expected an integer"):
        formats.read_user_item_tsv(write(tmp_path / "bad.tsv", "user_id\tmovie_id\n1\t2\nu\t3\n"))


def test_ml1m_prefers_ratings_dat(tmp_path):
    write(tmp_path / "ml-1m" / "ml-1m.seq.tsv.gz", "user_id\tmovie_id\n1\t1\n", gz=True)
    assert load_dataset("ml-1m", data_dir=tmp_path).num_interactions == 1
    write(tmp_path / "ml-1m" / "ratings.dat", "1::1::5::1\n1::2::5::2\n")
    assert load_dataset("ml-1m", data_dir=tmp_path).num_interactions == 2


# --------------------------------------------------------- SASRec / S3-Rec
def test_user_item_lines(tmp_path):
    path = write(tmp_path / "beauty.txt", "1 1\n1 2\n2 2\n2 3\n", gz=False)
    log = load_file(path, format="user-item-lines")
    assert pairs(log) == [(1, 1), (1, 2), (2, 2), (2, 3)]
    with pytest.raises(DataFileError, match=r"line 2: expected 2 fields"):
        formats.read_user_item_lines(write(tmp_path / "bad.txt", "1 1\n1 2 3\n"))


def test_sequence_lines(tmp_path):
    path = write(tmp_path / "Beauty.txt", "1 5 6 7\n\n2 6 8\n", gz=False)
    table = formats.read_sequence_lines(path)
    assert table.column("user").to_pylist() == [1, 1, 1, 2, 2]
    assert table.column("item").to_pylist() == [5, 6, 7, 6, 8]
    with pytest.raises(DataFileError, match=r"line 3: expected integers, found 'x'"):
        formats.read_sequence_lines(write(tmp_path / "bad.txt", "1 5 6\n2 7\n3 x 9\n"))
    with pytest.raises(DataFileError, match="no items"):
        formats.read_sequence_lines(write(tmp_path / "bad2.txt", "1 5 6\n2\n"))


# ------------------------------------------------------------------- Ta-Feng
TAFENG_HEADER = '"TRANSACTION_DT","CUSTOMER_ID","AGE_GROUP","PIN_CODE","PRODUCT_SUBCLASS","PRODUCT_ID","AMOUNT","ASSET","SALES_PRICE"'


def tafeng_bytes(rows: list[str]) -> bytes:
    return b"\xef\xbb\xbf" + ("\r\n".join([TAFENG_HEADER, *rows]) + "\r\n").encode()


def test_tafeng_bom_crlf_quoted_string_ids(tmp_path):
    rows = [
        '"11/2/2000","00000042","45-49","115","110411","0471019901037","2","24","30"',
        '"11/1/2000","00000042","45-49","115","110411","4710199010372","1","48","46"',
        '"11/1/2000","01104905","45-49","115","110411","0471019901037","1","48","46"',
    ]
    path = write(tmp_path / "tafeng" / "ta_feng_all_months_merged.csv.gz", tafeng_bytes(rows), gz=True)
    table = formats.read_tafeng(path)
    assert table.column("user").type == pa.string()
    assert table.column("user").to_pylist() == ["00000042", "00000042", "01104905"]
    log = load_dataset("tafeng", data_dir=tmp_path)
    # chronological: 11/1 before 11/2 for customer 00000042; leading zeros kept
    assert pairs(log) == [("00000042", "4710199010372"), ("00000042", "0471019901037"), ("01104905", "0471019901037")]
    assert np.all(np.diff(log.timestamps[:2]) == 86400)


def test_tafeng_bad_rows(tmp_path):
    good = '"11/1/2000","00000042","45-49","115","110411","4710199010372","1","48","46"'
    path = write(tmp_path / "t.csv", tafeng_bytes([good, '"11/1/2000","00000043","45-49"']))
    with pytest.raises(DataFileError, match=r"t\.csv, line 3: expected 9 fields"):
        formats.read_tafeng(path)
    path = write(tmp_path / "t.csv", tafeng_bytes([good, good, good.replace("11/1/2000", "2000-11-01")]))
    with pytest.raises(DataFileError, match=r"line 4: column 'TRANSACTION_DT': expected a date"):
        formats.read_tafeng(path)
    path = write(tmp_path / "t.csv", tafeng_bytes([]).replace(b"CUSTOMER_ID", b"CUSTOMER"))
    with pytest.raises(DataFileError, match=r"line 1: header has no column 'CUSTOMER_ID'"):
        formats.read_tafeng(path)


# ------------------------------------------------------------ CaseRecommender
def test_caserec_with_header(tmp_path):
    write(tmp_path / "steam" / "game_purchase.dat.gz", "User_ID\tGame_ID\tPurchase\n1\t1\t1.0\n1\t2\t1.0\n1\t1\t1.0\n2\t2\t1.0\n", gz=True)
    assert load_dataset("steam-200k", data_dir=tmp_path).num_interactions == 4
    assert load_dataset("steam-200k", data_dir=tmp_path, preprocess="dedupe").num_interactions == 3
    with pytest.raises(DataFileError, match=r"line 3: column 'rating': expected a number"):
        formats.read_caserec(write(tmp_path / "bad.dat", "User_ID\tGame_ID\tPurchase\n1\t1\t1.0\n1\t2\tyes\n"))


# ------------------------------------------------------------------- RecBole
def test_recbole_inter(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n196\t302\t3\t881250940\n22\t377\t1\t878887116\n"
    log = load_file(write(tmp_path / "ml-100k.inter", text))
    assert log.user_labels.tolist() == [22, 196]  # plain integer tokens become ints
    assert pairs(log) == [(22, 377), (196, 302), (196, 242)]
    text = "session:token\tsku:token\n007\tA\n007\tB\n1\tA\n"
    log = load_file(write(tmp_path / "x.inter", text), user_field="session", item_field="sku", time_field=None)
    assert log.user_labels.tolist() == ["007", "1"]  # "007" keeps its zeros, so all stay strings
    with pytest.raises(DataFileError, match=r"line 1: no 'user_id' column"):
        load_file(write(tmp_path / "y.inter", "uid:token\titem_id:token\n1\t2\n"))
    with pytest.raises(DataFileError, match=r"line 1: RecBole header field 'user_id' lacks"):
        load_file(write(tmp_path / "z.inter", "user_id\titem_id\n1\t2\n"))
    with pytest.raises(DataFileError, match=r"line 3: expected 2 fields"):
        load_file(write(tmp_path / "w.inter", "user_id:token\titem_id:token\n1\t2\n1\t2\t3\n"))


# ------------------------------------------------------------ CSV / Parquet
def test_csv_with_column_mapping(tmp_path):
    text = 'uid,sku,when,extra\n7,0042,2020-01-02T00:00:00,x\n7,0043,2020-01-01T00:00:00,"a,b"\n8,0042,2020-01-01T00:00:00,y\n'
    log = load_file(write(tmp_path / "log.csv", text), user="uid", item="sku", timestamp="when")
    assert pairs(log) == [(7, "0043"), (7, "0042"), (8, "0042")]
    log = load_file(write(tmp_path / "log.tsv.gz", "u\ti\tt\n1\t2\t5\n1\t3\t4\n", gz=True), user="u", item="i", timestamp="t")
    assert pairs(log) == [(1, 3), (1, 2)]
    with pytest.raises(DataFileError, match=r"line 1: header has no column 'sku'"):
        load_file(write(tmp_path / "bad.csv", "uid,item\n1,2\n"), user="uid", item="sku")
    with pytest.raises(DataFileError, match=r"bad2\.csv, line 3: expected 2 fields"):
        load_file(write(tmp_path / "bad2.csv", "uid,sku\n1,2\n1,2,3\n"), user="uid", item="sku")


def test_parquet_with_column_mapping(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"u": ["b", "a", "b"], "i": [3, 1, 2], "ts": [2.0, 1.0, 1.0]}), path)
    log = load_file(path, user="u", item="i", timestamp="ts")
    assert pairs(log) == [("a", 1), ("b", 2), ("b", 3)]
    with pytest.raises(DataFileError, match="no column 'user_id'"):
        load_file(path)
    with pytest.raises(DataFileError, match="not a readable Parquet"):
        load_file(write(tmp_path / "junk.parquet", "not parquet"), user="u", item="i")


def test_load_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot tell the file format"):
        load_file(write(tmp_path / "mystery.bin", "1 2\n"))
    with pytest.raises(UnknownNameError, match="known file formats"):
        load_file(tmp_path / "mystery.bin", format="nope")
    with pytest.raises(DataFileError, match="file not found"):
        load_file(tmp_path / "absent.csv")
    with pytest.raises(DataFileError, match="is a directory"):
        load_file(tmp_path)
    with pytest.raises(DataFileError, match="absent.bin: file not found"):  # before the format is guessed
        load_file(tmp_path / "absent.bin")
    import pandas as pd

    categorical = pd.DataFrame({"user_id": pd.Categorical(["1", "", "2"]), "item_id": ["1", "2", "3"]})
    categorical.to_parquet(tmp_path / "categorical.parquet")  # dictionary-encoded in the file
    with pytest.raises(DataFileError, match="column 'user_id' has an empty id"):
        load_file(tmp_path / "categorical.parquet")
    untimed = write(tmp_path / "untimed.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n2\t3\t4\n")
    assert load_file(untimed, time_field="").num_interactions == 2  # an empty time_field: read without one
    blank = "user_id,item_id\n1,2\n,3\n2,\n"  # a blank cell would become an id of its own
    with pytest.raises(DataFileError, match="column 'user_id' has an empty id \\(data row 2\\)"):
        load_file(write(tmp_path / "blank.csv", blank))
    with pytest.raises(DataFileError, match="column 'item_id' has an empty id"):
        load_file(write(tmp_path / "blank_item.csv", "user_id,item_id\n1,2\n2, \n"))
    with pytest.raises(DataFileError, match="column 'item_id' has an empty id"):
        load_file(write(tmp_path / "blank.inter", "user_id:token\titem_id:token\n1\t2\n3\t\n"), format="recbole", time_field=None)
    with pytest.raises(DataFileError, match="the file is empty"):
        formats.read_user_item_lines(write(tmp_path / "empty.txt", ""))
    with pytest.raises(DataFileError, match="no data rows"):
        formats.read_caserec(write(tmp_path / "header_only.dat", "User_ID\tGame_ID\tPurchase\n"))
    with pytest.raises(DataFileError, match="cannot read"):
        formats.read_ml100k(write(tmp_path / "broken.gz", b"not gzip at all"))


def test_a_file_format_is_one_registered_reader(tmp_path):
    """``@file_format(name)`` on a reader makes ``name`` a ``format:`` of ``load_file``: nothing else to edit."""
    from raysteal.data import file_formats

    assert file_formats() == sorted(formats.FILE_FORMATS)
    assert formats.FILE_FORMATS["grouplens-dat"] is formats.read_grouplens_ratings

    @formats.file_format("pairs-csv")
    def read_pairs(path: Path) -> pa.Table:
        return formats.read_table_file(path, user="u", item="i")

    try:
        (tmp_path / "log.txt").write_text("u,i\n1,7\n1,8\n2,7\n")
        log = load_file(tmp_path / "log.txt", format="pairs-csv")
        assert (log.num_users, log.num_items, log.num_interactions) == (2, 2, 3)
        with pytest.raises(ValueError, match="file format 'pairs-csv' registered twice"):
            formats.file_format("pairs-csv")(read_pairs)
    finally:
        formats.FILE_FORMATS.pop("pairs-csv")
    assert "pairs-csv" not in file_formats()
