"""Download with MD5 check, from a real HTTP server on loopback (GroupLens itself is not reachable
from tests; the download code is the same, only the address differs)."""

import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

from recsys.sources.download import KNOWN_ARCHIVES, fetch
from recsys.errors import InputError


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n")
        zf.writestr("ml-1m/movies.dat", "1193::Cuckoo (1975)::Drama\n")
    (root / "ml-1m.zip").write_bytes(buf.getvalue())
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ml-1m.zip", \
        hashlib.md5(buf.getvalue()).hexdigest(), hits
    httpd.shutdown()


def test_fetch_verifies_extracts_and_caches(server, tmp_path):
    url, md5, hits = server
    got = fetch("ml-1m", cache_dir=str(tmp_path / "cache"), url=url, md5=md5)
    with open(got.ratings) as fh:
        assert fh.read() == "1::1193::5::978300760\n"
    assert got.movies.endswith(os.path.join("ml-1m", "movies.dat"))
    fetch("ml-1m", cache_dir=str(tmp_path / "cache"), url=url, md5=md5)
    assert len(hits) == 1  # second call served from the verified cache


def test_checksum_mismatch_fails_and_leaves_nothing(server, tmp_path):
    url, _, _ = server
    with pytest.raises(InputError, match="does not match the expected 0123"):
        fetch("ml-1m", cache_dir=str(tmp_path / "cache"), url=url, md5="0123" + "0" * 28)
    assert os.listdir(tmp_path / "cache") == []


def test_unreachable_address_is_one_line(tmp_path):
    with pytest.raises(InputError, match="download http://127.0.0.1:9/x.zip failed"):
        fetch("ml-1m", cache_dir=str(tmp_path), url="http://127.0.0.1:9/x.zip", md5="0" * 32,
              timeout_s=2)


def test_published_checksums():
    assert KNOWN_ARCHIVES["ml-1m"].md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert KNOWN_ARCHIVES["ml-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
