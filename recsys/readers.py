"""Readers: the only code that reads source files. Each returns DataFrames; nothing is validated
beyond what a single line can tell (scale checks and duplicates belong to ``recsys.ingest``).

A parsed table has the output columns plus ``line_number``, ``raw`` and ``reason`` (NULL for a good
row), so that every bad line keeps its text, file and 1-based line number for ``*_rejected``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from recsys import download, formats
from recsys.config import SourceConfig
from recsys.errors import InputError

_META_FIELDS = [
    StructField("line_number", LongType(), True),
    StructField("raw", StringType(), True),
    StructField("reason", StringType(), True),
]
PARSED_RATINGS_SCHEMA = StructType([
    StructField("user_id", LongType(), True),
    StructField("item_id", LongType(), True),
    StructField("rating", DoubleType(), True),
    StructField("timestamp_seconds", LongType(), True),
    *_META_FIELDS,
])
PARSED_MOVIES_SCHEMA = StructType([
    StructField("movie_id", LongType(), True),
    StructField("movie_title", StringType(), True),
    StructField("genre", StringType(), True),
    *_META_FIELDS,
])


@dataclass(frozen=True)
class SourceFiles:
    """Resolved paths of the ratings and (optional) movies files."""

    ratings: str
    movies: Optional[str]


def resolve_files(source: SourceConfig) -> SourceFiles:
    """Apply the download (if configured) and check that local files exist."""
    ratings, movies = source.ratings, source.movies
    if source.download:
        fetched = download.fetch(source.format, cache_dir=source.cache_dir, url=source.url,
                                 md5=source.md5)
        ratings = ratings or fetched.ratings
        movies = movies or fetched.movies
    assert ratings is not None  # guaranteed by config validation
    checked = []
    for label, path in (("source.ratings", ratings), ("source.movies", movies)):
        if path is not None and source.format != "bigquery" and _is_local(path):
            local = os.path.abspath(_local_path(path))
            if not os.path.isfile(local):
                raise InputError(f"{label}: file not found: {path}")
            if not os.access(local, os.R_OK):
                raise InputError(f"{label}: file not readable: {path}")
            path = local
        checked.append(path)
    return SourceFiles(ratings=checked[0], movies=checked[1])


TableReader = Callable[[str], DataFrame]


def read_ratings(spark: SparkSession, source: SourceConfig, path: str,
                 table_reader: Optional[TableReader] = None) -> DataFrame:
    """Parse a ratings file (or table) into PARSED_RATINGS_SCHEMA rows (good and bad).

    ``table_reader`` turns a table reference into a DataFrame for table sources (BigQuery).
    """
    cols = source.rating_columns
    columns = (cols.user, cols.item, cols.rating, cols.timestamp)
    if source.format in ("parquet", "bigquery"):
        table = _table(spark, source, path, table_reader)
        return _parse_table(spark, table, path, columns, formats._mapped_rating,
                            PARSED_RATINGS_SCHEMA)
    lines = _text_lines(spark, path)
    header = _header(lines, source, path) if source.format == "csv" else ()
    parser = _parser_or_fail(formats.ratings_parser, source, header, columns, path)
    return _parse(spark, lines, parser, PARSED_RATINGS_SCHEMA, has_header=bool(parser.header))


def read_movies(spark: SparkSession, source: SourceConfig, path: str,
                table_reader: Optional[TableReader] = None) -> DataFrame:
    """Parse a movies file (or table) into PARSED_MOVIES_SCHEMA rows (good and bad)."""
    cols = source.movie_columns
    columns = (cols.movie_id, cols.title, cols.genre)
    if source.format in ("parquet", "bigquery"):
        table = _table(spark, source, path, table_reader)
        return _parse_table(spark, table, path, columns, formats._mapped_movie,
                            PARSED_MOVIES_SCHEMA)
    encoding = source.encoding or formats.MOVIES_ENCODING[source.format]
    lines = _small_text_lines(spark, path, encoding)
    header = _header(lines, source, path) if source.format == "csv" else ()
    parser = _parser_or_fail(formats.movies_parser, source, header, columns, path)
    return _parse(spark, lines, parser, PARSED_MOVIES_SCHEMA, has_header=bool(parser.header))


# --- lines -------------------------------------------------------------------------------------

def _text_lines(spark: SparkSession, path: str):
    """(line, 0-based index) pairs of a UTF-8/ASCII text file, read in parallel.

    Hadoop's line reader ends lines at LF, CRLF or CR. Bytes that are not UTF-8 arrive as
    U+FFFD and are rejected by ``_parse``.
    """
    return spark.sparkContext.textFile(path).zipWithIndex()


def _small_text_lines(spark: SparkSession, path: str, encoding: str):
    """(line, 0-based index) pairs of a small file in any encoding (movies files).

    The file is read whole as bytes so that Latin-1 survives; undecodable lines are kept as
    ``(None, index, raw)`` markers and rejected by ``_parse``.
    """
    content = (spark.read.format("binaryFile").load(path).select("content").head())[0]
    return spark.sparkContext.parallelize(
        list(_decode_lines(bytes(content), encoding)), numSlices=1)


def _decode_lines(content: bytes, encoding: str) -> Iterator[Tuple[object, int]]:
    """Split bytes into lines at LF, CRLF or CR and decode each one."""
    text_lines = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if text_lines and text_lines[-1] == b"":
        text_lines.pop()  # a final line terminator does not start another line
    for index, raw in enumerate(text_lines):
        try:
            yield raw.decode(encoding), index
        except UnicodeDecodeError:
            yield _Undecodable(raw.decode(encoding, errors="backslashreplace"), encoding), index


@dataclass(frozen=True)
class _Undecodable:
    text: str
    encoding: str


def _header(lines, source: SourceConfig, path: str) -> Tuple[str, ...]:
    first = lines.take(1)
    if not first or isinstance(first[0][0], _Undecodable):
        raise InputError(f"{path}: line 1: expected a header line naming the columns")
    line = _strip_bom(first[0][0])
    try:
        return tuple(formats._split_csv(source.delimiter)(line))
    except formats.BadRow as exc:
        raise InputError(f"{path}: line 1: {exc}") from None


def _parser_or_fail(factory, source: SourceConfig, header, columns, path: str):
    try:
        return factory(source.format, delimiter=source.delimiter, header=header, columns=columns)
    except formats.BadRow as exc:
        raise InputError(f"{path}: line 1: {exc}") from None


def _strip_bom(line: str) -> str:
    return line[1:] if line.startswith("\ufeff") else line


def _parse(spark: SparkSession, lines, parser: formats.LineParser, schema: StructType,
           has_header: bool) -> DataFrame:
    width = len(schema.fields) - len(_META_FIELDS)
    empty = (None,) * width

    def parse_line(pair) -> Optional[tuple]:
        line, index = pair
        number = index + 1
        if isinstance(line, _Undecodable):
            return empty + (number, line.text, f"undecodable bytes (not {line.encoding})")
        if index == 0:
            line = _strip_bom(line)
            if has_header and parser.is_header(line):
                return None
        if "\ufffd" in line:
            return empty + (number, line, "undecodable bytes (not UTF-8)")
        try:
            # Good rows keep their text too: a duplicate is only found later, by ingest.
            return parser.parse(line) + (number, line, None)
        except formats.BadRow as exc:
            return empty + (number, line, str(exc))

    rows = lines.map(parse_line).filter(lambda row: row is not None)
    return spark.createDataFrame(rows, schema)


def _table(spark: SparkSession, source: SourceConfig, path: str,
           table_reader: Optional[TableReader]) -> DataFrame:
    if source.format == "parquet":
        return spark.read.parquet(path)
    assert table_reader is not None, "a BigQuery source needs a table reader"
    return table_reader(path)


def _parse_table(spark: SparkSession, table: DataFrame, path: str,
                 columns: Sequence[Optional[str]],
                 convert: Callable[[Sequence[Optional[str]]], tuple],
                 schema: StructType) -> DataFrame:
    """Validate a typed table's rows with the same rules as text lines; the line number is the
    row's position as read (1-based) and ``raw`` the row's values as JSON."""
    missing = [c for c in columns if c is not None and c not in table.columns]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} (columns: {', '.join(table.columns)})")
    picked = table.select([F.col(c).cast("string") if c else F.lit(None).cast("string")
                           for c in columns])
    width = len(schema.fields) - len(_META_FIELDS)
    names = [c or "" for c in columns]

    def parse_row(pair) -> tuple:
        row, index = pair
        values = list(row)
        # Every mapped column but the last (timestamp, genre) is required.
        raw = json.dumps(dict(zip(names, values)))
        if any(v is None for v, c in zip(values[:-1], columns[:-1]) if c is not None):
            return (None,) * width + (index + 1, raw, "NULL in a required column")
        try:
            return convert(values) + (index + 1, raw, None)
        except formats.BadRow as exc:
            return (None,) * width + (index + 1, raw, str(exc))

    return spark.createDataFrame(picked.rdd.zipWithIndex().map(parse_row), schema)


# --- paths -------------------------------------------------------------------------------------

def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local_path(path: str) -> str:
    return os.path.expanduser(path[len("file://"):] if path.startswith("file://") else path)
