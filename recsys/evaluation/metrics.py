"""ML.EVALUATE's explicit-feedback metrics, computed in Spark with BigQuery ML's formulas.

- mean_absolute_error      = AVG(|label - prediction|)
- mean_squared_error       = AVG((label - prediction)^2)
- mean_squared_log_error   = AVG((LN(1 + label) - LN(1 + prediction))^2); NULL when some label or
  prediction is <= -1, where the logarithm is undefined (rather than silently skipping rows)
- median_absolute_error    = exact median of |label - prediction| (midpoint of the two middle
  values for an even count, as numpy.median), found without holding every value in one task:
  approximate quantiles bound the middle, then only the values between the bounds are collected
- r2_score                 = 1 - SUM(err^2) / (COUNT * VAR_POP(label))
- explained_variance       = 1 - VAR_POP(err) / VAR_POP(label)

Sums are exact (``exact_sum``), so a metric does not depend on the order in which Spark merges
partial sums: the same model and rows give the same value to the last bit on every run.
"""

from __future__ import annotations

from typing import Dict, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import schemas
from recsys.sums import exact_avg, exact_sum


# Relative rank accuracy of the approximate quantiles that bound the median: about
# 6 / MEDIAN_ACCURACY of the rows (15 k of ML-25M's 25 M) are collected to find it exactly.
MEDIAN_ACCURACY = 10_000


def regression_metrics(df: DataFrame, *, col_rating: str = "rating",
                       col_prediction: str = "predicted_rating") -> DataFrame:
    """One-row DataFrame (EVALUATE_SCHEMA) of the six explicit metrics over ``df``."""
    label = F.col(col_rating).cast("double")
    pred = F.col(col_prediction).cast("double")
    scored = df.select(label.alias("label"), pred.alias("pred")).withColumn(
        "err", F.col("label") - F.col("pred")).withColumn("abs_err", F.abs("err"))
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)  # read twice: sums, then the median
    # MSLE's log is undefined at or below -1: such rows count as NULL (the metric then is too).
    log_error = F.when(F.least("label", "pred") > -1.0,
                       F.pow(F.log1p("label") - F.log1p("pred"), 2))
    margin = 2.0 / MEDIAN_ACCURACY
    sums = scored.agg(
        exact_avg(F.col("abs_err")).alias("mae"),
        exact_avg(F.col("err") * F.col("err")).alias("mse"),
        exact_avg(log_error).alias("msle"),
        F.least(F.min("label"), F.min("pred")).alias("lowest"),
        F.percentile_approx("abs_err", [max(0.5 - margin, 0.0), min(0.5 + margin, 1.0)],
                            MEDIAN_ACCURACY).alias("bounds"),
        exact_sum(F.col("err") * F.col("err")).alias("sse"),
        F.count(F.lit(1)).alias("n"),
        F.count("abs_err").alias("n_err"),
        exact_avg(F.col("label")).alias("mean_label"),
        exact_avg(F.col("label") * F.col("label")).alias("mean_label_sq"),
        exact_avg(F.col("err")).alias("mean_err"),
    ).select("*",
             (F.col("mean_label_sq") - F.col("mean_label") * F.col("mean_label"))
             .alias("var_label"),
             (F.col("mse") - F.col("mean_err") * F.col("mean_err")).alias("var_err"))
    row = sums.select(
        F.col("mae").alias("mean_absolute_error"),
        F.col("mse").alias("mean_squared_error"),
        F.when(F.col("lowest") > -1.0, F.col("msle")).alias("mean_squared_log_error"),
        # try_divide: a constant label column gives NULL, not a division-by-zero error (ANSI).
        (F.lit(1.0) - F.expr("try_divide(sse, n * var_label)")).alias("r2_score"),
        (F.lit(1.0) - F.expr("try_divide(var_err, var_label)")).alias("explained_variance"),
        "bounds", "n_err").head()
    median = _exact_median(scored, "abs_err", row["n_err"], row["bounds"])
    scored.unpersist()
    values = {**row.asDict(), "median_absolute_error": median}
    return df.sparkSession.createDataFrame(
        [tuple(values[name] for name in schemas.EXPLICIT_METRICS)], schemas.EVALUATE_SCHEMA)


def _exact_median(df: DataFrame, col: str, n: int, bounds) -> Optional[float]:
    """Median of ``col`` as Spark's ``percentile(col, 0.5)`` computes it (``n`` non-NULL values),
    given approximate quantiles ``bounds`` = [low, high] that enclose it: the rows below ``low``
    are counted and the few between the bounds are collected and sorted."""
    if not n:
        return None
    low, high = bounds
    row = df.agg(F.count(F.when(F.col(col) < low, 1)).alias("below"),
                 F.collect_list(F.when(F.col(col).between(low, high), F.col(col)))
                 .alias("middle")).head()
    middle = sorted(row["middle"])
    position = (n - 1) * 0.5  # percentile's interpolation between the two middle values
    lower, upper = int(position) - row["below"], -(-int(position * 2) // 2) - row["below"]
    if not (0 <= lower <= upper < len(middle)):  # the bounds missed: Spark's exact aggregate
        return df.agg(F.expr(f"percentile(`{col}`, 0.5)")).head()[0]
    if lower == upper:
        return float(middle[lower])
    return float(0.5 * middle[lower] + 0.5 * middle[upper])


def metrics_dict(metrics: DataFrame) -> Dict[str, float]:
    """The one-row metrics table as an ordered dict."""
    row = metrics.head()
    return {name: (None if row[name] is None else float(row[name]))
            for name in schemas.EXPLICIT_METRICS}
