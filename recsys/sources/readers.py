"""Readers: the only code that reads source files. Each returns DataFrames; nothing is validated
beyond what a single line can tell (scale checks and duplicates belong to ``recsys.sources.ingest``).

A parsed table has the output columns plus ``split_start``, ``split_line``, ``raw`` and ``reason``
(NULL for a good row), so that every bad line keeps its text, file and place for ``*_rejected``:
its line number in the file is ``split_line`` plus ``line_offsets`` of its split (``number_lines``).

Ratings text files (millions of lines) are read once and parsed in the tasks through Arrow: the
plain lines column-wise by pyarrow, every other line by the line parsers of ``recsys.sources.formats``
(the one home of the parsing rules). A task knows a line's place in its split, not in its file
(that needs the line counts of the file's earlier splits), so numbering waits until every split
has been read, instead of a first pass that counts lines. Movies files are small and parsed in
Python, each file whole (``split_start`` 0).
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from recsys import paths
from recsys.schemas import _META_FIELDS, PARSED_MOVIES_SCHEMA, PARSED_RATINGS_SCHEMA
from recsys.sources import download, formats
from recsys.config import SourceConfig
from recsys.errors import InputError
from recsys.tasks import python_task


@dataclass(frozen=True)
class SourceFiles:
    """Resolved ratings and (optional) movies files: every file of a folder, glob or list, in
    the order read (the list's order; each folder's or glob's files sorted by path), and the
    source as configured (for messages). For a BigQuery source, the one table id or query."""

    ratings: List[str]
    movies: Optional[List[str]]
    ratings_label: str = ""
    movies_label: Optional[str] = None


def resolve_files(source: SourceConfig, spark: Optional[SparkSession] = None) -> SourceFiles:
    """Apply the download (if configured) and expand each of ``source.ratings`` and
    ``source.movies`` (a file, a folder, a glob, or a list of those) into its files.

    Local paths are listed here; other Hadoop URIs (``gs://``, ``hdfs://``) through Hadoop's
    FileSystem in the JVM (``spark`` needed). Hidden files (``_SUCCESS``, ``.crc``: names
    starting with ``_`` or ``.``) are skipped, as Spark does. Each entry must give a file.
    """
    ratings, movies = source.ratings, source.movies
    if source.download:
        fetched = download.fetch(source.format, cache_dir=source.cache_dir, url=source.url,
                                 md5=source.md5)
        ratings = _inside(fetched.folder, ratings) or fetched.ratings
        movies = _inside(fetched.folder, movies) or fetched.movies
        if ratings is None:
            raise InputError(f"{source.url}: the archive's layout is not known for format "
                             f"{source.format!r}: set source.ratings (a path inside it)")
    assert ratings is not None  # guaranteed by config validation
    resolved = []
    for label, spec in (("source.ratings", ratings), ("source.movies", movies)):
        if spec is None:
            resolved.append((None, None))
        elif source.format == "bigquery":
            resolved.append(([spec] if isinstance(spec, str) else list(spec), _label(spec)))
        else:
            files: List[str] = []
            for entry in entries(spec):
                files += [f for f in _expand(label, entry, spark) if f not in files]
            resolved.append((files, _label(spec)))
    (r_files, r_label), (m_files, m_label) = resolved
    return SourceFiles(ratings=r_files, movies=m_files, ratings_label=r_label,
                       movies_label=m_label)


def entries(spec: Union[str, Sequence[str]]) -> List[str]:
    """The entries of a ``source.ratings``-like value: one path, or each of a list."""
    return [spec] if isinstance(spec, str) else list(spec)


def _label(spec: Union[str, Sequence[str]]) -> str:
    items = entries(spec)
    if len(items) == 1 and paths.is_local(items[0]) and not _has_glob(items[0]) \
            and os.path.isfile(paths.local_path(items[0])):
        return os.path.abspath(paths.local_path(items[0]))
    return ", ".join(items)


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _expand(label: str, entry: str, spark: Optional[SparkSession]) -> List[str]:
    if not paths.is_local(entry):
        return _expand_hadoop(label, entry, spark)
    local = os.path.abspath(paths.local_path(entry))
    if _has_glob(entry):
        matches = sorted(glob.glob(local, recursive=True))
        files = [m for m in matches if os.path.isfile(m) and not _hidden(os.path.basename(m))]
        folders = [m for m in matches if os.path.isdir(m)]
        for folder in folders:
            files += _folder_files(folder)
        if not files:
            raise InputError(f"{label}: no file matches {entry}")
        files = sorted(dict.fromkeys(files))
    elif os.path.isdir(local):
        files = _folder_files(local)
        if not files:
            raise InputError(f"{label}: folder has no data files: {entry}")
    elif os.path.isfile(local):
        files = [local]
    else:
        raise InputError(f"{label}: file not found: {entry}")
    for path in files:
        if not os.access(path, os.R_OK):
            raise InputError(f"{label}: file not readable: {path}")
    return files


def _folder_files(folder: str) -> List[str]:
    """Every non-hidden file below ``folder`` (hidden folders skipped), sorted by path."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        found += [os.path.join(root, n) for n in names if not _hidden(n)]
    return sorted(found)


def _expand_hadoop(label: str, entry: str, spark: Optional[SparkSession]) -> List[str]:
    """Files of a Hadoop URI (a file, folder or glob), listed by Hadoop's FileSystem."""
    if spark is None:
        return [entry]  # listed when read; only config-time checks get here without Spark
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(entry)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statuses = fs.globStatus(hadoop_path)
    files: List[str] = []
    for status in (statuses or []):
        if status.isDirectory():
            listing = fs.listFiles(status.getPath(), True)
            while listing.hasNext():
                child = listing.next().getPath()
                relative = child.toString()[len(status.getPath().toString()):].split("/")
                if not any(_hidden(part) for part in relative if part):
                    files.append(child.toString())
        elif not _hidden(status.getPath().getName()):
            files.append(status.getPath().toString())
    if not files:
        raise InputError(f"{label}: {'no file matches' if _has_glob(entry) else 'file not found:'}"
                         f" {entry}")
    return sorted(dict.fromkeys(files))


def _inside(folder: Optional[str], path: Optional[str]) -> Optional[str]:
    """A relative ``path`` found inside the extracted archive ``folder``, else ``path``."""
    if path is None or folder is None or os.path.isabs(path) or "://" in path:
        return path
    candidate = os.path.join(folder, path)
    return candidate if os.path.exists(candidate) else path


TableReader = Callable[[str], DataFrame]


def read_ratings(spark: SparkSession, source: SourceConfig, path: Union[str, Sequence[str]],
                 table_reader: Optional[TableReader] = None) -> DataFrame:
    """Parse ratings files (or a table) into PARSED_RATINGS_SCHEMA rows (good and bad).

    ``path``: one file or a list of files (``resolve_files``); every file is numbered from line
    1 and recognises its own header. ``table_reader`` reads table sources (BigQuery). Text
    files are parsed once, in the tasks (see "ratings text" below).
    """
    files = entries(path)
    cols = source.rating_columns
    columns = (cols.user, cols.item, cols.rating, cols.timestamp)
    if source.format in ("parquet", "bigquery"):
        return _parse_table(spark, source, files, table_reader, columns, formats._mapped_rating,
                            PARSED_RATINGS_SCHEMA)
    header = ()
    if source.format == "csv":  # the header names the columns: each file's first line
        header = _shared_header(
            [(f, spark.sparkContext.textFile(_hadoop_name(f)).take(1)) for f in files], source)
    parser = _parser_or_fail(formats.ratings_parser, source, header, columns, files[0])
    return _parse_ratings_text(spark, files, parser, _layout(source, parser, columns))


def read_movies(spark: SparkSession, source: SourceConfig, path: Union[str, Sequence[str]],
                table_reader: Optional[TableReader] = None) -> DataFrame:
    """Parse movies files (or a table) into PARSED_MOVIES_SCHEMA rows (good and bad)."""
    files = entries(path)
    cols = source.movie_columns
    columns = (cols.movie_id, cols.title, cols.genre)
    if source.format in ("parquet", "bigquery"):
        return _parse_table(spark, source, files, table_reader, columns, formats._mapped_movie,
                            PARSED_MOVIES_SCHEMA)
    encoding = source.encoding or formats.MOVIES_ENCODING[source.format]
    contents = _file_contents(spark, files)
    header = ()
    if source.format == "csv":
        header = _shared_header([(f, [line for line, _ in _decode_lines(data, encoding)][:1])
                                 for f, data in contents], source)
    parser = _parser_or_fail(formats.movies_parser, source, header, columns, files[0])
    lines = [(line, index, f) for f, data in contents for line, index in _decode_lines(data, encoding)]
    return _parse(spark, spark.sparkContext.parallelize(lines, numSlices=1), parser,
                  PARSED_MOVIES_SCHEMA)


# --- lines -------------------------------------------------------------------------------------

def _hadoop_name(path: str) -> str:
    """A resolved file as Spark is given it (local files as they are)."""
    return path


def display_file_column(name: str) -> Column:
    """The file a row came from, as ``resolve_files`` names it, from column ``name`` holding
    Spark's ``_metadata.file_path`` (or binaryFile's ``path``): a URI with %-escapes
    (``file:/data/my%20ratings.csv``) becomes the plain name (``/data/my ratings.csv``; other
    schemes keep theirs). ``+`` is literal in those URIs and would decode to a space, so it is
    escaped first. (url_decode through SQL: its Python wrapper is newer than Spark 3.5.)"""
    return F.regexp_replace(
        F.expr(f"url_decode(regexp_replace(`{name}`, '[+]', '%2B'))"), "^file:(//(?=/))?", "")


def has_header_lines(source: SourceConfig) -> bool:
    """Whether the source is text files, whose line 1 gives no row when it is a header."""
    return source.format not in ("parquet", "bigquery")


def line_offsets(split_lines: Iterable[Tuple[str, int, int]], *,
                 header_lines: bool) -> Dict[Tuple[str, int], int]:
    """(file, split start) -> the lines of the file before that split, from the (file, split
    start, last ``split_line``) of every split that gave a row. A split without rows holds no
    line, except in text files (``header_lines``), where line 1 gives no row when it is the
    header: a text file whose first split (start 0) gave no row has one line before the others.

    >>> splits = [("a", 0, 3), ("a", 100, 5), ("b", 0, 2), ("a", 250, 1)]
    >>> sorted(line_offsets(splits, header_lines=True).items())
    [(('a', 0), 0), (('a', 100), 3), (('a', 250), 8), (('b', 0), 0)]
    >>> line_offsets([("a", 40, 2)], header_lines=True), line_offsets([("a", 1, 2)], header_lines=False)
    ({('a', 40): 1}, {('a', 1): 0})
    """
    by_file: Dict[str, List[Tuple[int, int]]] = {}
    for file, start, last in split_lines:
        by_file.setdefault(file, []).append((start, last))
    offsets = {}
    for file, splits in by_file.items():
        before = 1 if header_lines and min(start for start, _ in splits) > 0 else 0
        for start, last in sorted(splits):
            offsets[(file, start)] = before
            before += last
    return offsets


def line_offset(offsets: Dict[Tuple[str, int], int], file: str = "source_file",
                start: str = "split_start") -> Column:
    """The lines before a row's split (``line_offsets``), looked up by columns ``file`` and
    ``start`` in a map literal: no join, and no job to build a table of the offsets."""
    if not offsets:
        return F.lit(0).cast("long")
    pairs = []
    for (name, split_start), before in sorted(offsets.items()):
        pairs += [F.lit(f"{split_start}:{name}"), F.lit(before).cast("long")]
    key = F.concat(F.col(start).cast("string"), F.lit(":"), F.col(file))
    return F.coalesce(F.element_at(F.create_map(*pairs), key), F.lit(0).cast("long"))


def with_line_numbers(rows: DataFrame, offsets: Dict[Tuple[str, int], int]) -> DataFrame:
    """Parsed ``rows`` with ``line_number`` (the line in its file) in place of ``split_start``
    and ``split_line``; ``offsets``: ``line_offsets`` of their splits."""
    line = (F.col("split_line") + line_offset(offsets)).alias("line_number")
    return rows.select(*[line if c == "split_start" else F.col(c) for c in rows.columns
                         if c != "split_line"])


def number_lines(parsed: DataFrame, *, header_lines: bool) -> DataFrame:
    """Parsed rows with their ``line_number``: one aggregate of the split line counts, then a
    join (cache ``parsed`` first to read the source once). ``header_lines``: as for
    ``line_offsets``."""
    counts = (parsed.groupBy("source_file", "split_start")
              .agg(F.max("split_line").alias("lines")).collect())
    offsets = line_offsets(((r.source_file, r.split_start, r.lines) for r in counts),
                           header_lines=header_lines)
    return with_line_numbers(parsed, offsets)


def _file_contents(spark: SparkSession, files: Sequence[str]) -> List[Tuple[str, bytes]]:
    """(file, bytes) of small files (movies), in the order of ``files``.

    Files are read whole as bytes so that Latin-1 survives; undecodable lines are kept as
    ``_Undecodable`` markers and rejected by ``_parse``.
    """
    rows = (spark.read.format("binaryFile").load([_hadoop_name(f) for f in files])
            .select(display_file_column("path").alias("file"), "content").collect())
    by_file = {row.file: bytes(row.content) for row in rows}
    return [(f, by_file.get(f, b"")) for f in files]


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


def _header(first: list, source: SourceConfig, path: str) -> Tuple[str, ...]:
    """The column names in ``first``: the file's first line in a list (empty for an empty file)."""
    if not first or isinstance(first[0], _Undecodable):
        raise InputError(f"{path}: line 1: expected a header line naming the columns")
    line = _strip_bom(first[0])
    try:
        return tuple(formats._split_csv(source.delimiter)(line))
    except formats.BadRow as exc:
        raise InputError(f"{path}: line 1: {exc}") from None


def _shared_header(firsts: Sequence[Tuple[str, list]], source: SourceConfig) -> Tuple[str, ...]:
    """The header of every file (each file's first line in a list): shards of one table must
    all start with the same header, which is then recognised (and skipped) in each of them."""
    first_file, first = firsts[0]
    header = _header(first, source, first_file)
    for path, line in firsts[1:]:
        other = _header(line, source, path)
        if tuple(h.strip() for h in other) != tuple(h.strip() for h in header):
            raise InputError(f"{path}: line 1: header {','.join(other)!r} differs from the "
                             f"header of {first_file} ({','.join(header)!r})")
    return header


def _parser_or_fail(factory, source: SourceConfig, header, columns, path: str):
    try:
        return factory(source.format, delimiter=source.delimiter, header=header, columns=columns)
    except formats.BadRow as exc:
        raise InputError(f"{path}: line 1: {exc}") from None


def _strip_bom(line: str) -> str:
    return line[1:] if line.startswith("\ufeff") else line


def _parse_line(parser: formats.LineParser, width: int, line, index: int,
                source_file: Optional[str] = None, split_start: int = 0) -> Optional[tuple]:
    """One line (0-based ``index`` in the split starting at byte ``split_start``) as a row of
    ``width`` values plus split start, split line, text, reason and file; None for the header
    line at the top of the file."""
    where = (split_start, index + 1)
    empty = (None,) * width
    if isinstance(line, _Undecodable):
        return empty + where + (line.text, f"undecodable bytes (not {line.encoding})",
                                source_file)
    if index == 0 and split_start == 0:
        line = _strip_bom(line)
        if parser.header and parser.is_header(line):
            return None
    if "\ufffd" in line:
        return empty + where + (line, "undecodable bytes (not UTF-8)", source_file)
    try:
        # Good rows keep their text too: a duplicate is only found later, by ingest.
        return parser.parse(line) + where + (line, None, source_file)
    except formats.BadRow as exc:
        return empty + where + (line, str(exc), source_file)


def _parse(spark: SparkSession, lines, parser: formats.LineParser, schema: StructType
           ) -> DataFrame:
    """Rows of ``lines``, an RDD of (line, 0-based index, file)."""
    width = len(schema.fields) - len(_META_FIELDS)
    rows = (lines.map(lambda triple: _parse_line(parser, width, *triple))
                 .filter(lambda row: row is not None))
    return spark.createDataFrame(rows, schema)


# --- ratings text, parsed once through Arrow --------------------------------------------------
# Each task parses its lines in Python, batch by batch. Lines in the format's plain shape
# ("simple": ASCII digits where numbers go, no quotes, no spaces around them) are split and cast
# column-wise by pyarrow, which gives them the values formats' parsers give (decimal strings to
# INT64, correctly rounded to DOUBLE). Every other line (bad ones, quotes, ISO timestamps, the
# header, anything not ASCII) goes through formats' line parser itself, so the parsing rules and
# the reject reasons live in formats alone.

# Characters a simple line may hold outside its number fields: tab and printable ASCII but
# quotes and backslash (the csv module treats those specially).
_PLAIN_CHARS = "\t" + "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "\"'\\")
_RATINGS_SEPARATORS = {"ml-1m": "::", "ml-100k": "\t", "ml-latest": ","}  # as in formats.py
# Fields of a simple line, good as they stand: unsigned ids that fit INT64, an unsigned decimal
# rating (finite) and an unsigned timestamp of at most 11 digits (within the TIMESTAMP range).
_SIMPLE_FIELDS = (r"\d{1,18}", r"\d{1,18}", r"\d{1,15}(\.\d{1,15})?", r"\d{1,11}")
_SIMPLE_TYPES = (pa.int64(), pa.int64(), pa.float64(), pa.int64())


@dataclass(frozen=True)
class _Layout:
    """Where a ratings format keeps its fields (see ``formats.ratings_parser``)."""

    separator: str
    num_fields: int
    header: Optional[Tuple[str, ...]]
    positions: Tuple[Optional[int], ...]  # of the user, item, rating and timestamp fields
    timestamp_required: bool

    def simple_line(self) -> Optional[str]:
        """A regex (RE2 and Python syntax) matching only lines that parse without a check
        failing, or None when no such shortcut is safe for this layout."""
        mapped = [(p, f) for p, f in zip(self.positions, _SIMPLE_FIELDS) if p is not None]
        if (len({p for p, _ in mapped}) < len(mapped) or not self.plain_separator()
                or set(self.separator) & set("0123456789.")):
            return None  # one column in two roles, or a separator that may be part of a number
        other = sorted(set(_PLAIN_CHARS) - set(self.separator))
        fields = ["[" + "".join(_re_char(c) for c in other) + "]*"] * self.num_fields
        for p, pattern in mapped:
            fields[p] = pattern
        if not self.timestamp_required and self.positions[3] is not None:
            fields[self.positions[3]] = f"({fields[self.positions[3]]})?"
        if self.header and any(re.fullmatch(fields[p], self.header[p]) for p, _ in mapped):
            return None  # a simple line could be the header line
        return "^" + "".join(_re_char(c) for c in self.separator).join(fields) + "$"

    def plain_separator(self) -> bool:
        """Whether the separator is plain text (else every line is left to Python)."""
        return all(c in _PLAIN_CHARS for c in self.separator)


def _layout(source: SourceConfig, parser: formats.LineParser,
            columns: Sequence[Optional[str]]) -> _Layout:
    if source.format == "csv":
        names = parser.header or ()
        return _Layout(source.delimiter, parser.num_fields, parser.header,
                       tuple(None if c is None else names.index(c) for c in columns), False)
    return _Layout(_RATINGS_SEPARATORS[source.format], parser.num_fields, parser.header,
                   (0, 1, 2, 3), True)


def _re_char(c: str) -> str:
    """One ASCII character as a regex escape that RE2 and Python read the same way."""
    return f"\\x{ord(c):02X}"


def _parse_ratings_text(spark: SparkSession, paths: Sequence[str], parser: formats.LineParser,
                        layout: _Layout) -> DataFrame:
    """PARSED_RATINGS_SCHEMA rows of text files, parsed in one pass over the text (see above).

    A task reads each of its splits whole and in order, so it numbers a split's lines itself
    (``split_line``); ``number_lines`` turns that into the line in the file.
    """
    lines = spark.read.text([_hadoop_name(p) for p in entries(paths)]).select(
        "value", F.col("_metadata.file_path").alias("_path"),
        F.col("_metadata.file_block_start").alias("_start"))
    lines = lines.select("value", display_file_column("_path").alias("_file"), "_start")
    return lines.mapInArrow(_arrow_ratings_parser(parser, layout), PARSED_RATINGS_SCHEMA)


def _arrow_ratings_parser(parser: formats.LineParser, layout: _Layout):
    """The mapInArrow function: text batches (value, _file display name, _start) to
    PARSED_RATINGS_SCHEMA batches, the simple lines first, then the others."""
    pattern = layout.simple_line()
    width = len(PARSED_RATINGS_SCHEMA.fields) - len(_META_FIELDS)
    names = PARSED_RATINGS_SCHEMA.fieldNames()

    @python_task
    def parse(batches):
        seen: Dict[Tuple[str, int], int] = {}  # lines of each split read so far by this task
        for batch in batches:
            numbers = _split_line_numbers(batch, seen)
            files, starts = batch.column("_file"), batch.column("_start")
            # Lines are bytes here: Spark hands over what it read, not always valid UTF-8.
            raw = batch.column("value").cast(pa.binary())
            # A file's line 1 may be a header or start with a BOM: formats' parser decides.
            first_line = pc.and_(pc.equal(starts, 0), pa.array(numbers == 1))
            simple = (pc.and_not(pc.match_substring_regex(raw, pattern), first_line)
                      if pattern else _constant(False, len(raw)))
            mask = simple.to_numpy(zero_copy_only=False)
            yield _simple_batch(raw.filter(simple), starts.filter(simple), numbers[mask],
                                files.filter(simple), layout, names)
            other = pc.invert(simple)
            yield _python_batch(raw.filter(other), starts.filter(other), numbers[~mask],
                                files.filter(other), parser, width)

    return parse


def _split_line_numbers(batch: pa.RecordBatch, seen) -> np.ndarray:
    """Each line's 1-based number in its split, for a batch of lines in read order; ``seen``
    (updated) counts the lines of each split read before this batch."""
    file = batch.column("_file")
    start = batch.column("_start").to_numpy(zero_copy_only=False)
    n = len(start)
    numbers = np.empty(n, dtype=np.int64)
    opens = np.ones(n, dtype=bool)
    if n > 1:
        opens[1:] = (pc.not_equal(file.slice(1), file.slice(0, n - 1))
                     .to_numpy(zero_copy_only=False) | (start[1:] != start[:-1]))
    runs = np.flatnonzero(opens)
    for k, a in enumerate(runs):
        b = runs[k + 1] if k + 1 < len(runs) else n
        key = (file[a].as_py(), int(start[a]))
        before = seen.get(key, 0)
        numbers[a:b] = before + 1 + np.arange(b - a)
        seen[key] = before + (b - a)
    return numbers


def _constant(value: bool, n: int) -> pa.Array:
    return pa.array(np.full(n, value))


def _simple_batch(raw: pa.Array, starts: pa.Array, numbers: np.ndarray, files: pa.Array,
                  layout: _Layout, names) -> pa.RecordBatch:
    """Simple lines split and cast column-wise; their reason is NULL."""
    text = raw.cast(pa.string())  # simple lines are ASCII
    fields = pc.split_pattern(text, layout.separator)
    values = []
    for position, kind in zip(layout.positions, _SIMPLE_TYPES):
        if position is None:
            values.append(pa.nulls(len(text), kind))
            continue
        field = pc.list_element(fields, position)
        empty = pc.equal(pc.utf8_length(field), 0)  # only an optional timestamp can be empty
        values.append(pc.if_else(empty, pa.scalar(None, pa.string()), field).cast(kind))
    return pa.RecordBatch.from_arrays(
        values + [starts, pa.array(numbers, pa.int64()), text, pa.nulls(len(text), pa.string()),
                  files], names=names)


def _python_batch(raw: pa.Array, starts: pa.Array, numbers: np.ndarray, files: pa.Array,
                  parser: formats.LineParser, width: int) -> pa.RecordBatch:
    """Lines parsed one by one by ``formats`` (``_parse_line``): values or the reason; the
    header line at the top of a file is no row at all."""
    rows = []
    for line, start, number, file in zip(raw.to_pylist(), starts.to_pylist(), numbers.tolist(),
                                         files.to_pylist()):
        # Undecodable bytes become U+FFFD, which _parse_line rejects, as Java's decoder does.
        row = _parse_line(parser, width, line.decode("utf-8", errors="replace"), number - 1,
                          file, start)
        if row is not None:
            rows.append(row)
    return _rows_batch(rows, to_arrow_schema(PARSED_RATINGS_SCHEMA))


def _rows_batch(rows: List[tuple], schema: pa.Schema) -> pa.RecordBatch:
    """Python row tuples as one Arrow batch of ``schema``."""
    return pa.RecordBatch.from_arrays(
        [pa.array([r[k] for r in rows], field.type) for k, field in enumerate(schema)],
        schema=schema)


def _parse_table(spark: SparkSession, source: SourceConfig, files: Sequence[str],
                 table_reader: Optional[TableReader], columns: Sequence[Optional[str]],
                 convert: Callable[[Sequence[Optional[str]]], tuple],
                 schema: StructType) -> DataFrame:
    """Validate a typed table's rows with the same rules as text lines, in one pass through
    Arrow; ``raw`` is the row's values as JSON. Parquet files: the line number is the row's
    position in its file (1-based) and ``source_file`` the file; a BigQuery table or query: the
    position as read (each Spark partition, a read stream, is a split), and the reference."""
    if source.format == "parquet":
        table = spark.read.parquet(*[_hadoop_name(f) for f in files])
        label = ", ".join(files)
    else:
        assert table_reader is not None, "a BigQuery source needs a table reader"
        (label,) = files
        table = table_reader(label)
    missing = [c for c in columns if c is not None and c not in table.columns]
    if missing:
        raise InputError(f"{label}: no column {missing[0]!r} (columns: {', '.join(table.columns)})")
    picked = [(F.col(c).cast("string") if c else F.lit(None).cast("string")).alias(f"_c{k}")
              for k, c in enumerate(columns)]
    if source.format == "parquet":
        placed = table.select(*picked, F.col("_metadata.file_path").alias("_path"),
                              F.col("_metadata.file_block_start").alias("_start"))
        placed = placed.select(*[f"_c{k}" for k in range(len(columns))],
                               display_file_column("_path").alias("_file"), "_start")
    else:
        placed = table.select(*picked, F.lit(label).alias("_file"),
                              F.spark_partition_id().cast("long").alias("_start"))
    return placed.mapInArrow(_arrow_table_parser(columns, convert, schema), schema)


def _arrow_table_parser(columns: Sequence[Optional[str]],
                        convert: Callable[[Sequence[Optional[str]]], tuple], schema: StructType):
    """The mapInArrow function: batches of a table's mapped columns as strings (``_c0``...),
    ``_file`` and ``_start``, to ``schema`` rows numbered within their split."""
    width = len(schema.fields) - len(_META_FIELDS)
    names = [c or "" for c in columns]
    arrow_schema = to_arrow_schema(schema)

    def parse_row(values: list, start: int, number: int, file: str) -> tuple:
        # Every mapped column but the last (timestamp, genre) is required.
        raw = json.dumps(dict(zip(names, values)))
        if any(v is None for v, c in zip(values[:-1], columns[:-1]) if c is not None):
            return (None,) * width + (start, number, raw, "NULL in a required column", file)
        try:
            return convert(values) + (start, number, raw, None, file)
        except formats.BadRow as exc:
            return (None,) * width + (start, number, raw, str(exc), file)

    @python_task
    def parse(batches):
        seen: Dict[Tuple[str, int], int] = {}  # rows of each split read so far by this task
        for batch in batches:
            numbers = _split_line_numbers(batch, seen).tolist()
            values = zip(*[batch.column(f"_c{k}").to_pylist() for k in range(len(columns))])
            yield _rows_batch(
                [parse_row(list(v), start, number, file) for v, start, number, file in zip(
                    values, batch.column("_start").to_pylist(), numbers,
                    batch.column("_file").to_pylist())], arrow_schema)

    return parse
