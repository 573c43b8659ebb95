"""`raysteal data fetch` against a local HTTP server on 127.0.0.1 serving archives the tests build."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from raysteal.data import dataset_spec, fetch, load_dataset
from raysteal.errors import ConfigError, DataFileError

U_DATA = "1\t10\t5\t100\n1\t11\t4\t90\n2\t10\t3\t80\n"


def make_zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on an ephemeral 127.0.0.1 port; yields (folder, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_fetch_zip_verifies_and_installs(server, tmp_path):
    www, base = server
    archive = make_zip({"ml-100k/u.data": U_DATA, "ml-100k/README": "readme", "__MACOSX/._u.data": "junk"})
    (www / "ml-100k.zip").write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    data = tmp_path / "data"
    result = fetch("ml-100k", data, url=f"{base}/ml-100k.zip", sha256=digest)
    assert result.downloaded and result.sha256 == digest
    assert sorted(p.relative_to(data).as_posix() for p in result.paths) == ["ml-100k/README", "ml-100k/u.data"]
    log = load_dataset("ml-100k", data_dir=data)
    assert (log.num_users, log.num_items, log.num_interactions) == (2, 2, 3)
    assert sorted(p.name for p in data.iterdir()) == ["ml-100k"]  # no temp files, no __MACOSX
    again = fetch("ml-100k", data, url=f"{base}/ml-100k.zip", sha256=digest)
    assert not again.downloaded and again.paths[0] == data / "ml-100k" / "u.data"


def test_fetch_into_dataset_folder_and_plain_file(server, tmp_path):
    www, base = server
    (www / "beauty.txt").write_text("1 1\n1 2\n2 1\n")
    digest = hashlib.sha256((www / "beauty.txt").read_bytes()).hexdigest()
    result = fetch("beauty", tmp_path / "d", url=f"{base}/beauty.txt", sha256=digest)
    assert result.paths == (tmp_path / "d" / "beauty" / "beauty.txt",)
    assert load_dataset("beauty", data_dir=tmp_path / "d").num_interactions == 3


def test_sha256_mismatch_leaves_nothing_behind(server, tmp_path):
    www, base = server
    (www / "ml-100k.zip").write_bytes(make_zip({"ml-100k/u.data": U_DATA}))
    data = tmp_path / "data"
    with pytest.raises(DataFileError, match="sha256 mismatch.*nothing was installed"):
        fetch("ml-100k", data, url=f"{base}/ml-100k.zip", sha256="0" * 64)
    assert list(data.iterdir()) == []


def test_unsafe_archive_is_rejected(server, tmp_path):
    www, base = server
    archive = make_zip({"../evil.txt": "x", "ml-100k/u.data": U_DATA})
    (www / "evil.zip").write_bytes(archive)
    data = tmp_path / "data"
    with pytest.raises(DataFileError, match="unsafe path"):
        fetch("ml-100k", data, url=f"{base}/evil.zip", sha256=hashlib.sha256(archive).hexdigest())
    assert list(data.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_download_errors(server, tmp_path):
    _, base = server
    with pytest.raises(DataFileError, match="cannot download"):
        fetch("ml-100k", tmp_path / "d", url=f"{base}/absent.zip", sha256="0" * 64)
    assert list((tmp_path / "d").iterdir()) == []
    with pytest.raises(ConfigError, match="64 hex digits"):
        fetch("ml-100k", tmp_path / "d", url=f"{base}/x.zip", sha256="abc")
    with pytest.raises(ConfigError, match="has no download"):
        fetch("synthetic", tmp_path / "d")


def test_no_known_hash_refuses_without_sha256(tmp_path):
    # beauty-5core has no official download; a user-supplied URL without a hash is refused
    assert dataset_spec("beauty-5core").fetch is None
    with pytest.raises(ConfigError, match="refusing to download unverified data"):
        fetch("beauty-5core", tmp_path, url="http://127.0.0.1:9/x.txt")


def test_official_specs_are_pinned():
    for name in ("ml-1m", "ml-100k", "tafeng", "steam-200k", "beauty"):
        spec = dataset_spec(name).fetch
        assert spec is not None and spec.url.startswith("https://")
        assert spec.sha256 is not None and len(spec.sha256) == 64
    assert dataset_spec("ml-1m").fetch.sha256 == "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
