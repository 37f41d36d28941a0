"""Bad input: every malformed line lands in ratings_rejected with its reason and line number,
every good line goes through, and the reject threshold fails the job with one clear line."""

import os

import pytest

from conftest import SAMPLE
from recsys import schemas
from recsys.config import load_config
from recsys.errors import InputError
from recsys.runner.pipeline import run_ingest
from recsys.sources import ingest, readers
from recsys.sinks import LocalWarehouse

pytestmark = pytest.mark.spark

# line number -> (bytes of the line, expected reason or None for a good row)
ML1M_LINES = [
    (b"\xef\xbb\xbf1::10::5::978300760", None),                 # UTF-8 BOM before line 1
    (b"1::11::3::978300761", None),
    (b"", "empty line"),
    (b"1::12::4", "expected 4 fields, found 3"),
    (b"abc::12::4::978300760", "user_id is not an integer: 'abc'"),
    (b"1::12::7::978300760", "rating 7.0 outside the scale [1, 5]"),
    (b"1::13::0::978300760", "rating 0.0 outside the scale [1, 5]"),
    (b"1::14::NaN::978300760", "rating is not a finite number: 'NaN'"),
    (b"2::10::4::978300800", "duplicate (user_id, item_id) pair: line 10 is kept (latest timestamp)"),
    (b"2::10::2::978300900", None),                              # latest of three: kept
    (b"2::10::5::978300700", "duplicate (user_id, item_id) pair: line 10 is kept (latest timestamp)"),
    (b"1::15::4::978300760::", "expected 4 fields, found 5"),     # trailing separator
    (b"9223372036854775808::1::4::978300760", "user_id 9223372036854775808 is outside the INT64 range"),
    (b"3::\xe9::4::978300760", "undecodable bytes (not UTF-8)"),
    (b"3::20::4::978300760", None),
    (b"3::21::4.5::978300760", None),
    (b"3::22::-inf::978300760", "rating is not a finite number: '-inf'"),
    (b"3::23::1e999::978300760", "rating is not a finite number: '1e999'"),
]


def write_lines(path, lines, ending=b"\n"):
    path.write_bytes(ending.join(line for line, _ in lines) + ending)
    return str(path)


def config(tmp_path, ratings, fmt="ml-1m", **overrides):
    sets = [f"source.format={fmt}", f"source.ratings={ratings}", f"sink.path={tmp_path / 'wh'}",
            "ingest.rating_min=1", "ingest.rating_max=5"]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, sets)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_each_bad_line_is_rejected_with_its_reason(spark, tmp_path, ending):
    path = write_lines(tmp_path / "ratings.dat", ML1M_LINES, ending)
    cfg = config(tmp_path, path, **{"ingest.max_reject_fraction": 1.0})
    run_ingest(spark, cfg)
    wh = LocalWarehouse(cfg.sink.path, cfg.sink.dataset)

    rejected = {r.line_number: (r.reason, r.source_file)
                for r in wh.read(spark, "ratings_rejected").collect()}
    expected = {n: reason for n, (_, reason) in enumerate(ML1M_LINES, start=1) if reason}
    assert {n: reason for n, (reason, _) in rejected.items()} == expected
    assert {src for _, src in rejected.values()} == {path}

    kept = sorted((r.user_id, r.item_id, r.rating) for r in wh.read(spark, "ratings").collect())
    assert kept == [(1, 10, 5.0), (1, 11, 3.0), (2, 10, 2.0), (3, 20, 4.0), (3, 21, 4.5)]

    def types(schema):
        return [(f.name, f.dataType) for f in schema.fields]

    assert types(wh.read(spark, "ratings").schema) == types(schemas.RATINGS_SCHEMA)
    assert types(wh.read(spark, "ratings_rejected").schema) == types(schemas.REJECTED_SCHEMA)


def test_raw_text_of_rejected_lines_is_kept(spark, tmp_path):
    path = write_lines(tmp_path / "ratings.dat", ML1M_LINES)
    cfg = config(tmp_path, path, **{"ingest.max_reject_fraction": 1.0})
    run_ingest(spark, cfg)
    rows = LocalWarehouse(cfg.sink.path, cfg.sink.dataset).read(spark, "ratings_rejected")
    raw = {r.line_number: r.raw for r in rows.collect()}
    assert raw[4] == "1::12::4"
    assert raw[11] == "2::10::5::978300700"
    assert raw[3] == ""


def test_header_repeated_mid_file_is_rejected(spark, tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"userId,movieId,rating,timestamp\r\n1,2,3.5,1\r\n"
                     b"userId,movieId,rating,timestamp\r\n1,3,4,2\r\n")
    cfg = config(tmp_path, str(path), fmt="ml-latest", **{"ingest.max_reject_fraction": 1.0})
    run_ingest(spark, cfg)
    wh = LocalWarehouse(cfg.sink.path, cfg.sink.dataset)
    assert [(r.line_number, r.reason) for r in wh.read(spark, "ratings_rejected").collect()] == [
        (3, "header line")]
    assert wh.read(spark, "ratings").count() == 2


def test_threshold_fails_naming_file_line_and_problem(spark, tmp_path):
    good = [(f"{u}::{i}::3::978300760".encode(), None) for u in range(1, 11) for i in range(1, 11)]
    lines = good[:40] + [(b"1::x::3::978300760", "bad")] + good[40:] + [(b"", "bad")]
    path = write_lines(tmp_path / "ratings.dat", lines)   # 2 bad of 102 = 1.96% > 1%
    cfg = config(tmp_path, path)
    with pytest.raises(InputError) as err:
        run_ingest(spark, cfg)
    message, _, kept_in = str(err.value).partition("; rejected rows in ")
    assert message == (
        f"{path}: 2 of 102 ratings rows rejected (1.96% > ingest.max_reject_fraction 1.00%); "
        f"first bad line 41: item_id is not an integer: 'x'")
    import pandas as pd

    # The failed run publishes no table, but its rejects are kept where the message says.
    assert sorted(pd.read_parquet(kept_in).line_number) == [41, 102]
    wh = LocalWarehouse(cfg.sink.path, cfg.sink.dataset)
    assert not wh.exists("ratings") and not wh.exists("ratings_rejected")


def test_at_threshold_passes(spark, tmp_path):
    good = [(f"{u}::{i}::3::978300760".encode(), None) for u in range(1, 11) for i in range(1, 11)]
    path = write_lines(tmp_path / "ratings.dat", good[:99] + [(b"junk", "bad")])  # 1 of 100
    cfg = config(tmp_path, path)
    run_ingest(spark, cfg)
    assert LocalWarehouse(cfg.sink.path, cfg.sink.dataset).read(spark, "ratings").count() == 99


def test_empty_file_fails(spark, tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="ratings.dat: no ratings rows"):
        run_ingest(spark, config(tmp_path, str(path)))


def test_missing_file_fails(spark, tmp_path):
    with pytest.raises(InputError, match="source.ratings: file not found: /no/such/ratings.dat"):
        run_ingest(spark, config(tmp_path, "/no/such/ratings.dat"))


def test_real_lines_mixed_with_every_kind_of_bad_line(spark, tmp_path):
    """200 real lines of the shipped ml-latest sample with one bad line of each kind spliced in
    every 7 lines, CRLF endings, a BOM, and a truncated last line without its newline: exactly
    the good lines arrive, with the values a plain-Python reading gives, and each bad line is
    rejected with its reason and line number."""
    import os

    sample = os.path.join(SAMPLE, "ratings.csv")
    with open(sample, "rb") as fh:
        header, *good = fh.read().splitlines()[:201]
    u, i, r, t = good[0].split(b",")
    older_copy = b",".join([u, i, r, str(int(t) - 1).encode()])  # same pair, an older rating
    bad = [(b"", "empty line"), (b"5,1", "expected 4 fields, found 2"),
           (b"x,1,3,978300760", "user_id is not an integer: 'x'"),
           (b"5,99999999999999999999,3,978300760",
            "item_id 99999999999999999999 is outside the INT64 range"),
           (b"5,1,6,978300760", "rating 6.0 outside the scale [0.5, 5]"),
           (b"5,1,nan,978300760", "rating is not a finite number: 'nan'"),
           (b"5,1,Infinity,978300760", "rating is not a finite number: 'Infinity'"),
           (b"5,\xff\xfe,3,978300760", "undecodable bytes (not UTF-8)"),
           (b"5,1,3,978300760,", "expected 4 fields, found 5"),
           (header, "header line"),
           (b" \t ", "empty line"),
           (older_copy, "duplicate (user_id, item_id) pair: line 2 is kept (latest timestamp)")]
    lines, expected_bad = [b"\xef\xbb\xbf" + header], {}
    for n, line in enumerate(good):
        if n % 7 == 3 and bad:
            raw, reason = bad.pop(0)
            lines.append(raw)
            expected_bad[len(lines)] = reason
        lines.append(line)
    lines.append(b"6,1193,")  # truncated: the writer died mid-line, no newline
    expected_bad[len(lines)] = "expected 4 fields, found 3"
    assert not bad, "sample too short for the corpus"
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"\r\n".join(lines))

    cfg = config(tmp_path, str(path), fmt="ml-latest", **{
        "ingest.max_reject_fraction": 1.0, "ingest.rating_min": 0.5})
    run_ingest(spark, cfg)
    wh = LocalWarehouse(cfg.sink.path, cfg.sink.dataset)
    rejected = {r.line_number: r.reason for r in wh.read(spark, "ratings_rejected").collect()}
    assert rejected == expected_bad
    oracle = {}
    for line in good:
        u, i, r, t = line.decode().split(",")
        oracle[(int(u), int(i))] = float(r)
    kept = {(r.user_id, r.item_id): r.rating for r in wh.read(spark, "ratings").collect()}
    assert kept == oracle and len(kept) == len(good) == 200


def _sample_ratings():
    """The shipped sample's ratings.csv: its path, its data lines split at commas, and
    {(user, item): rating} as plain Python reads them."""
    sample = os.path.join(SAMPLE, "ratings.csv")
    with open(sample, newline="") as fh:
        rows = [line.split(",") for line in fh.read().split("\r\n")[1:] if line]
    return sample, rows, {(int(u), int(i)): float(r) for u, i, r, _ in rows}


def test_a_wide_window_on_disk_gives_the_same_tables_on_the_whole_sample(spark, tmp_path,
                                                                          monkeypatch):
    """The large-input rule on the whole shipped sample (100,004 lines, 2.4 MB): with 64 KB of
    input a partition it asks for 38 window partitions (more than the session's 2), so the
    classified rows persist on disk only, and every line still arrives with the values a
    plain-Python reading of the file gives, nothing rejected."""
    sample, rows, oracle = _sample_ratings()
    assert len(oracle) == len(rows) == 100_004
    monkeypatch.setattr(ingest, "WINDOW_INPUT_BYTES", 64 << 10)
    cfg = config(tmp_path, sample, fmt="ml-latest", **{"ingest.rating_min": 0.5})
    files = readers.resolve_files(cfg.source, spark)
    parsed = readers.read_ratings(spark, cfg.source, files.ratings)
    assert ingest.window_partitions(parsed) == -(-os.path.getsize(sample) // (64 << 10)) == 38
    jsc = spark.sparkContext._jsc
    cached_before = set(jsc.getPersistentRDDs().keySet())
    result = ingest.ingest(spark, cfg.source, cfg.ingest)
    added = [rdd.getStorageLevel() for key, rdd in jsc.getPersistentRDDs().items()
             if key not in cached_before]
    assert [(level.useDisk(), level.useMemory()) for level in added] == [(True, False)]
    kept = {(r.user_id, r.item_id): r.rating for r in result.ratings.collect()}
    assert kept == oracle
    assert result.ratings_rejected.count() == 0 and result.ratings_stats.rejected_rows == 0


@pytest.mark.parametrize("bytes_per_partition", [None, 64 << 10], ids=["default", "wide"])
def test_the_ratings_table_is_sorted_where_its_rows_are(spark, tmp_path, monkeypatch,
                                                        bytes_per_partition):
    """The whole shipped sample: the ``ratings`` table is written straight from the cached
    classified rows, each partition sorted where it is (no exchange above them: no
    range-sampling job, no shuffle), and every file it writes is sorted by (user, item) and
    holds what a plain-Python reading of the file gives, in memory and on disk (the sample read
    in five splits)."""
    import glob

    import pandas as pd

    sample, _, oracle = _sample_ratings()
    if bytes_per_partition:
        monkeypatch.setattr(ingest, "WINDOW_INPUT_BYTES", bytes_per_partition)
    cfg = config(tmp_path, sample, fmt="ml-latest", **{"ingest.rating_min": 0.5})
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(-(-os.path.getsize(sample) // 5)))
    try:
        result = ingest.ingest(spark, cfg.source, cfg.ingest)
        plan = result.ratings._jdf.queryExecution().executedPlan().toString()
        out = str(tmp_path / "ratings")
        result.ratings.write.parquet(out)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    assert "InMemoryRelation" in plan and "Exchange" not in plan.split("InMemoryRelation")[0], plan
    files = sorted(glob.glob(os.path.join(out, "*.parquet")))
    assert len(files) == 5
    written = {}
    for name in files:
        frame = pd.read_parquet(name)
        keys = list(zip(frame.user_id, frame.item_id))
        assert keys == sorted(keys) and len(set(keys)) == len(keys), name
        written.update(zip(keys, frame.rating))
    assert written == oracle


def test_the_movies_table_is_one_file_sorted_by_movie_id(spark, tmp_path):
    """The whole shipped catalogue (9,125 movies): ``movies`` is written as one file sorted by
    movie id, with no exchange above the cached rows (no range-sampling job, no shuffle), and
    holds what Python's csv module reads from the file."""
    import csv
    import glob

    import pandas as pd

    with open(os.path.join(SAMPLE, "movies.csv"), newline="", encoding="utf-8") as fh:
        oracle = [(int(m), t, g) for m, t, g in list(csv.reader(fh))[1:]]
    assert len(oracle) == 9_125
    ratings = write_lines(tmp_path / "ratings.csv", [
        (b"userId,movieId,rating,timestamp", None), (b"1,1,4.0,964982703", None)])
    cfg = config(tmp_path, ratings, fmt="ml-latest",
                 **{"source.movies": os.path.join(SAMPLE, "movies.csv")})
    result = ingest.ingest(spark, cfg.source, cfg.ingest)
    plan = result.movies._jdf.queryExecution().executedPlan().toString()
    assert "Exchange" not in plan.split("InMemoryRelation")[0], plan
    out = str(tmp_path / "movies")
    result.movies.write.parquet(out)
    files = glob.glob(os.path.join(out, "*.parquet"))
    assert len(files) == 1
    frame = pd.read_parquet(files[0])
    assert list(zip(frame.movie_id, frame.movie_title, frame.genre)) == sorted(oracle)


def _local_bytes_read(spark):
    """Bytes read so far through Hadoop's local file system in this JVM (local mode: the tasks
    run in the driver's JVM, so their reads are counted here too)."""
    stats = spark.sparkContext._jvm.org.apache.hadoop.fs.FileSystem \
        .getGlobalStorageStatistics().get("file")
    return 0 if stats is None else stats.getLong("bytesRead")


@pytest.mark.parametrize("splits", [1, 7])
def test_ingest_reads_the_ratings_file_once(spark, tmp_path, splits):
    """Parsing, validating and de-duplicating read the file once (issue 15 item 3): Hadoop's
    read counter grows by the file's size while every table is computed. In 7 splits each
    split's reader may also read one 64 KB buffer past its end (to finish its last line); a
    second pass would read the whole file again (before, a first pass counted lines, and the
    kept and the rejected rows each parsed the file again: three reads)."""
    users, items = 2000, 40
    lines = [(f"{u}::{i}::{(u + i) % 5 + 1}::{978300000 + u * i}".encode(), None)
             for u in range(1, users + 1) for i in range(1, items + 1)]
    lines += [(b"bad line", "expected 4 fields, found 1"), (b"1::1::5::1", None)]
    path = write_lines(tmp_path / "ratings.dat", lines)
    cfg = config(tmp_path, path)
    size = (tmp_path / "ratings.dat").stat().st_size
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(-(-size // splits)))
    try:
        assert spark.read.text(path).rdd.getNumPartitions() == splits
        before = _local_bytes_read(spark)
        result = ingest.ingest(spark, cfg.source, cfg.ingest)
        kept = result.ratings.count()
        rejected = [(r.line_number, r.reason) for r in result.ratings_rejected.collect()]
        read = _local_bytes_read(spark) - before
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    n = users * items
    assert kept == n and result.ratings_stats.total_rows == n + 2
    assert rejected == [(n + 1, "expected 4 fields, found 1"),
                        (n + 2, "duplicate (user_id, item_id) pair: line 1 is kept "
                                "(latest timestamp)")]
    if splits == 1:
        assert read == size, f"read {read} bytes of a {size}-byte file"
    else:
        assert size <= read <= size + splits * 65536, f"read {read} bytes of a {size}-byte file"


@pytest.mark.parametrize("bytes_per_partition", [None, 4])
def test_ranking_every_row_shuffles_the_rows_once(spark, tmp_path, monkeypatch,
                                                  bytes_per_partition):
    """With more duplicated pairs than DUPLICATED_PAIRS_BROADCAST_MAX (here 0), every row is
    ranked, in one exchange of the rows: every window column shares one partitioning (an
    expression as the window key is aliased anew for each window column, and Spark shuffled and
    sorted 1 M rows four times). An input larger than ``spark.sql.shuffle.partitions`` x
    WINDOW_INPUT_BYTES (here 4 bytes a partition: the 22-byte file asks for 6, the session has
    2) is hashed into one partition per WINDOW_INPUT_BYTES, still in one exchange and with the
    same rows."""
    lines = [(b"1::1::5::1", None), (b"1::1::4::2", None)]
    path = write_lines(tmp_path / "ratings.dat", lines)
    monkeypatch.setattr(ingest, "DUPLICATED_PAIRS_BROADCAST_MAX", 0)
    if bytes_per_partition:
        monkeypatch.setattr(ingest, "WINDOW_INPUT_BYTES", bytes_per_partition)
    cfg = config(tmp_path, path)
    files = readers.resolve_files(cfg.source, spark)
    parsed = readers.read_ratings(spark, cfg.source, files.ratings)
    classified = ingest.classify_ratings(parsed, cfg.ingest, ingest.window_partitions(parsed))
    plan = classified._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan
    size = os.path.getsize(path)
    assert size == 22
    if bytes_per_partition:
        assert f", {-(-size // 4)}), REPARTITION_BY_NUM" in plan, plan
    assert [r.reason for r in classified.orderBy("split_line").collect()] == [
        "duplicate (user_id, item_id) pair: {kept} is kept (latest timestamp)", None]


@pytest.mark.parametrize("broadcast_max", [0, 1, 2], ids=["every row", "over the limit",
                                                            "at the limit"])
def test_the_duplicate_rule_gives_the_same_tables_however_it_ranks(
        spark, tmp_path, monkeypatch, broadcast_max):
    """Two pairs with several good rows among 2,000 pairs, one of them three rows with a tie on
    the latest timestamp (the later line wins), beside a bad line and a rating off the scale
    that is its pair's latest row (not ranked: the good row stays): the rejects and the kept
    rows are the hand-written ones whether every row is ranked (more duplicated pairs than the
    limit), or only the two pairs' rows are (a broadcast of the pairs)."""
    monkeypatch.setattr(ingest, "DUPLICATED_PAIRS_BROADCAST_MAX", broadcast_max)
    lines = [(f"{u}::{i}::3::{1000 + u}".encode(), None)
             for u in range(1, 41) for i in range(1, 51)]  # (u, i) on line 50 (u - 1) + i
    lines += [
        (b"7::7::5::999",
         "duplicate (user_id, item_id) pair: line 2002 is kept (latest timestamp)"),
        (b"7::7::4::1007", None),  # the tie with line 307: the later line wins
        (b"9::x::4::1", "item_id is not an integer: 'x'"),
        (b"9::9::9::5000", "rating 9.0 outside the scale [1, 5]"),  # off the scale: not ranked
        (b"12::3::2::1", "duplicate (user_id, item_id) pair: line 553 is kept (latest timestamp)"),
    ]
    path = write_lines(tmp_path / "ratings.dat", lines)
    cfg = config(tmp_path, path)
    result = ingest.ingest(spark, cfg.source, cfg.ingest)
    rejected = [(r.line_number, r.reason) for r in result.ratings_rejected.collect()]
    line_307 = "duplicate (user_id, item_id) pair: line 2002 is kept (latest timestamp)"
    assert rejected == sorted(
        [(307, line_307)] + [(2000 + k + 1, why) for k, (_, why) in enumerate(lines[2000:])
                             if why is not None])
    kept = {(r.user_id, r.item_id): r.rating for r in result.ratings.collect()}
    want = {(u, i): 3.0 for u in range(1, 41) for i in range(1, 51)}
    want[(7, 7)] = 4.0
    assert kept == want
    assert result.ratings_stats.rejected_rows == 5 and result.ratings_stats.total_rows == 2005


def test_files_are_named_as_given_whatever_their_characters(spark, tmp_path):
    """Spark hands the tasks %-escaped URIs; rejects name each file as the config gave it:
    a space, '+', '%' and a non-ASCII letter in the folder and file names (text ratings,
    Parquet ratings and the movies file, each read by another path)."""
    import pandas as pd

    folder = tmp_path / "odd dir+%41 é"
    folder.mkdir()
    ratings = write_lines(folder / "r+1 %2B é.dat", [
        (b"1::10::5::978300760", None), (b"1::x::3::978300760", "bad"),
        (b"1::10::4::978300700", "duplicate")])
    movies = folder / "m +%.dat"
    movies.write_bytes(b"10::Toy Story (1995)::Comedy\n10::Again (1995)::Drama\n")
    cfg = config(tmp_path, ratings, **{"ingest.max_reject_fraction": 1.0,
                                       "source.movies": str(movies)})
    run_ingest(spark, cfg)
    wh = LocalWarehouse(cfg.sink.path, cfg.sink.dataset)
    assert sorted((r.source_file, r.line_number, r.reason)
                  for r in wh.read(spark, "ratings_rejected").collect()) == [
        (ratings, 2, "item_id is not an integer: 'x'"),
        (ratings, 3, "duplicate (user_id, item_id) pair: line 1 is kept (latest timestamp)")]
    assert [(r.source_file, r.line_number) for r in wh.read(spark, "movies_rejected").collect()
            ] == [(str(movies), 2)]

    table = folder / "p +%.parquet"
    pd.DataFrame({"user_id": pd.array([1, None], dtype="Int64"), "item_id": [1, 2],
                  "rating": [3.0, 2.0], "timestamp": [7, 8]}).to_parquet(table)
    cfg = load_config(None, [f"source.ratings={table}", "source.format=parquet",
                             f"sink.path={tmp_path / 'wh2'}", "ingest.max_reject_fraction=0.5"])
    run_ingest(spark, cfg)
    rejected = LocalWarehouse(cfg.sink.path, cfg.sink.dataset).read(spark, "ratings_rejected")
    assert [(r.source_file, r.line_number) for r in rejected.collect()] == [(str(table), 2)]
