"""Ingest stage: parsed rows in, the ``ratings``/``movies`` tables and their rejects out.

Rules applied here (per-line syntax was checked by the reader):
- a rating outside ``[rating_min, rating_max]`` is rejected;
- of several rows for one (user, item) pair the latest by timestamp is kept and the others are
  rejected, naming the line that was kept. On a tie the later line wins: across the files of a
  sharded source, the file whose full name sorts last, then the later line in it;
- a movie id seen twice keeps its first line (the file whose name sorts first, then the first
  line in it).
"""

from __future__ import annotations

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


def classify_ratings(parsed: DataFrame, ingest: IngestConfig) -> DataFrame:
    """Add the final ``reason`` (NULL = kept) to parsed ratings: scale and duplicate rules."""
    lo, hi = ingest.rating_min, ingest.rating_max
    scale_reason = F.when(
        F.col("reason").isNull() & ((F.col("rating") < lo) | (F.col("rating") > hi)),
        F.format_string(f"rating %s outside the scale [{lo:g}, {hi:g}]",
                        F.expr("cast(rating as string)")),
    ).otherwise(F.col("reason"))
    rows = parsed.withColumn("reason", scale_reason)
    good, bad = rows.where(F.col("reason").isNull()), rows.where(F.col("reason").isNotNull())
    latest_first = Window.partitionBy("user_id", "item_id").orderBy(
        F.col("timestamp_seconds").desc_nulls_last(), F.col("source_file").desc(),
        F.col("line_number").desc())
    return _keep_first(good, latest_first, "duplicate (user_id, item_id) pair",
                       " (latest timestamp)").unionByName(bad)


def _keep_first(good: DataFrame, order: Window, what: str, why: str) -> DataFrame:
    """Rows ranked by ``order``: the first keeps a NULL reason, the others are rejected naming
    its line (and its file when it is another file)."""
    ranked = (good.withColumn("_rank", F.row_number().over(order))
                  .withColumn("_kept_line", F.first("line_number").over(order))
                  .withColumn("_kept_file", F.first("source_file").over(order)))
    same_file = F.coalesce(F.col("_kept_file") == F.col("source_file"), F.lit(True))
    kept = F.when(same_file, F.format_string("line %d", F.col("_kept_line"))).otherwise(
        F.format_string("line %d of %s", F.col("_kept_line"), F.col("_kept_file")))
    return ranked.withColumn("reason", F.when(
        F.col("_rank") > 1, F.concat(F.lit(f"{what}: "), kept, F.lit(f" is kept{why}")),
    )).drop("_rank", "_kept_line", "_kept_file")


def classify_movies(parsed: DataFrame) -> DataFrame:
    """Add the final ``reason`` to parsed movies: a repeated movie id keeps its first line."""
    good, bad = parsed.where(F.col("reason").isNull()), parsed.where(F.col("reason").isNotNull())
    first_line = Window.partitionBy("movie_id").orderBy("source_file", "line_number")
    return _keep_first(good, first_line, "duplicate movie_id", "").unionByName(bad)


def ratings_table(classified: DataFrame) -> DataFrame:
    """The ``ratings`` table (tutorial schema), sorted by user and item."""
    kept = classified.where(F.col("reason").isNull())
    return (kept.select(
        F.col("user_id").cast("long"), F.col("item_id").cast("long"),
        F.col("rating").cast("double"),
        F.timestamp_seconds(F.col("timestamp_seconds")).alias("timestamp"),
    ).orderBy("user_id", "item_id"))


def movies_table(classified: DataFrame) -> DataFrame:
    """The ``movies`` table (tutorial schema), sorted by movie id."""
    kept = classified.where(F.col("reason").isNull())
    return kept.select("movie_id", "movie_title", "genre").orderBy("movie_id")


def rejected_table(classified: DataFrame) -> DataFrame:
    """Rejected rows in REJECTED_SCHEMA, in file and line order; each names its own file."""
    bad = classified.where(F.col("reason").isNotNull())
    return bad.select(
        F.col("raw"), F.col("source_file"), F.col("line_number"), F.col("reason"),
    ).orderBy("source_file", "line_number")


def reject_stats(classified: DataFrame, source_file: str) -> RejectStats:
    """Count rows and find the first bad line, in one pass over the classified rows."""
    row = classified.agg(
        F.count(F.lit(1)).alias("total"),
        F.count("reason").alias("rejected"),
        F.min_by(F.struct("line_number", "reason", "source_file"),
                 F.when(F.col("reason").isNotNull(), F.struct("source_file", "line_number"))
                 ).alias("first_bad"),
    ).head()
    first = row["first_bad"]
    return RejectStats(
        source_file=source_file, total_rows=row["total"], rejected_rows=row["rejected"],
        first_bad_line=first["line_number"] if first and first["reason"] else None,
        first_bad_reason=first["reason"] if first else None,
        first_bad_file=first["source_file"] if first and first["reason"] else None,
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
    classified = classify_ratings(
        readers.read_ratings(spark, source, files.ratings, table_reader), ingest_cfg)
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    ratings_stats = reject_stats(classified, files.ratings_label)
    movies = movies_rejected = movies_stats = None
    if files.movies is not None:
        movies_classified = classify_movies(
            readers.read_movies(spark, source, files.movies, table_reader)).cache()
        movies_stats = reject_stats(movies_classified, files.movies_label)
        movies = movies_table(movies_classified)
        movies_rejected = rejected_table(movies_classified)
    return IngestResult(
        ratings=ratings_table(classified),
        movies=movies,
        ratings_rejected=rejected_table(classified),
        movies_rejected=movies_rejected,
        ratings_stats=ratings_stats,
        movies_stats=movies_stats,
    )
