"""The ratings text reader (pyarrow for plain lines, formats for the others) against a pure-Python oracle.

Files are made of many kinds of lines, good and bad, with LF, CRLF and CR line ends; the oracle
splits the bytes into lines itself and parses each by the documented rules, written here
without ``recsys.sources.formats`` (which the reader's Python fallback uses). The reader must give the
same rows, line numbers, texts and reasons, however the file is cut into splits.
"""

import bz2
import contextlib
import csv
import datetime as dt
import gzip
import random
import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys.sources import readers
from recsys.config import RatingColumns, SourceConfig

pytestmark = pytest.mark.spark

EMPTY = (None, None, None, None)


# --- oracle ------------------------------------------------------------------------------------
# Written from the rules recsys documents for a ratings line (recsys/sources/formats.py docstrings and
# README), without recsys.sources.formats: fields split at the separator (the csv module for CSV),
# whitespace stripped as str.strip() does, integers and numbers by their grammar, timestamps as
# epoch seconds in Spark's TIMESTAMP range or ISO-8601 (naive = UTC).

INT_GRAMMAR = re.compile(r"[+-]?\d+")
NUMBER_GRAMMAR = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
NOT_FINITE = {"nan", "inf", "infinity"}
TIME_RANGE = (-62135596800, 253402300799)  # 0001-01-01T00:00:00 .. 9999-12-31T23:59:59 UTC


class Reject(Exception):
    pass


def oracle_int(text, name):
    value = text.strip()
    if not INT_GRAMMAR.fullmatch(value):
        raise Reject(f"{name} is not an integer: {text!r}")
    if not -2 ** 63 <= int(value) < 2 ** 63:
        raise Reject(f"{name} {value} is outside the INT64 range")
    return int(value)


def oracle_rating(text):
    value = text.strip()
    unsigned = value.lower()[1:] if value[:1] in ("+", "-") else value.lower()
    if unsigned in NOT_FINITE:
        raise Reject(f"rating is not a finite number: {text!r}")
    if not NUMBER_GRAMMAR.fullmatch(value):
        raise Reject(f"rating is not a number: {text!r}")
    if float(value) in (float("inf"), float("-inf")):
        raise Reject(f"rating is not a finite number: {text!r}")
    return float(value)


def oracle_time(text, required):
    value = text.strip()
    if value == "":
        if required:
            raise Reject("timestamp is empty")
        return None
    if INT_GRAMMAR.fullmatch(value):
        if not TIME_RANGE[0] <= int(value) <= TIME_RANGE[1]:
            raise Reject(f"timestamp {value} is outside the TIMESTAMP range")
        return int(value)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Reject("timestamp is neither epoch seconds nor an ISO-8601 time: "
                     f"{text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


def oracle_splitter(fmt, delimiter):
    separator = {"ml-1m": "::", "ml-100k": "\t"}.get(fmt)
    if separator is not None:
        return lambda line: line.split(separator)
    sep = "," if fmt == "ml-latest" else delimiter

    def split(line):
        try:
            return next(csv.reader([line], delimiter=sep, strict=True))
        except csv.Error as exc:
            raise Reject(f"malformed CSV: {exc}") from None
    return split


def oracle_row(line, split, header, positions, width, required):
    """(user, item, rating, timestamp) of one line, or Reject with the reason."""
    if not line.strip():
        raise Reject("empty line")
    fields = split(line)
    if header and tuple(f.strip() for f in fields) == header:
        raise Reject("header line")
    if len(fields) != width:
        raise Reject(f"expected {width} fields, found {len(fields)}")
    user, item, rating, stamp = (None if p is None else fields[p] for p in positions)
    return (oracle_int(user, "user_id"), oracle_int(item, "item_id"), oracle_rating(rating),
            None if stamp is None else oracle_time(stamp, required))


def hadoop_lines(data: bytes):
    """Lines as Hadoop's line reader sees them: ended by LF, CRLF or CR."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # a final line end does not start another line
    return lines


def oracle(data: bytes, fmt, delimiter=",", columns=()):
    """The rows a ratings file must give: BOM and header handled on line 1 only."""
    # The test lines only hold bad bytes that Java and Python both replace one for one.
    lines = [line.decode("utf-8", errors="replace") for line in hadoop_lines(data)]
    split = oracle_splitter(fmt, delimiter)
    if fmt in ("ml-1m", "ml-100k"):
        header, positions, width, required = None, (0, 1, 2, 3), 4, True
    elif fmt == "ml-latest":
        header, positions, width, required = ("userId", "movieId", "rating", "timestamp"), \
            (0, 1, 2, 3), 4, True
    else:
        header = tuple(h.strip() for h in next(csv.reader([lines[0].removeprefix("\ufeff")],
                                                           delimiter=delimiter)))
        positions = tuple(None if c is None else header.index(c) for c in columns)
        width, required = len(header), False
    rows = []
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix("\ufeff")
            if header and tuple(f.strip() for f in split(line)) == header:
                continue
        if "\ufffd" in line:
            rows.append(EMPTY + (number, line, "undecodable bytes (not UTF-8)"))
            continue
        try:
            rows.append(oracle_row(line, split, header, positions, width, required)
                        + (number, line, None))
        except Reject as exc:
            rows.append(EMPTY + (number, line, str(exc)))
    return rows


# --- files of many kinds of lines --------------------------------------------------------------

IDS = ["1", "42", "6040", "+7", "-3", "007", "-0", " 12 ", "\t5", "5\t", "x", "", "1.5", "1e3",
       "9223372036854775807", "9223372036854775808", "-9223372036854775808",
       "-9223372036854775809", "+09223372036854775807", "99999999999999999999",
       "00000000000000000000001", "123456789012345678", "1:", "\u00a03", "\uff11", "1\x0b",
       "'q'", "a\\b", '"5"', "\u200b1", "\tx", "1 2"]
RATINGS = ["4", "3.5", "0.5", "4.", ".5", "+4", "-1", "00.50", "1e3", "1E-2", "2.5e+1", "nan",
           "NaN", "-inf", "+Infinity", "INF", "1e999", "-1e999", "five", "", " 4 ", "4 stars",
           "1" * 400, "1" * 15 + "." + "1" * 15, "3.14159265358979323846", "1e-400", "0x10",
           "1_0", "\u2003" + "4", "4\u00a0", "'4'", '"4"', "4\tstars"]
TIMES = ["978300760", "0", "-1", "+5", "0978300760", "99999999999", "253402300799",
         "253402300800", "-62135596800", "-62135596801", "99999999999999999999", "", " 7 ",
         "2001-09-09T01:46:40Z", "2001-09-09", "2001-09-09 01:46:40+02:00", "garbage", "1.5",
         "\u20071", "'1'"]
ENDINGS = [b"\n", b"\n", b"\n", b"\r\n", b"\r"]


def good(rng):
    return [str(rng.randint(1, 6040)), str(rng.randint(1, 3952)),
            rng.choice(["1", "2", "3", "4", "5", "0.5", "3.5", "4.0"]),
            str(rng.randint(956703932, 1046454590))]


def odd(rng):
    return [rng.choice(IDS), rng.choice(IDS), rng.choice(RATINGS), rng.choice(TIMES)]


FREE = ["x", "", " note ", "a b", "\u00e9t\u00e9"]  # text of unmapped columns


def ratings_file(rng, n, separator, header=None, order=(0, 1, 2, 3), width=4):
    """Bytes of ``n`` lines of ``width`` fields, the user, item, rating and timestamp at the
    ``order`` positions; ``header`` first (with a BOM half of the time), else maybe a BOM."""
    def row(fields):
        cells = [rng.choice(FREE) for _ in range(width)]
        for value, position in zip(fields, order):
            cells[position] = value
        return separator.join(cells)

    first = header if header is not None else row(good(rng))
    lines = [(b"\xef\xbb\xbf" if rng.random() < 0.5 else b"") + first.encode()]
    specials = ["", "   ", "\t", " \t ", "\u2003", "\x0c", separator * 3, "junk", '"', "'",
                "\\", row(good(rng)) + separator, "\ufeff" + row(good(rng))]
    if header is not None:
        specials += [header, "  " + header.replace(separator, " " + separator + "\t")]
    while len(lines) < n:
        roll = rng.random()
        if roll < 0.55:
            line = row(good(rng))
        elif roll < 0.85:
            line = row(odd(rng))
        elif roll < 0.92:  # a wrong number of fields
            count = rng.choice([c for c in range(1, width + 3) if c != width])
            line = separator.join(rng.choice(IDS) for _ in range(count))
        else:
            line = rng.choice(specials)
        encoded = line.encode()
        if rng.random() < 0.02:  # bytes that are not UTF-8
            encoded += rng.choice([b"\xff", b"\xe9", b"\xc3", b"\x80", b"\xfe\xff1"])
        lines.append(encoded)
    endings = [rng.choice(ENDINGS) for _ in lines]
    if rng.random() < 0.5:
        endings[-1] = b""  # the last line without a line end
    return b"".join(line + end for line, end in zip(lines, endings))


FORMATS = {
    "ml-1m": dict(separator="::"),
    "ml-100k": dict(separator="\t"),
    "ml-latest": dict(separator=",", header="userId,movieId,rating,timestamp"),
    # generic CSV: the columns in another order and two unmapped ones; ISO times parse
    "csv": dict(separator=";", header="when;score;note;film;who;tag", order=(4, 3, 1, 0),
                width=6, delimiter=";", columns=("who", "film", "score", "when")),
    # generic CSV without a timestamp column (the fourth field goes unused)
    "csv-no-time": dict(separator=",", header="u,i,r,spare", delimiter=",",
                        columns=("u", "i", "r", None)),
}


def make_case(tmp_path, name, seed, n=1200, compress=None):
    """A file of format ``name`` (see FORMATS) and the rows the oracle finds in it."""
    spec = dict(FORMATS[name])
    fmt = "csv" if name.startswith("csv") else name
    delimiter, columns = spec.pop("delimiter", ","), spec.pop("columns", ())
    data = ratings_file(random.Random(f"{name}-{seed}"), n, **spec)
    path = tmp_path / (f"{name}.txt" + (f".{compress}" if compress else ""))
    packed = {None: lambda: data, "gz": lambda: gzip.compress(data),
              "bz2": lambda: bz2.compress(data, compresslevel=1)}[compress]()
    path.write_bytes(packed)
    source = SourceConfig(format=fmt, ratings=str(path), delimiter=delimiter,
                          rating_columns=RatingColumns(*columns) if columns else RatingColumns())
    return source, oracle(data, fmt, delimiter, columns)


def read(spark, source):
    parsed = readers.read_ratings(spark, source, source.ratings)
    rows = readers.number_lines(parsed, header_lines=True).drop("source_file").collect()
    return sorted((tuple(r) for r in rows), key=lambda r: r[4])


@contextlib.contextmanager
def spark_conf(spark, **settings):
    old = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in old.items():
            spark.conf.set(key, value)


def first_difference(got, want):
    for a, b in zip(got, want):
        if a != b:
            return f"got {a!r}\nwant {b!r}"
    return f"{len(got)} rows, want {len(want)}"


# --- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FORMATS))
def test_rows_match_the_oracle(spark, tmp_path, name):
    source, want = make_case(tmp_path, name, seed=1)
    assert {r[6] for r in want} > {None}, "the file should have good and bad lines"
    got = read(spark, source)
    assert got == want, first_difference(got, want)


@pytest.mark.parametrize("name", ["ml-1m", "csv"])
def test_many_splits_number_lines_like_one(spark, tmp_path, name):
    source, want = make_case(tmp_path, name, seed=2, n=1500)
    with spark_conf(spark, **{"spark.sql.files.maxPartitionBytes": "2k"}):
        assert spark.read.text(source.ratings).rdd.getNumPartitions() > 10
        got = read(spark, source)
        if name == "ml-1m":
            assert read(spark, source) == got  # line numbers are the same every time
    assert got == want, first_difference(got, want)


def test_a_first_split_holding_only_the_header_still_counts_its_line(spark, tmp_path):
    """8-byte splits of a file whose 28-byte header is longer than a split: the first split
    reads the header only (no row), the next ones read nothing, then one line each."""
    source, want = make_case(tmp_path, "csv", seed=5, n=40)
    with spark_conf(spark, **{"spark.sql.files.maxPartitionBytes": "8"}):
        assert spark.read.text(source.ratings).rdd.getNumPartitions() > 100
        got = read(spark, source)
    assert got == want, first_difference(got, want)


@pytest.mark.parametrize("compress", ["gz", "bz2"])
def test_compressed_files(spark, tmp_path, compress):
    # bz2 is split too: 100 kB blocks of 250 kB of text, read in 32 kB splits of the file
    source, want = make_case(tmp_path, "ml-1m", seed=3, n=8000, compress=compress)
    with spark_conf(spark, **{"spark.sql.files.maxPartitionBytes": "32k"}):
        got = read(spark, source)
    assert got == want, first_difference(got, want)


def test_without_ansi_mode_as_on_spark_3(spark, tmp_path):
    source, want = make_case(tmp_path, "ml-latest", seed=4)
    with spark_conf(spark, **{"spark.sql.ansi.enabled": "false"}):
        got = read(spark, source)
    assert got == want, first_difference(got, want)


def test_numeric_csv_header_is_still_a_header(spark, tmp_path):
    path = tmp_path / "r.csv"
    data = b"1,2,3,4\n10,20,4.5,1000\n1,2,3,4\n 1 ,2,3,4\n"
    path.write_bytes(data)
    source = SourceConfig(format="csv", ratings=str(path),
                          rating_columns=RatingColumns("1", "2", "3", "4"))
    want = oracle(data, "csv", ",", ("1", "2", "3", "4"))
    assert [r[6] for r in want] == [None, "header line", "header line"]
    assert read(spark, source) == want


@pytest.mark.parametrize("separator, lines", [
    ("::", ["1::1193::5::978300760", "6040::1097::4::956715569"]),
    ("\t", ["196\t242\t3\t881250949"]),
    (",", ["1,31,2.5,1260759144", "162541,58559,4.0,1240953434"]),
])
def test_movielens_lines_take_the_one_regex_path(spark, separator, lines):
    """Good MovieLens lines need no rule-by-rule checks (the fast path for big files); matched
    by pyarrow's regex engine (RE2), which the reader's tasks use."""
    pattern = readers._Layout(separator, 4, None, (0, 1, 2, 3), True).simple_line()
    assert pc.match_substring_regex(pa.array(lines), pattern).to_pylist() == [True] * len(lines)


@pytest.mark.parametrize("separator, lines", [
    ("::", ["9223372036854775808::1::5::978300760",      # 19 digits: beyond INT64
            "1::1193::5::253402300800",                   # after 9999-12-31
            "1::1193::5::",                               # no timestamp
            "1::1193::" + "1" * 400 + "::978300760",      # a rating that overflows to inf
            "+1::1193::5::978300760", " 1::1193::5::978300760", "1::1193::5 ::978300760",
            "1::1193::5::978300760::", "1::1193::5", "1::::5::978300760",
            "1::1193::nan::978300760", "1::1193::5::2001-09-09", '"1"::1193::5::978300760',
            "\uff11::1193::5::978300760", "1\t::1193::5::978300760"]),
    ("\t", ["196\t242\t3\t", "196\t242\t3", "196\t242\t3\t881250949\t", "-196\t242\t3\t8"]),
    (",", ["1,31,2.5,1260759144,", '1,"31",2.5,1260759144',
           "1,31,,1260759144", "99999999999999999999,31,2.5,1260759144"]),
])
def test_lines_that_are_not_plain_leave_the_one_regex_path(spark, separator, lines):
    """The fast path casts a matching line's fields without any check, so it must refuse every
    line where a check could fail or a field needs more than a cast."""
    pattern = readers._Layout(separator, 4, None, (0, 1, 2, 3), True).simple_line()
    matched = pc.match_substring_regex(pa.array(lines), pattern).to_pylist()
    assert [line for line, hit in zip(lines, matched) if hit] == []
