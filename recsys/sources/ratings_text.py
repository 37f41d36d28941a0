"""Ratings text files (millions of lines), read once and parsed in the tasks through Arrow.

Each task parses its lines in Python, batch by batch. Lines in the format's plain shape
("simple": ASCII digits where numbers go, no quotes, no spaces around them) are split and cast
column-wise by pyarrow, which gives them the values formats' parsers give (decimal strings to
INT64, correctly rounded to DOUBLE). Every other line (bad ones, quotes, ISO timestamps, the
header, anything not ASCII) goes through formats' line parser itself, so the parsing rules and
the reject reasons live in formats alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from recsys.schemas import _META_FIELDS, PARSED_RATINGS_SCHEMA
from recsys.sources import formats
from recsys.config import SourceConfig
from recsys.sources.line_numbers import display_file_names, split_line_numbers
from recsys.sources.line_parsing import parse_line, rows_batch
from recsys.sources.source_files import entries, hadoop_name
from recsys.tasks import python_task


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


def ratings_layout(source: SourceConfig, parser: formats.LineParser,
                   columns: Sequence[Optional[str]]) -> _Layout:
    """Where the source's ratings lines keep their fields: a CSV header's columns, or the
    MovieLens format's fixed four."""
    if source.format == "csv":
        names = parser.header or ()
        return _Layout(source.delimiter, parser.num_fields, parser.header,
                       tuple(None if c is None else names.index(c) for c in columns), False)
    return _Layout(_RATINGS_SEPARATORS[source.format], parser.num_fields, parser.header,
                   (0, 1, 2, 3), True)


def _re_char(c: str) -> str:
    """One ASCII character as a regex escape that RE2 and Python read the same way."""
    return f"\\x{ord(c):02X}"


def parse_ratings_text(spark: SparkSession, paths: Sequence[str], parser: formats.LineParser,
                        layout: _Layout) -> DataFrame:
    """PARSED_RATINGS_SCHEMA rows of text files, parsed in one pass over the text (see above).

    A task reads each of its splits whole and in order, so it numbers a split's lines itself
    (``split_line``); ``number_lines`` turns that into the line in the file.
    """
    lines = spark.read.text([hadoop_name(p) for p in entries(paths)]).select(
        "value", F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_start"))
    return lines.mapInArrow(_arrow_ratings_parser(parser, layout), PARSED_RATINGS_SCHEMA)


def _arrow_ratings_parser(parser: formats.LineParser, layout: _Layout):
    """The mapInArrow function: text batches (value, _file URI, _start) to
    PARSED_RATINGS_SCHEMA batches, the simple lines first, then the others."""
    pattern = layout.simple_line()
    width = len(PARSED_RATINGS_SCHEMA.fields) - len(_META_FIELDS)
    names = PARSED_RATINGS_SCHEMA.fieldNames()

    @python_task
    def parse(batches):
        seen: Dict[Tuple[str, int], int] = {}  # lines of each split read so far by this task
        for batch in batches:
            numbers = split_line_numbers(batch, seen)
            files, starts = display_file_names(batch.column("_file")), batch.column("_start")
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
    """Lines parsed one by one by ``formats`` (``parse_line``): values or the reason; the
    header line at the top of a file is no row at all."""
    rows = []
    for line, start, number, file in zip(raw.to_pylist(), starts.to_pylist(), numbers.tolist(),
                                         files.to_pylist()):
        # Undecodable bytes become U+FFFD, which parse_line rejects, as Java's decoder does.
        row = parse_line(parser, width, line.decode("utf-8", errors="replace"), number - 1,
                         file, start)
        if row is not None:
            rows.append(row)
    return rows_batch(rows, to_arrow_schema(PARSED_RATINGS_SCHEMA))
