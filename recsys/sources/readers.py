"""Readers: the only code that reads source files. Each returns DataFrames; nothing is validated
beyond what a single line can tell (scale checks and duplicates belong to ``recsys.sources.ingest``).
``read_ratings`` and ``read_movies`` pick the reader of the source's kind; this module also hands
on the names of the modules below, which ingest and the tests use as ``readers.<name>``.

A parsed table has the output columns plus ``split_start``, ``split_line``, ``raw`` and ``reason``
(NULL for a good row), so that every bad line keeps its text, file and place for ``*_rejected``:
its line number in the file is ``split_line`` plus ``line_offsets`` of its split (``number_lines``).

Ratings text files (millions of lines) are read once and parsed in the tasks through Arrow: the
plain lines column-wise by pyarrow, every other line by the line parsers of ``recsys.sources.formats``
(the one home of the parsing rules). A task knows a line's place in its split, not in its file
(that needs the line counts of the file's earlier splits), so numbering waits until every split
has been read, instead of a first pass that counts lines. Movies files are small and parsed in
Python, each file whole (``split_start`` 0).

- ``source_files``: the files a ``source.ratings`` / ``source.movies`` value names;
- ``ratings_text``: ratings text files through Arrow; ``line_parsing``: lines through the line
  parsers of ``formats`` (movies files, and the ratings lines pyarrow does not split);
- ``source_tables``: Parquet files and BigQuery tables; ``line_numbers``: a row's line in its file.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from pyspark.sql import DataFrame, SparkSession

from recsys.schemas import PARSED_MOVIES_SCHEMA, PARSED_RATINGS_SCHEMA
from recsys.sources import formats
from recsys.config import SourceConfig
from recsys.sources.line_numbers import (display_file_name, has_header_lines, line_offset,
                                         line_offsets, number_lines, with_line_numbers)
from recsys.sources.line_parsing import (decode_lines, file_contents, parse_lines,
                                         parser_or_fail, shared_header)
from recsys.sources.ratings_text import _Layout, parse_ratings_text, ratings_layout
from recsys.sources.source_files import SourceFiles, entries, hadoop_name, resolve_files
from recsys.sources.source_tables import TableReader, parse_table

__all__ = [
    "SourceFiles", "TableReader", "_Layout", "display_file_name", "entries",
    "has_header_lines", "line_offset", "line_offsets", "number_lines", "read_movies",
    "read_ratings", "resolve_files", "with_line_numbers",
]


def read_ratings(spark: SparkSession, source: SourceConfig, path: Union[str, Sequence[str]],
                 table_reader: Optional[TableReader] = None) -> DataFrame:
    """Parse ratings files (or a table) into PARSED_RATINGS_SCHEMA rows (good and bad).

    ``path``: one file or a list of files (``resolve_files``); every file is numbered from line
    1 and recognises its own header. ``table_reader`` reads table sources (BigQuery). Text
    files are parsed once, in the tasks (``recsys.sources.ratings_text``).
    """
    files = entries(path)
    cols = source.rating_columns
    columns = (cols.user, cols.item, cols.rating, cols.timestamp)
    if source.format in ("parquet", "bigquery"):
        return parse_table(spark, source, files, table_reader, columns, formats._mapped_rating,
                           PARSED_RATINGS_SCHEMA)
    header = ()
    if source.format == "csv":  # the header names the columns: each file's first line
        header = shared_header(
            [(f, spark.sparkContext.textFile(hadoop_name(f)).take(1)) for f in files], source)
    parser = parser_or_fail(formats.ratings_parser, source, header, columns, files[0])
    return parse_ratings_text(spark, files, parser, ratings_layout(source, parser, columns))


def read_movies(spark: SparkSession, source: SourceConfig, path: Union[str, Sequence[str]],
                table_reader: Optional[TableReader] = None) -> DataFrame:
    """Parse movies files (or a table) into PARSED_MOVIES_SCHEMA rows (good and bad)."""
    files = entries(path)
    cols = source.movie_columns
    columns = (cols.movie_id, cols.title, cols.genre)
    if source.format in ("parquet", "bigquery"):
        return parse_table(spark, source, files, table_reader, columns, formats._mapped_movie,
                           PARSED_MOVIES_SCHEMA)
    encoding = source.encoding or formats.MOVIES_ENCODING[source.format]
    contents = file_contents(spark, files)
    header = ()
    if source.format == "csv":
        header = shared_header([(f, [line for line, _ in decode_lines(data, encoding)][:1])
                                for f, data in contents], source)
    parser = parser_or_fail(formats.movies_parser, source, header, columns, files[0])
    lines = [(line, index, f) for f, data in contents for line, index in decode_lines(data, encoding)]
    return parse_lines(spark, spark.sparkContext.parallelize(lines, numSlices=1), parser,
                       PARSED_MOVIES_SCHEMA)
