"""Typed table sources (Parquet files, a BigQuery table or query): each row checked with the
rules of a text line, in one pass through Arrow, and kept with its place and its values as
JSON for ``*_rejected``."""

from __future__ import annotations

import json
from typing import Callable, Dict, Optional, Sequence, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from recsys.schemas import _META_FIELDS
from recsys.sources import formats
from recsys.config import SourceConfig
from recsys.errors import InputError
from recsys.sources.line_numbers import display_file_names, split_line_numbers
from recsys.sources.line_parsing import rows_batch
from recsys.sources.source_files import hadoop_name
from recsys.tasks import python_task

TableReader = Callable[[str], DataFrame]


def parse_table(spark: SparkSession, source: SourceConfig, files: Sequence[str],
                 table_reader: Optional[TableReader], columns: Sequence[Optional[str]],
                 convert: Callable[[Sequence[Optional[str]]], tuple],
                 schema: StructType) -> DataFrame:
    """Validate a typed table's rows with the same rules as text lines, in one pass through
    Arrow; ``raw`` is the row's values as JSON. Parquet files: the line number is the row's
    position in its file (1-based) and ``source_file`` the file; a BigQuery table or query: the
    position as read (each Spark partition, a read stream, is a split), and the reference."""
    if source.format == "parquet":
        table = spark.read.parquet(*[hadoop_name(f) for f in files])
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
        # _file: the URI, made a display name in the tasks (``display_file_names``).
        placed = table.select(*picked, F.col("_metadata.file_path").alias("_file"),
                              F.col("_metadata.file_block_start").alias("_start"))
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
            numbers = split_line_numbers(batch, seen).tolist()
            values = zip(*[batch.column(f"_c{k}").to_pylist() for k in range(len(columns))])
            yield rows_batch(
                [parse_row(list(v), start, number, file) for v, start, number, file in zip(
                    values, batch.column("_start").to_pylist(), numbers,
                    display_file_names(batch.column("_file")).to_pylist())], arrow_schema)

    return parse
