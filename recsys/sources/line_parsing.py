"""Text lines through the line parsers of ``recsys.sources.formats``: decoding (bytes kept as
``_Undecodable`` when they are not text in the encoding), the header line that names a CSV
file's columns, and one line as a parsed row (values, or the reason it was rejected)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from recsys.schemas import _META_FIELDS
from recsys.sources import formats
from recsys.config import SourceConfig
from recsys.errors import InputError
from recsys.sources.line_numbers import display_file_name
from recsys.sources.source_files import hadoop_name


def file_contents(spark: SparkSession, files: Sequence[str]) -> List[Tuple[str, bytes]]:
    """(file, bytes) of small files (movies), in the order of ``files``.

    Files are read whole as bytes so that Latin-1 survives; undecodable lines are kept as
    ``_Undecodable`` markers and rejected by ``parse_lines``.
    """
    rows = (spark.read.format("binaryFile").load([hadoop_name(f) for f in files])
            .select("path", "content").collect())
    by_file = {display_file_name(row.path, escaped=False): bytes(row.content) for row in rows}
    return [(f, by_file.get(f, b"")) for f in files]


def decode_lines(content: bytes, encoding: str) -> Iterator[Tuple[object, int]]:
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


def shared_header(firsts: Sequence[Tuple[str, list]], source: SourceConfig) -> Tuple[str, ...]:
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


def parser_or_fail(factory, source: SourceConfig, header, columns, path: str):
    """The line parser ``factory`` gives for the source (``formats.ratings_parser`` or
    ``movies_parser``); a header it cannot use is an ``InputError`` on line 1 of ``path``."""
    try:
        return factory(source.format, delimiter=source.delimiter, header=header, columns=columns)
    except formats.BadRow as exc:
        raise InputError(f"{path}: line 1: {exc}") from None


def _strip_bom(line: str) -> str:
    return line[1:] if line.startswith("\ufeff") else line


def parse_line(parser: formats.LineParser, width: int, line, index: int,
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


def parse_lines(spark: SparkSession, lines, parser: formats.LineParser, schema: StructType
                ) -> DataFrame:
    """Rows of ``lines``, an RDD of (line, 0-based index, file)."""
    width = len(schema.fields) - len(_META_FIELDS)
    rows = (lines.map(lambda triple: parse_line(parser, width, *triple))
                 .filter(lambda row: row is not None))
    return spark.createDataFrame(rows, schema)


def rows_batch(rows: List[tuple], schema: pa.Schema) -> pa.RecordBatch:
    """Python row tuples as one Arrow batch of ``schema``."""
    return pa.RecordBatch.from_arrays(
        [pa.array([r[k] for r in rows], field.type) for k, field in enumerate(schema)],
        schema=schema)
