"""Sharded sources (issue 17): source.ratings / source.movies as a folder, a glob, a list, or a
Hadoop URI glob. Every expectation is computed here from the shard files with plain Python."""

import os

import pandas as pd
import pytest

from conftest import SAMPLE
from recsys.config import load_config
from recsys.errors import InputError
from recsys.runner.pipeline import run_ingest

pytestmark = pytest.mark.spark
HEADER = "userId,movieId,rating,timestamp"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Real ml-latest lines of the shipped sample cut into three part files, each with its own
    header (as Spark writes CSV with header=true), plus Spark's _SUCCESS and .crc debris. Shard
    2 has a bad line at its own line 5; the (user, item) pair of shard 1's line 3 is repeated with
    the same timestamp and another rating in shard 3 (the later file wins the tie) and with an
    older timestamp in shard 2 (the latest timestamp wins)."""
    folder = tmp_path_factory.mktemp("shards") / "ratings"
    folder.mkdir()
    with open(os.path.join(SAMPLE, "ratings.csv")) as fh:
        lines = fh.read().splitlines()[1:301]
    parts = [lines[:100], lines[100:200], lines[200:300]]
    u, i, r, t = parts[0][1].split(",")  # shard 1, line 3 (line 1 is the header)
    parts[1].insert(3, "1,not-an-id,3.0,964982703")  # shard 2, line 5
    parts[1].append(f"{u},{i},0.5,{int(t) - 10}")   # older: rejected for shard 1's line
    parts[2].append(f"{u},{i},1.5,{t}")             # same time, later file: kept
    names = []
    for n, part in enumerate(parts):
        path = folder / f"part-{n:05d}-abc.csv"
        path.write_text("\r\n".join([HEADER, *part]) + "\r\n")
        names.append(str(path))
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000-abc.csv.crc").write_bytes(b"\x00crc")
    return folder, names


def plain_reading(names):
    """The expected ratings and rejects: each file read line by line (header on its line 1),
    the bad id rejected, duplicates resolved by latest timestamp, then later file, then later
    line."""
    rows, rejects = [], []
    for name in names:
        with open(name, newline="") as fh:
            for number, line in enumerate(fh.read().split("\r\n")[:-1], start=1):
                if number == 1:
                    assert line == HEADER
                    continue
                user, item, rating, ts = line.split(",")
                if not item.isdigit():
                    rejects.append((name, number, f"item_id is not an integer: '{item}'"))
                    continue
                rows.append(((int(user), int(item)), float(rating), int(ts), name, number))
    best = {}
    for key, rating, ts, name, number in rows:
        rank = (ts, name, number)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, rating)
    for key, rating, ts, name, number in rows:
        kept_ts, kept_name, kept_number = best[key][0]
        if (ts, name, number) != best[key][0]:
            where = (f"line {kept_number}" if kept_name == name
                     else f"line {kept_number} of {kept_name}")
            rejects.append((name, number, f"duplicate (user_id, item_id) pair: {where} is kept "
                                          f"(latest timestamp)"))
    kept = sorted((k[0], k[1], v[1]) for k, v in best.items())
    return kept, sorted(rejects)


def ingest(spark, tmp_path, ratings, *sets):
    cfg = load_config(None, [f"source.ratings={ratings}", "source.format=ml-latest",
                             f"sink.path={tmp_path / 'wh'}", "ingest.max_reject_fraction=0.5",
                             *sets])
    report = run_ingest(spark, cfg)
    wh = tmp_path / "wh" / "bqml_tutorial"
    got = pd.read_parquet(wh / "ratings")
    rejected = pd.read_parquet(wh / "ratings_rejected")
    return (report, sorted(zip(got.user_id, got.item_id, got.rating)),
            sorted(zip(rejected.source_file, rejected.line_number, rejected.reason)))


@pytest.mark.parametrize("form", ["folder", "glob", "list", "hadoop-uri-glob"])
def test_every_form_reads_every_shard_and_names_the_real_file_and_line(
        spark, tmp_path, shards, form):
    """A folder, a glob, a YAML list and a file:// URI glob (listed through Hadoop's FileSystem,
    as gs:// is) give the same tables: the kept rows and the rejects (with their own file, their
    line within it, their reason) equal the plain reading above; _SUCCESS and .crc are skipped,
    and the header at the top of every shard is no row at all."""
    folder, names = shards
    spec = {"folder": str(folder), "glob": str(folder / "part-*.csv"),
            "list": "[" + ", ".join(names) + "]",
            "hadoop-uri-glob": (folder / "part-*.csv").as_uri().replace("%2A", "*")}[form]
    _, kept, rejected = ingest(spark, tmp_path, spec)
    want_kept, want_rejects = plain_reading(names)
    assert kept == want_kept
    assert rejected == want_rejects
    # The bad id, and both losers of the duplicate (one in shard 1, one in shard 2).
    assert len(rejected) == 3 and {r[0] for r in rejected} == {names[0], names[1]}


def test_shard_with_another_header_is_one_clear_line(spark, tmp_path):
    """Shards of a csv source must share the header that names their columns; one that does not
    is named with its line 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("user_id,item_id,rating\n1,2,3\n")
    (folder / "b.csv").write_text("user,item,rating\n1,3,4\n")
    with pytest.raises(InputError) as err:
        ingest(spark, tmp_path, str(folder), "source.format=csv",
               "source.rating_columns.timestamp=")
    assert str(err.value) == (f"{folder / 'b.csv'}: line 1: header 'user,item,rating' differs "
                              f"from the header of {folder / 'a.csv'} ('user_id,item_id,rating')")


def test_csv_shards_each_with_a_header(spark, tmp_path):
    """A generic csv source in two shards with headers: both headers are skipped and the rows
    are the plain reading of both files."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "part-0.csv").write_text("\ufeffuser_id;item_id;rating\n1;2;3.5\n2;2;4\n")
    (folder / "part-1.csv").write_text("user_id;item_id;rating\r\n3;4;1\r\n")
    _, kept, rejected = ingest(spark, tmp_path, str(folder / "*.csv"), "source.format=csv",
                               "source.delimiter=;", "source.rating_columns.timestamp=")
    assert kept == [(1, 2, 3.5), (2, 2, 4.0), (3, 4, 1.0)] and rejected == []


def test_no_match_and_empty_folder_are_one_line(spark, tmp_path):
    """A glob matching nothing and a folder with only hidden files are refused with the key."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(InputError, match=r"^source.ratings: no file matches .*/nope-\*.csv$"):
        ingest(spark, tmp_path, str(tmp_path / "nope-*.csv"))
    with pytest.raises(InputError, match=r"^source.ratings: folder has no data files: .*/empty$"):
        ingest(spark, tmp_path, str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"^source.ratings: file not found: file:///no/such/x.csv"):
        ingest(spark, tmp_path, "file:///no/such/x.csv")


def test_movies_shards_keep_the_first_file_and_parquet_shards_number_rows_per_file(
        spark, tmp_path):
    """Movies in two ml-latest shards: a movie id in both keeps the first file's line (the
    reject names the second file and its line 2). Parquet ratings in two files: a NULL user in
    the second file's row 2 is rejected with that file and row number."""
    movies = tmp_path / "movies"
    movies.mkdir()
    (movies / "m-0.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    (movies / "m-1.csv").write_text("movieId,title,genres\n1,Other,Drama\n2,Jumanji (1995),"
                                    "Adventure\n")
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "rating": [4.0, 5.0],
                  "timestamp": [5, 6]}).to_parquet(ratings / "p-0.parquet")
    pd.DataFrame({"user_id": pd.array([3, None, 4], dtype="Int64"), "item_id": [1, 2, 2],
                  "rating": [3.0, 2.0, 1.0],
                  "timestamp": [7, 8, 9]}).to_parquet(ratings / "p-1.parquet")
    # (Movies of a parquet source are Parquet too: the CSV movie shards are read as ml-latest.)
    run_ingest(spark, load_config(None, [
        f"source.ratings={ratings}", "source.format=parquet", f"sink.path={tmp_path / 'wh'}",
        "ingest.max_reject_fraction=0.5"]))
    wh = tmp_path / "wh" / "bqml_tutorial"
    rejected = pd.read_parquet(wh / "ratings_rejected")
    assert list(zip(rejected.source_file, rejected.line_number, rejected.reason)) == [
        (str(ratings / "p-1.parquet"), 2, "NULL in a required column")]
    got = pd.read_parquet(wh / "ratings")
    assert sorted(zip(got.user_id, got.item_id)) == [(1, 1), (2, 2), (3, 1), (4, 2)]

    run_ingest(spark, load_config(None, [
        f"source.ratings={os.path.join(SAMPLE, 'ratings.csv')}", f"source.movies={movies}",
        f"sink.path={tmp_path / 'wh2'}", "ingest.max_reject_fraction=0.5"]))
    wh2 = tmp_path / "wh2" / "bqml_tutorial"
    kept = pd.read_parquet(wh2 / "movies")
    assert sorted(zip(kept.movie_id, kept.movie_title)) == [(1, "Toy Story (1995)"),
                                                            (2, "Jumanji (1995)")]
    mrej = pd.read_parquet(wh2 / "movies_rejected")
    assert list(zip(mrej.source_file, mrej.line_number, mrej.reason)) == [
        (str(movies / "m-1.csv"), 2,
         f"duplicate movie_id: line 2 of {movies / 'm-0.csv'} is kept")]
