"""The comparison stages (top k has its own module, ``topk``): frames in canonical columns in,
frozen results (``results``) out. They compute (Spark actions) but write nothing.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from recsys import schemas
from recsys.compare.frames import ITEM, PRED, SIDES, USER, dedupe_predictions, \
    evaluate_values, training_losses
from recsys.compare.results import DensityGrid, IdCounts, InterceptComparison, \
    InterceptStats, LossRow, MetricRow, MetricsComparison, PredictionAgreement, \
    PredictionComparison, TrainingComparison


def small_table(spark: SparkSession, rows: Sequence[tuple], schema: StructType) -> DataFrame:
    """A table of a few rows (one file)."""
    return spark.createDataFrame(list(rows), schema).coalesce(1)


def _finite(value: Optional[float]) -> Optional[float]:
    return None if value is None or math.isnan(value) else value


def metric_order(names) -> List[str]:
    """BigQuery ML's metric order first, then any other column."""
    known = [n for n in (*schemas.EXPLICIT_METRICS, *schemas.IMPLICIT_METRICS) if n in names]
    return list(dict.fromkeys(known + sorted(n for n in names if n not in known)))


def compare_metrics(bqml: DataFrame, recsys: DataFrame) -> MetricsComparison:
    """Two ML.EVALUATE rows -> each metric of either side with recsys - bqml."""
    values = {side: evaluate_values(df, f"compare.{side}.evaluate")
              for side, df in zip(SIDES, (bqml, recsys))}
    rows = []
    for name in metric_order(set(values["bqml"]) | set(values["recsys"])):
        b, r = values["bqml"].get(name), values["recsys"].get(name)
        rows.append(MetricRow(name, b, r, None if b is None or r is None else r - b))
    return MetricsComparison(tuple(rows))


def compare_training(bqml: DataFrame, recsys: DataFrame) -> TrainingComparison:
    """Two ML.TRAINING_INFO tables (the last training run of each) side by side by iteration."""
    b = training_losses(bqml, "compare.bqml.training_info")
    r = training_losses(recsys, "compare.recsys.training_info")
    none = (None, None)
    return TrainingComparison(tuple(
        LossRow(it, b.get(it, none)[0], r.get(it, none)[0], b.get(it, none)[1],
                r.get(it, none)[1]) for it in sorted(set(b) | set(r))))


def joined_predictions(bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """The pairs both sides predicted: (user, item, bqml, recsys)."""
    return (bqml.select(USER, ITEM, F.col(PRED).alias("bqml"))
            .join(recsys.select(USER, ITEM, F.col(PRED).alias("recsys")), [USER, ITEM]))


def spearman(df: DataFrame, x: str, y: str) -> Optional[float]:
    """Spearman's rank correlation (average ranks for ties), distributed (pyspark.ml)."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.stat import Correlation

    vec = VectorAssembler(inputCols=[x, y], outputCol="v").transform(
        df.select(x, y).where(F.col(x).isNotNull() & F.col(y).isNotNull()))
    return _finite(float(Correlation.corr(vec, "v", "spearman").head()[0].toArray()[0, 1]))


def agree_predictions(bqml: DataFrame, recsys: DataFrame) -> PredictionAgreement:
    """Pair-level agreement of two (user, item, prediction) frames (one row each per pair)."""
    joined = joined_predictions(bqml, recsys).cache()
    n_b, n_r = bqml.count(), recsys.count()
    diff = F.col("recsys") - F.col("bqml")
    agg = joined.select(F.count(F.lit(1)).alias("n"), F.sqrt(F.avg(diff ** 2)).alias("rmse"),
                        F.avg(F.abs(diff)).alias("mad"), F.avg(diff).alias("md"),
                        F.corr("bqml", "recsys").alias("pearson")).head()
    n = agg["n"]
    rho = spearman(joined, "bqml", "recsys") if n >= 2 else None
    joined.unpersist()
    return PredictionAgreement(IdCounts(n_b, n_r, n, n_b - n, n_r - n), agg["rmse"], agg["mad"],
                               agg["md"], _finite(agg["pearson"]), rho)


def compare_predictions(spark: SparkSession, bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """The ``compare_predictions`` table of two (user, item, prediction) frames."""
    return small_table(spark, [agree_predictions(bqml, recsys).row()],
                       schemas.COMPARE_PREDICTIONS_SCHEMA)


def compare_recommend(bqml: DataFrame, recsys: DataFrame, *, bins: int) -> PredictionComparison:
    """Two ML.RECOMMEND outputs (repeated (user, item) rows averaged) on the same pairs."""
    deduped: Dict[str, DataFrame] = {}
    repeated: Dict[str, int] = {}
    for side, frame in zip(SIDES, (bqml, recsys)):
        rows = frame.count()
        deduped[side] = dedupe_predictions(frame).cache()
        repeated[side] = rows - deduped[side].count()
    b, r = deduped["bqml"], deduped["recsys"]
    result = PredictionComparison(
        agree_predictions(b, r), repeated, id_counts(b.select(USER), r.select(USER)),
        id_counts(b.select(ITEM), r.select(ITEM)),
        binned(joined_predictions(b, r), "bqml", "recsys", bins))
    for frame in deduped.values():
        frame.unpersist()
    return result


def id_counts(bqml: DataFrame, recsys: DataFrame) -> IdCounts:
    """Distinct ids of two one-column frames: each side's, both, one side only."""
    b, r = bqml.distinct().cache(), recsys.distinct().cache()
    col = b.columns[0]
    n_b, n_r = b.count(), r.count()
    both = b.join(r.toDF(col), col).count()
    b.unpersist(), r.unpersist()
    return IdCounts(n_b, n_r, both, n_b - both, n_r - both)


def binned(df: DataFrame, x: str, y: str, bins: int) -> DensityGrid:
    """Counts of (x, y) points on a bins x bins grid over one common range (for a density
    plot): bin floor((v - low) / width), the maximum in the last bin."""
    lo_hi = df.select(F.least(F.min(x), F.min(y)).alias("lo"),
                      F.greatest(F.max(x), F.max(y)).alias("hi")).head()
    lo, hi = lo_hi["lo"], lo_hi["hi"]
    if lo is None:
        return DensityGrid(tuple((0,) * bins for _ in range(bins)), 0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins

    def index(col):
        return F.least(F.floor((F.col(col) - lo) / width), F.lit(bins - 1)).cast("int")

    grid = [[0] * bins for _ in range(bins)]
    for row in df.groupBy(index(x).alias("i"), index(y).alias("j")).count().collect():
        grid[row["i"]][row["j"]] = row["count"]
    return DensityGrid(tuple(tuple(line) for line in grid), lo, hi)


def compare_intercepts(bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """The ``compare_intercepts`` table: intercepts of the features on both sides (and the
    global one), with recsys - bqml."""
    b = bqml.select("processed_input", "feature", F.col("intercept").alias("bqml"))
    r = recsys.select("processed_input", "feature", F.col("intercept").alias("recsys"))
    cond = [b.feature == r.feature, b.processed_input.eqNullSafe(r.processed_input)]
    return b.join(r, cond).select(b.processed_input, b.feature, "bqml", "recsys",
                                  (F.col("recsys") - F.col("bqml")).alias("difference"))


def summarize_intercepts(table: DataFrame, bqml: DataFrame, recsys: DataFrame, *,
                         user_col: str, item_col: str, bins: int) -> InterceptComparison:
    """The global intercept, the number of factors, and the user and item intercepts' agreement
    of a ``compare_intercepts`` table and both sides' ML.WEIGHTS (canonical columns)."""
    global_rows = table.where(F.col("processed_input").isNull()).collect()
    g = global_rows[0] if global_rows else None
    factors = {side: frame.select(F.max("n_factors")).head()[0]
               for side, frame in zip(SIDES, (bqml, recsys))}
    kinds = tuple(_intercept_stats(table, bqml, recsys, col, kind, bins)
                  for col, kind in ((user_col, "user"), (item_col, "item")))
    return InterceptComparison(g.bqml if g else None, g.recsys if g else None,
                               g.difference if g else None, factors, kinds)


def _intercept_stats(table: DataFrame, bqml: DataFrame, recsys: DataFrame, col: str,
                     kind: str, bins: int) -> InterceptStats:
    part = table.where(F.col("processed_input") == col)
    s = part.select(F.count(F.lit(1)).alias("n"),
                    F.sqrt(F.avg(F.col("difference") ** 2)).alias("rmse"),
                    F.avg("difference").alias("md"),
                    F.corr("bqml", "recsys").alias("r")).head()
    ids = id_counts(bqml.where(F.col("processed_input") == col).select("feature"),
                    recsys.where(F.col("processed_input") == col).select("feature"))
    grid = binned(part, "bqml", "recsys", bins) if s["n"] else None
    return InterceptStats(kind, s["n"], s["rmse"], s["md"], _finite(s["r"]), ids, grid)
