"""Ingest stage: parsed rows in, the ``ratings``/``movies`` tables and their rejects out.

Rules applied here (per-line syntax was checked by the reader):
- a rating outside ``[rating_min, rating_max]`` is rejected;
- of several rows for one (user, item) pair the latest by timestamp is kept and the others are
  rejected, naming the line that was kept. On a tie the later line wins: across the files of a
  sharded source, the file whose full name sorts last, then the later line in it;
- a movie id seen twice keeps its first line (the file whose name sorts first, then the first
  line in it).

The source is read once: rows carry their place in a file split (``split_start``,
``split_line``), which orders lines within a file as their line numbers do. The split line
counts come from the one aggregate that also counts the rejects, and only rejected rows (and
the lines they name as kept) are then given their line number in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys.sources import readers
from recsys.config import IngestConfig, SourceConfig
from recsys.errors import InputError


@dataclass(frozen=True)
class RejectStats:
    """Counts of one input file, and its first bad line for the error message."""

    source_file: str
    total_rows: int
    rejected_rows: int
    first_bad_line: Optional[int] = None
    first_bad_reason: Optional[str] = None
    first_bad_file: Optional[str] = None

    @property
    def first_bad(self) -> str:
        """``line N`` of the first bad line, naming its file when the source has several."""
        if self.first_bad_file is None or self.first_bad_file == self.source_file:
            return f"line {self.first_bad_line}"
        return f"line {self.first_bad_line} of {self.first_bad_file}"

    @property
    def rejected_fraction(self) -> float:
        """Rejected share of the data lines (0 for an empty file)."""
        return self.rejected_rows / self.total_rows if self.total_rows else 0.0


@dataclass(frozen=True)
class IngestResult:
    """The four ingest tables and the counts behind them."""

    ratings: DataFrame
    movies: Optional[DataFrame]
    ratings_rejected: DataFrame
    movies_rejected: Optional[DataFrame]
    ratings_stats: RejectStats
    movies_stats: Optional[RejectStats]


# Input bytes per partition of the duplicate rule's window (``window_partitions``). Measured:
# ML-25M's 681 MB .dat in 8 partitions (3.1 M rows a task) ran a 2 GB driver out of heap in
# the window's sort; in 82, with the classified rows on disk (``ingest``), the whole tutorial
# completes in 2 GB (docs/performance.md).
WINDOW_INPUT_BYTES = 8 << 20


def window_partitions(parsed: DataFrame) -> Optional[int]:
    """Partitions of the duplicate rule's window over ``parsed``: one per ``WINDOW_INPUT_BYTES``
    of input where that is more than ``spark.sql.shuffle.partitions``, else None (Spark's own,
    which adaptive execution may coalesce). The size is Spark's estimate of the plan (the files'
    bytes for text and Parquet, the table's for BigQuery), known before anything is read. The
    window's rows, and so the tables, do not depend on the count."""
    default = int(parsed.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    try:
        # A Scala BigInt through Py4J: an int on Spark 4, an object printing its digits on 3.5.
        size = int(str(parsed._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))
    except Exception:  # a source that cannot estimate its size keeps Spark's default
        return None
    wanted = math.ceil(size / WINDOW_INPUT_BYTES)
    return wanted if wanted > default else None


# Pairs of rows for one (user, item) at most which the duplicate rule ranks alone, joined to
# their rows as a broadcast; with more, every row goes through the window. A real export has
# none (every MovieLens release), so usually no row is ranked at all.
DUPLICATED_PAIRS_BROADCAST_MAX = 100_000


def classify_ratings(parsed: DataFrame, ingest: IngestConfig, partitions: Optional[int] = None,
                     level: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> DataFrame:
    """Add the final ``reason`` (NULL = kept) to parsed ratings: scale and duplicate rules.

    The rows with their scale reason are persisted at ``level`` (the count of duplicated pairs
    and every table read them). Only the rows of pairs that have several good rows are ranked
    (``_keep_first``): none without duplicates, which spares ranking every row (a shuffle and a
    sort of the rows with their text and file name; ML-1M's ingest stage 14.7 s against
    16.6 s, means of four same-run pairs, docs/performance.md). More than
    ``DUPLICATED_PAIRS_BROADCAST_MAX`` such pairs rank every row, in ``partitions`` partitions
    (``window_partitions``; None: ``spark.sql.shuffle.partitions``), computed again by each
    table that reads it: rare input, and the heap a second cache would take is what a 2 GB
    driver lacks at ML-25M. The rows, and so the tables, are the same every way."""
    lo, hi = ingest.rating_min, ingest.rating_max
    scale_reason = F.when(
        F.col("reason").isNull() & ((F.col("rating") < lo) | (F.col("rating") > hi)),
        F.format_string(f"rating %s outside the scale [{lo:g}, {hi:g}]",
                        F.expr("cast(rating as string)")),
    ).otherwise(F.col("reason"))
    rows = parsed.withColumn("reason", scale_reason).persist(level)
    keys = ["user_id", "item_id"]

    def rank(some: DataFrame, parts: Optional[int]) -> DataFrame:
        return _keep_first(
            some, keys,
            [F.col("timestamp_seconds").desc_nulls_last(), F.col("source_file").desc(),
             F.col("split_start").desc(), F.col("split_line").desc()],
            "duplicate (user_id, item_id) pair", " (latest timestamp)", parts)

    duplicated = (rows.where(F.col("reason").isNull()).groupBy(*keys).count()
                  .where(F.col("count") > 1).select(*keys).persist(level))
    pairs = duplicated.count()
    if pairs == 0:
        duplicated.unpersist()
        return _unranked(rows)
    if pairs > DUPLICATED_PAIRS_BROADCAST_MAX:
        duplicated.unpersist()
        return rank(rows, partitions)
    few = F.broadcast(duplicated)
    return rank(rows.join(few, keys, "left_semi"), None).unionByName(
        _unranked(rows.join(few, keys, "left_anti")))


def _unranked(rows: DataFrame) -> DataFrame:
    """Rows no duplicate rule ranked, with ``_keep_first``'s (NULL) kept-line columns, typed
    as the columns they would copy."""
    return rows.select("*", *[F.lit(None).cast(rows.schema[of].dataType).alias(column)
                              for column, of in zip(_KEPT_COLUMNS, _KEPT_FROM)])


def classify_movies(parsed: DataFrame) -> DataFrame:
    """Add the final ``reason`` to parsed movies: a repeated movie id keeps its first line."""
    return _keep_first(parsed, ["movie_id"], ["source_file", "split_start", "split_line"],
                       "duplicate movie_id", "", partitions=None)


# Stands in a duplicate's reason for the kept line ("line N", "line N of FILE") until the kept
# line's number is known (``rejected_table``).
_KEPT = "{kept}"
_KEPT_COLUMNS = ("_kept_file", "_kept_start", "_kept_line")
_KEPT_FROM = ("source_file", "split_start", "split_line")  # what each of them copies


def _keep_first(rows: DataFrame, keys: list, order: list, what: str, why: str,
                partitions: Optional[int]) -> DataFrame:
    """Good rows (NULL reason) of each ``keys`` value ranked by ``order``: the first keeps its
    NULL reason, the others are rejected naming its line (and its file when it is another
    file), kept in ``_KEPT_COLUMNS``. Rows already rejected are ranked apart and keep their
    reason: one window over all rows, so the source is computed once (a union of the good and
    the bad rows would compute it once for each). ``partitions``: the window's partition count
    (None: ``spark.sql.shuffle.partitions``)."""
    if partitions is not None:
        # Hashed on the keys alone, which the window's (keys, _good) partitioning accepts as
        # they are: one shuffle, not two.
        rows = rows.repartition(partitions, *keys)
    # The window keys on a column, not on the expression: each use of an expression key is
    # aliased anew, and Spark would shuffle and sort the rows again for every window column.
    columns = rows.columns
    rows = rows.withColumn("_good", F.col("reason").isNull())
    window = (Window.partitionBy(*keys, "_good").orderBy(*order)
              .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    duplicate = F.col("_good") & (F.row_number().over(window) > 1)
    ranked = rows.select("*", duplicate.alias("_duplicate"), *[
        F.first(of).over(window).alias(column)
        for column, of in zip(_KEPT_COLUMNS, _KEPT_FROM)])
    reason = F.when(F.col("_duplicate"), F.lit(f"{what}: {_KEPT} is kept{why}")).otherwise(
        F.col("reason")).alias("reason")
    return ranked.select(*[reason if c == "reason" else c for c in columns],
                         *[F.when(F.col("_duplicate"), F.col(c)).alias(c) for c in _KEPT_COLUMNS])


def ratings_table(classified: DataFrame) -> DataFrame:
    """The ``ratings`` table (tutorial schema), each file sorted by user and item: each
    partition of the classified rows sorted where it is, with no global sort, which cost a
    range-sampling job and a second shuffle of every row (ML-1M's write: 3.8 s before, 2.7 s
    after, means of four runs, docs/performance.md). The rows, and so every later table, are
    the same."""
    kept = classified.where(F.col("reason").isNull())
    return (kept.select(
        F.col("user_id").cast("long"), F.col("item_id").cast("long"),
        F.col("rating").cast("double"),
        F.timestamp_seconds(F.col("timestamp_seconds")).alias("timestamp"),
    ).sortWithinPartitions("user_id", "item_id"))


def movies_table(classified: DataFrame) -> DataFrame:
    """The ``movies`` table (tutorial schema): one file, sorted by movie id. A catalogue is small
    (62 k movies in ML-25M): sorted in one task, with no range-sampling job and no shuffle."""
    kept = classified.where(F.col("reason").isNull())
    return (kept.select("movie_id", "movie_title", "genre").coalesce(1)
            .sortWithinPartitions("movie_id"))


def rejected_table(classified: DataFrame, offsets: dict) -> DataFrame:
    """Rejected rows in REJECTED_SCHEMA, in file and line order; each names its own file, and a
    duplicate the line kept. ``offsets``: ``readers.line_offsets`` of the source's splits."""
    bad = readers.with_line_numbers(classified.where(F.col("reason").isNotNull()), offsets)
    kept_line = F.col("_kept_line") + readers.line_offset(offsets, "_kept_file", "_kept_start")
    same_file = F.col("_kept_file") == F.col("source_file")
    kept = F.when(same_file, F.format_string("line %d", kept_line)).otherwise(
        F.format_string("line %d of %s", kept_line, F.col("_kept_file")))
    reason = F.when(F.col("_kept_line").isNull(), F.col("reason")).otherwise(
        F.replace(F.col("reason"), F.lit(_KEPT), kept))
    return bad.select(
        F.col("raw"), F.col("source_file"), F.col("line_number"), reason.alias("reason"),
    ).orderBy("source_file", "line_number")


def split_summary(classified: DataFrame) -> list:
    """One row per file split that gave rows: its last ``split_line``, its rows and rejects."""
    return (classified.groupBy("source_file", "split_start")
            .agg(F.max("split_line").alias("lines"), F.count(F.lit(1)).alias("rows"),
                 F.count("reason").alias("rejected")).collect())


def reject_stats(splits: list, rejected: DataFrame, source_file: str) -> RejectStats:
    """Counts from ``split_summary``; the first bad line is read from the ``rejected`` table
    (only when there is one)."""
    total = sum(r["rows"] for r in splits)
    bad = sum(r["rejected"] for r in splits)
    first = rejected.select("line_number", "reason", "source_file").head() if bad else None
    return RejectStats(
        source_file=source_file, total_rows=total, rejected_rows=bad,
        first_bad_line=first["line_number"] if first else None,
        first_bad_reason=first["reason"] if first else None,
        first_bad_file=first["source_file"] if first else None,
    )


def check_rejects(stats: RejectStats, max_fraction: float, what: str) -> None:
    """Fail with one line naming the file, first bad line and problem over the threshold."""
    if stats.total_rows == 0:
        raise InputError(f"{stats.source_file}: no {what} rows (the file is empty or only a header)")
    if stats.total_rows == stats.rejected_rows:
        detail = (f"; {stats.first_bad}: {stats.first_bad_reason}"
                  if stats.first_bad_line else "")
        raise InputError(f"{stats.source_file}: no valid {what} rows "
                         f"({stats.rejected_rows} rejected){detail}")
    if stats.rejected_fraction > max_fraction:
        raise InputError(
            f"{stats.source_file}: {stats.rejected_rows} of {stats.total_rows} {what} rows rejected "
            f"({stats.rejected_fraction:.2%} > ingest.max_reject_fraction {max_fraction:.2%}); "
            f"first bad {stats.first_bad}: {stats.first_bad_reason}")


def ingest(spark, source: SourceConfig, ingest_cfg: IngestConfig,
           table_reader: Optional[readers.TableReader] = None) -> IngestResult:
    """Read, validate and de-duplicate the configured source into the ingest tables.

    ``table_reader`` reads table sources (BigQuery tables or queries).
    """
    files = readers.resolve_files(source, spark)
    parsed = readers.read_ratings(spark, source, files.ratings, table_reader)
    partitions = window_partitions(parsed)
    # The classified rows are read four times (duplicated pairs, counts, rejects, ratings). An
    # input large enough to spread the window wider than Spark's default keeps them on disk
    # only: in memory, ML-25M's (raw lines and file names included) took about 1 GB of a 2 GB
    # driver's heap beside the window's sort, and the sort ran out of it (docs/performance.md).
    level = StorageLevel.DISK_ONLY if partitions else StorageLevel.MEMORY_AND_DISK
    classified = classify_ratings(parsed, ingest_cfg, partitions, level)
    header_lines = readers.has_header_lines(source)
    ratings_rejected, ratings_stats = _rejects(classified, files.ratings_label, header_lines)
    movies = movies_rejected = movies_stats = None
    if files.movies is not None:
        movies_classified = classify_movies(
            readers.read_movies(spark, source, files.movies, table_reader)).cache()
        movies_rejected, movies_stats = _rejects(movies_classified, files.movies_label,
                                                 header_lines)
        movies = movies_table(movies_classified)
    return IngestResult(
        ratings=ratings_table(classified),
        movies=movies,
        ratings_rejected=ratings_rejected,
        movies_rejected=movies_rejected,
        ratings_stats=ratings_stats,
        movies_stats=movies_stats,
    )


def _rejects(classified: DataFrame, label: str, header_lines: bool):
    """The rejected table and the counts of cached classified rows (one aggregate over them)."""
    splits = split_summary(classified)
    offsets = readers.line_offsets(((r["source_file"], r["split_start"], r["lines"])
                                    for r in splits), header_lines=header_lines)
    # Without rejects the table is planned over no rows (Spark drops a FALSE filter's input), so
    # writing it neither scans nor sorts the cached rows.
    bad = classified if any(r["rejected"] for r in splits) else classified.where(F.lit(False))
    rejected = rejected_table(bad, offsets)
    return rejected, reject_stats(splits, rejected, label)
