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

Sums are exact (``recsys.sums``), so a metric does not depend on the order in which Spark merges
partial sums: the same model and rows give the same value to the last bit on every run. They are
taken in two passes over the scored rows, neither with DECIMAL arithmetic: Spark counts the rows
and bounds the median, then Arrow tasks add every sum in fixed point and collect the median's
middle values (DECIMAL aggregation cost 7 s of the 8 s of the metrics on 1 M rows).
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import schemas
from recsys.sums import FixedPointSum, exact_sum
from recsys.tasks import python_task


# Relative rank accuracy of the approximate quantiles that bound the median: about
# 6 / MEDIAN_ACCURACY of the rows (15 k of ML-25M's 25 M) are collected to find it exactly.
MEDIAN_ACCURACY = 10_000
# The sums of the metrics, each over the non-NULL values of one per-row quantity.
SUMS = ("abs_err", "sq_err", "log_error", "label", "label_sq", "err")
_PARTIAL_SCHEMA = "sums string, below long, middle array<double>"


def regression_metrics(df: DataFrame, *, col_rating: str = "rating",
                       col_prediction: str = "predicted_rating") -> DataFrame:
    """One-row DataFrame (EVALUATE_SCHEMA) of the six explicit metrics over ``df``."""
    label = F.col(col_rating).cast("double")
    pred = F.col(col_prediction).cast("double")
    # MSLE's log is undefined at or below -1: such rows count as NULL (the metric then is too).
    # Computed by Spark (StrictMath's log1p), as every per-row value the sums add.
    log_error = F.when(F.least("label", "pred") > -1.0,
                       F.pow(F.log1p("label") - F.log1p("pred"), 2))
    scored = (df.select(label.alias("label"), pred.alias("pred"))
              .withColumn("err", F.col("label") - F.col("pred"))
              .withColumn("log_error", log_error)
              .persist(StorageLevel.MEMORY_AND_DISK))  # read twice: counts, then the sums
    margin = 2.0 / MEDIAN_ACCURACY
    counts = scored.agg(
        F.count(F.lit(1)).alias("n"), F.count("err").alias("err"),
        F.count("log_error").alias("log_error"), F.count("label").alias("label"),
        F.least(F.min("label"), F.min("pred")).alias("lowest"),
        F.percentile_approx(F.abs("err"), [max(0.5 - margin, 0.0), min(0.5 + margin, 1.0)],
                            MEDIAN_ACCURACY).alias("bounds"),
    ).head().asDict()
    sums, below, middle = _arrow_pass(scored, counts["bounds"])
    if any(s.needs_spark for s in sums.values()):  # values beyond the Arrow range
        values = _spark_sums(scored)
    else:
        values = {name: s.value() for name, s in sums.items()}
    metrics = _combine(values, counts)
    metrics["median_absolute_error"] = _exact_median(scored, counts["err"], below, middle,
                                                     counts["bounds"])
    scored.unpersist()
    return df.sparkSession.createDataFrame(
        [tuple(metrics[name] for name in schemas.EXPLICIT_METRICS)], schemas.EVALUATE_SCHEMA)


def _arrow_pass(scored: DataFrame, bounds):
    """Every sum of ``SUMS`` (``FixedPointSum``), the count of |err| below the median's lower
    bound and the |err| values between the bounds, from one partial per Arrow task."""
    low, high = bounds if bounds is not None else (math.nan, math.nan)
    rows = scored.select("label", "err", "log_error").mapInArrow(
        _partials(low, high), _PARTIAL_SCHEMA).collect()
    sums = {name: FixedPointSum() for name in SUMS}
    for row in rows:
        part = json.loads(row["sums"])
        sums = {name: sums[name].merge(FixedPointSum.from_json(part[name])) for name in SUMS}
    return sums, sum(row["below"] for row in rows), [v for row in rows for v in row["middle"]]


def _partials(low: float, high: float):
    """The mapInArrow function: one row per task with its exact partial sums (JSON) and its
    part of the median's count and middle values."""
    @python_task
    def partial(batches):
        sums = {name: FixedPointSum() for name in SUMS}
        below, middle = 0, []
        for batch in batches:
            label, err, log_error = (_valid(batch.column(c)) for c in ("label", "err", "log_error"))
            abs_err = np.abs(err)
            for name, values in (("abs_err", err), ("sq_err", err * err),
                                 ("log_error", log_error), ("label", label),
                                 ("label_sq", label * label), ("err", err)):
                sums[name].add(values)
            below += int(np.count_nonzero(_lt(abs_err, low)))
            middle += abs_err[_le(low, abs_err) & _le(abs_err, high)].tolist()
        sums["abs_err"] = sums["abs_err"].absolute()  # |err| rounds as err does
        yield pa.RecordBatch.from_pydict({
            "sums": [json.dumps({name: s.to_json() for name, s in sums.items()})],
            "below": [below], "middle": [middle]},
            schema=pa.schema([("sums", pa.string()), ("below", pa.int64()),
                              ("middle", pa.list_(pa.float64()))]))
    return partial


def _valid(column: pa.Array) -> np.ndarray:
    """The non-NULL values of a DOUBLE column."""
    return column.drop_null().to_numpy(zero_copy_only=False)


def _lt(a: np.ndarray, b: float) -> np.ndarray:
    """``a < b`` as Spark compares doubles: NaN equals NaN and is above every number."""
    return ~np.isnan(a) if math.isnan(b) else a < b


def _le(a, b) -> np.ndarray:
    """``a <= b`` as Spark compares doubles (one side an array, the other a scalar)."""
    return np.asarray((a <= b) | np.isnan(b))


def _spark_sums(scored: DataFrame) -> Dict[str, Optional[float]]:
    """The sums of ``SUMS`` by Spark's DECIMAL aggregate (``exact_sum``): for values beyond
    ``FixedPointSum``'s range."""
    err = F.col("err")
    quantities = {"abs_err": F.abs(err), "sq_err": err * err, "log_error": F.col("log_error"),
                  "label": F.col("label"), "label_sq": F.col("label") * F.col("label"),
                  "err": err}
    return scored.agg(*[exact_sum(quantities[name]).alias(name) for name in SUMS]).head().asDict()


def _combine(sums: Dict[str, Optional[float]], counts) -> Dict[str, Optional[float]]:
    """The metrics from the exact sums and the counts, with Spark's double arithmetic
    (``exact_avg`` = sum / count; NULL in, NULL out; ``try_divide`` by zero gives NULL)."""
    def avg(name, count):
        return None if sums[name] is None else sums[name] / counts[count]

    mae, mse, msle = avg("abs_err", "err"), avg("sq_err", "err"), avg("log_error", "log_error")
    mean_label, mean_label_sq = avg("label", "label"), avg("label_sq", "label")
    mean_err = avg("err", "err")
    var_label = _sub(mean_label_sq, _mul(mean_label, mean_label))
    var_err = _sub(mse, _mul(mean_err, mean_err))
    lowest = counts["lowest"]
    defined = lowest is not None and (math.isnan(lowest) or lowest > -1.0)  # NaN is above all
    return {
        "mean_absolute_error": mae,
        "mean_squared_error": mse,
        "mean_squared_log_error": msle if defined else None,
        "r2_score": _sub(1.0, _try_divide(sums["sq_err"], _mul(float(counts["n"]), var_label))),
        "explained_variance": _sub(1.0, _try_divide(var_err, var_label)),
    }


def _sub(a, b):
    return None if a is None or b is None else a - b


def _mul(a, b):
    return None if a is None or b is None else a * b


def _try_divide(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _exact_median(scored: DataFrame, n: int, below: int, middle: List[float],
                  bounds) -> Optional[float]:
    """Median of |err| as Spark's ``percentile(abs(err), 0.5)`` computes it (``n`` non-NULL
    values), given the count of values below the approximate lower bound and the values
    between the bounds: the middle is sorted on the driver."""
    if not n:
        return None
    middle = sorted(middle)
    position = (n - 1) * 0.5  # percentile's interpolation between the two middle values
    lower, upper = int(position) - below, -(-int(position * 2) // 2) - below
    if not (0 <= lower <= upper < len(middle)):  # the bounds missed: Spark's exact aggregate
        return scored.agg(F.expr("percentile(abs(err), 0.5)")).head()[0]
    if lower == upper:
        return float(middle[lower])
    return float(0.5 * middle[lower] + 0.5 * middle[upper])


def metrics_dict(metrics: DataFrame) -> Dict[str, float]:
    """The one-row metrics table as an ordered dict."""
    row = metrics.head()
    return {name: (None if row[name] is None else float(row[name]))
            for name in schemas.EXPLICIT_METRICS}
