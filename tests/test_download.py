"""Download with MD5 check, from a real HTTP server on loopback (GroupLens itself is not reachable
from tests; the download code is the same, only the address differs): the cache, a corrupt or
replaced archive, archives that are no zip or would write outside their folder, and
``source.download`` through the ingest job."""

import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

from recsys.sources.download import KNOWN_ARCHIVES, fetch
from recsys.errors import InputError


def zip_bytes(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def ml1m(ratings="1::1193::5::978300760\n", movies="1193::Cuckoo (1975)::Drama\n"):
    return zip_bytes({"ml-1m/ratings.dat": ratings, "ml-1m/movies.dat": movies})


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def server(www):
    """(address of ml-1m.zip, its MD5, the paths requested so far); files served from ``www``."""
    root = www
    data = ml1m()
    (root / "ml-1m.zip").write_bytes(data)
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
        hashlib.md5(data).hexdigest(), hits
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


def test_a_new_archive_is_extracted_again(server, www, tmp_path):
    """The archive at the address changed (a new md5): it is downloaded again and its own files
    are read, not those extracted from the cached older archive."""
    url, md5, hits = server
    cache = str(tmp_path / "cache")
    fetch("ml-1m", cache_dir=cache, url=url, md5=md5)
    newer = ml1m(ratings="2::3000::4::978300761\n6::1::1::978300762\n")
    (www / "ml-1m.zip").write_bytes(newer)
    got = fetch("ml-1m", cache_dir=cache, url=url, md5=hashlib.md5(newer).hexdigest())
    with open(got.ratings) as fh:
        assert fh.read() == "2::3000::4::978300761\n6::1::1::978300762\n"
    assert len(hits) == 2
    assert sorted(os.listdir(cache)) == ["ml-1m.zip", "ml-1m.zip.d"]  # no staging left


def test_a_corrupt_cached_archive_is_fetched_and_extracted_again(server, tmp_path):
    url, md5, hits = server
    cache = tmp_path / "cache"
    fetch("ml-1m", cache_dir=str(cache), url=url, md5=md5)
    (cache / "ml-1m.zip").write_bytes(b"PK\x03\x04 truncated")
    got = fetch("ml-1m", cache_dir=str(cache), url=url, md5=md5)
    assert (cache / "ml-1m.zip").read_bytes() == (tmp_path / "www" / "ml-1m.zip").read_bytes()
    with open(got.ratings) as fh:
        assert fh.read() == "1::1193::5::978300760\n"
    assert len(hits) == 2


def test_an_archive_that_is_no_zip_is_refused(server, www, tmp_path):
    url, _, _ = server
    (www / "ml-1m.zip").write_bytes(b"<html>not found</html>")
    md5 = hashlib.md5(b"<html>not found</html>").hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as err:
        fetch("ml-1m", cache_dir=str(cache), url=url, md5=md5)
    assert str(err.value) == f"{cache / 'ml-1m.zip'}: not a zip archive: File is not a zip file"
    assert os.listdir(cache) == ["ml-1m.zip"]  # nothing extracted, no staging folder


def test_an_archive_writing_outside_its_folder_is_refused(server, www, tmp_path):
    url, _, _ = server
    evil = zip_bytes({"ml-1m/ratings.dat": "1::1::5::1\n", "../escaped.txt": "x"})
    (www / "ml-1m.zip").write_bytes(evil)
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as err:
        fetch("ml-1m", cache_dir=str(cache), url=url, md5=hashlib.md5(evil).hexdigest())
    assert str(err.value) == f"{cache / 'ml-1m.zip'}: unsafe path in archive: ../escaped.txt"
    assert not (tmp_path / "escaped.txt").exists() and os.listdir(cache) == ["ml-1m.zip"]


@pytest.mark.spark
@pytest.mark.e2e
def test_source_download_through_the_ingest_job(spark, server, www, tmp_path):
    """source.download with ml-1m's layout: the job downloads, verifies and extracts the
    archive and ingests its ratings.dat and movies.dat; the tables equal a plain reading of the
    text put in the archive (one bad line rejected with its line number)."""
    import pandas as pd

    from recsys.config import load_config
    from recsys.runner.pipeline import run_ingest

    url, _, _ = server
    ratings = ("1::1193::5::978300760\n1::661::3::978302109\n2::1193::x::978298413\n"
               "2::73::4::978299941\n3::661::2::978298430\n")
    movies = "1193::Cuckoo (1975)::Drama\n661::Peach (1996)::Animation\n73::Les (1995)::Drama\n"
    data = ml1m(ratings, movies)
    (www / "ml-1m.zip").write_bytes(data)
    cfg = load_config(None, [
        "source.format=ml-1m", "source.download=true", f"source.url={url}",
        f"source.md5={hashlib.md5(data).hexdigest()}", f"source.cache_dir={tmp_path / 'cache'}",
        f"sink.path={tmp_path / 'wh'}", "ingest.max_reject_fraction=0.5"])
    run_ingest(spark, cfg)
    wh = tmp_path / "wh" / "bqml_tutorial"
    got = pd.read_parquet(wh / "ratings")
    want = sorted((int(u), int(i), float(r)) for u, i, r, _ in
                  (line.split("::") for line in ratings.splitlines()) if r != "x")
    assert sorted(zip(got.user_id, got.item_id, got.rating)) == want
    rejected = pd.read_parquet(wh / "ratings_rejected")
    assert rejected.line_number.tolist() == [3]
    assert rejected.source_file.tolist() == [
        str(tmp_path / "cache" / "ml-1m.zip.d" / "ml-1m" / "ratings.dat")]
    titles = pd.read_parquet(wh / "movies")
    assert sorted(zip(titles.movie_id, titles.movie_title)) == [
        (73, "Les (1995)"), (661, "Peach (1996)"), (1193, "Cuckoo (1975)")]
