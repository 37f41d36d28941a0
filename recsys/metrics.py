"""ML.EVALUATE's explicit-feedback metrics, computed in Spark with BigQuery ML's formulas.

- mean_absolute_error      = AVG(|label - prediction|)
- mean_squared_error       = AVG((label - prediction)^2)
- mean_squared_log_error   = AVG((LN(1 + label) - LN(1 + prediction))^2); NULL when some label or
  prediction is <= -1, where the logarithm is undefined (rather than silently skipping rows)
- median_absolute_error    = exact median of |label - prediction| (midpoint of the two middle
  values for an even count, as numpy.median)
- r2_score                 = 1 - SUM(err^2) / (COUNT * VAR_POP(label))
- explained_variance       = 1 - VAR_POP(err) / VAR_POP(label)
"""

from __future__ import annotations

from typing import Dict

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import schemas


def regression_metrics(df: DataFrame, *, col_rating: str = "rating",
                       col_prediction: str = "predicted_rating") -> DataFrame:
    """One-row DataFrame (EVALUATE_SCHEMA) of the six explicit metrics over ``df``."""
    label = F.col(col_rating).cast("double")
    pred = F.col(col_prediction).cast("double")
    scored = df.select(label.alias("label"), pred.alias("pred")).withColumn(
        "err", F.col("label") - F.col("pred"))
    sums = scored.agg(
        F.avg(F.abs("err")).alias("mae"),
        F.avg(F.col("err") * F.col("err")).alias("mse"),
        F.avg(F.pow(F.log1p("label") - F.log1p("pred"), 2)).alias("msle"),
        F.least(F.min("label"), F.min("pred")).alias("lowest"),
        F.expr("percentile(abs(err), 0.5)").alias("medae"),
        F.sum(F.col("err") * F.col("err")).alias("sse"),
        F.count(F.lit(1)).alias("n"),
        F.var_pop("label").alias("var_label"),
        F.var_pop("err").alias("var_err"),
    )
    return sums.select(
        F.col("mae").alias("mean_absolute_error"),
        F.col("mse").alias("mean_squared_error"),
        F.when(F.col("lowest") > -1.0, F.col("msle")).alias("mean_squared_log_error"),
        F.col("medae").cast("double").alias("median_absolute_error"),
        # try_divide: a constant label column gives NULL, not a division-by-zero error (ANSI).
        (F.lit(1.0) - F.expr("try_divide(sse, n * var_label)")).alias("r2_score"),
        (F.lit(1.0) - F.expr("try_divide(var_err, var_label)")).alias("explained_variance"),
    )


def metrics_dict(metrics: DataFrame) -> Dict[str, float]:
    """The one-row metrics table as an ordered dict."""
    row = metrics.head()
    return {name: (None if row[name] is None else float(row[name]))
            for name in schemas.EXPLICIT_METRICS}
