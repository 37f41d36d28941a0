"""ML.EVALUATE's explicit-feedback metrics, computed in Spark with BigQuery ML's formulas.

- mean_absolute_error      = AVG(|label - prediction|)
- mean_squared_error       = AVG((label - prediction)^2)
- mean_squared_log_error   = AVG((LN(1 + label) - LN(1 + prediction))^2); NULL when some label or
  prediction is <= -1, where the logarithm is undefined (rather than silently skipping rows)
- median_absolute_error    = exact median of |label - prediction| (midpoint of the two middle
  values for an even count, as numpy.median), found without holding every value in one task:
  a histogram of the values' leading bits finds the bin of the middle, then only that bin's
  values are collected
- r2_score                 = 1 - SUM(err^2) / (COUNT * VAR_POP(label))
- explained_variance       = 1 - VAR_POP(err) / VAR_POP(label)

Sums are exact (``recsys.sums``), so a metric does not depend on the order in which Spark merges
partial sums: the same model and rows give the same value to the last bit on every run. One
Arrow pass over the scored rows adds every sum in fixed point (DECIMAL aggregation cost 7 s of
the 8 s of the metrics on 1 M rows), counts the rows and the histogram; a second collects the
middle bin's values (Spark's approximate quantiles, which bounded the middle before, cost 2.5 s
of a 1 M-row evaluation, docs/performance.md).

A bigquery_ml fit's training-time metrics come from the predictions it holds
(``prediction_metrics``): the same per-row values computed in NumPy, the same sums, the same
doubles out, with no table read and no row crossing to Arrow.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from typing import Dict, Optional

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys import schemas, strict_math
from recsys.sums import FixedPointSum, exact_sum
from recsys.tasks import python_task


# |err| is binned by the leading bits of its IEEE-754 pattern, which order non-negative doubles
# as their values do: 11 exponent and 12 mantissa bits, bins 1/4096 of their value wide (NaN,
# above every number for Spark, in a bin of its own after them).
_BIN_SHIFT = 40
_NAN_BIN = 1 << 24
_INF_BITS = 0x7FF0000000000000
# The sums of the metrics, each over the non-NULL values of one per-row quantity.
SUMS = ("abs_err", "sq_err", "log_error", "label", "label_sq", "err")
_COUNTS = ("n", "err", "log_error", "label")
_PARTIAL_SCHEMA = "sums string, counts array<long>, lowest double, bins array<long>, " \
                  "bin_counts array<long>"


def regression_metrics(df: DataFrame, *, col_rating: str = "rating",
                       col_prediction: str = "predicted_rating") -> DataFrame:
    """One-row DataFrame (EVALUATE_SCHEMA) of the six explicit metrics over ``df``."""
    label = F.col(col_rating).cast("double")
    pred = F.col(col_prediction).cast("double")
    # MSLE's log is undefined at or below -1: such rows count as NULL (the metric then is too).
    # Computed by Spark (StrictMath's log1p), as every per-row value the sums add;
    # ``_array_partial`` computes the same doubles in NumPy.
    log_error = F.when(F.least("label", "pred") > -1.0,
                       F.pow(F.log1p("label") - F.log1p("pred"), 2))
    scored = (df.select(label.alias("label"), pred.alias("pred"))
              .withColumn("err", F.col("label") - F.col("pred"))
              .withColumn("log_error", log_error)
              .persist(StorageLevel.MEMORY_AND_DISK))  # read twice: sums, then the median's bin
    sums, counts, histogram = _merge(scored.mapInArrow(_partials, _PARTIAL_SCHEMA).collect())
    if any(s.needs_spark for s in sums.values()):  # values beyond the Arrow range
        values = _spark_sums(scored)
    else:
        values = {name: s.value() for name, s in sums.items()}
    metrics = _combine(values, counts)
    abs_err = F.abs(F.col("err"))

    def in_bins(first: int, last: int) -> np.ndarray:
        picked = scored.where(_in_bins(abs_err, first, last)).select(abs_err).collect()
        return np.array([row[0] for row in picked], np.float64)

    metrics["median_absolute_error"] = _exact_median(counts["err"], histogram, in_bins)
    scored.unpersist()
    return df.sparkSession.createDataFrame(
        [tuple(metrics[name] for name in schemas.EXPLICIT_METRICS)], schemas.EVALUATE_SCHEMA)


def prediction_metrics(predictions) -> Optional[Dict[str, Optional[float]]]:
    """The six explicit metrics of rows a fit holds as NumPy arrays, with no table read:
    ``predictions.map(fn)`` runs ``fn(ratings, predictions)`` on each part of the rows in a
    task and returns the results in order (``recsys.model.bqml_als.TrainingPredictions``).

    The same values as ``regression_metrics`` over a table of the same rows and predictions,
    to the last bit: the per-row values are the same doubles (``strict_math.log1p`` is
    Spark's) and the sums the same exact sums. None when a value is beyond the Arrow range
    (Spark's DECIMAL sum must add it: the caller then scores the table)."""
    sums, counts, histogram = _merge(predictions.map(_array_partial))
    if any(s.needs_spark for s in sums.values()):
        return None
    metrics = _combine({name: s.value() for name, s in sums.items()}, counts)

    def in_bins(first: int, last: int) -> np.ndarray:
        found = predictions.map(functools.partial(_array_bin_values, first=first, last=last))
        return np.concatenate(found) if found else np.zeros(0)

    metrics["median_absolute_error"] = _exact_median(counts["err"], histogram, in_bins)
    return {name: metrics[name] for name in schemas.EXPLICIT_METRICS}


def _merge(parts):
    """Every sum of ``SUMS`` (``FixedPointSum``), the counts of ``_COUNTS`` with the lowest
    label or prediction, and the histogram of |err| (bins ascending, their counts), from the
    tasks' partials (``_Partial.result``; rows of ``_PARTIAL_SCHEMA``)."""
    sums = {name: FixedPointSum() for name in SUMS}
    counts = dict.fromkeys(_COUNTS, 0)
    lows, bins, bin_counts = [], [], []
    for part in parts:
        decoded = json.loads(part["sums"])
        sums = {name: sums[name].merge(FixedPointSum.from_json(decoded[name])) for name in SUMS}
        counts = {name: counts[name] + n for name, n in zip(_COUNTS, part["counts"])}
        if part["lowest"] is not None:
            lows.append(part["lowest"])
        bins += part["bins"]
        bin_counts += part["bin_counts"]
    counts["lowest"] = _spark_min(np.array(lows))
    keys, where = np.unique(np.array(bins, np.int64), return_inverse=True)
    histogram = np.zeros(len(keys), np.int64)
    np.add.at(histogram, where, np.array(bin_counts, np.int64))
    return sums, counts, (keys, histogram)


class _Partial:
    """One task's part of the metrics: exact partial sums, counts, the lowest label or
    prediction and the histogram of |err|."""

    def __init__(self):
        self.sums = {name: FixedPointSum() for name in SUMS}
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.lows, self.keys = [], []

    def add(self, rows: int, label: np.ndarray, pred: np.ndarray, err: np.ndarray,
            log_error: np.ndarray) -> None:
        """``rows`` rows, with the non-NULL values of each per-row quantity."""
        for name, values in (("abs_err", err), ("sq_err", err * err),
                             ("log_error", log_error), ("label", label),
                             ("label_sq", label * label), ("err", err)):
            self.sums[name].add(values)
        for name, size in zip(_COUNTS, (rows, len(err), len(log_error), len(label))):
            self.counts[name] += size
        self.lows.append(_spark_min(np.concatenate([label, pred])))
        self.keys.append(_bins(np.abs(err)))

    def result(self) -> dict:
        """The part as one row of ``_PARTIAL_SCHEMA`` (a dict)."""
        sums = dict(self.sums, abs_err=self.sums["abs_err"].absolute())  # |err| rounds as err
        lows = [v for v in self.lows if v is not None]
        bins, bin_counts = np.unique(np.concatenate(self.keys or [np.zeros(0, np.int64)]),
                                     return_counts=True)
        return {"sums": json.dumps({name: s.to_json() for name, s in sums.items()}),
                "counts": [self.counts[name] for name in _COUNTS],
                "lowest": _spark_min(np.array(lows)),
                "bins": bins.tolist(), "bin_counts": bin_counts.tolist()}


_PARTIAL_ARROW_SCHEMA = pa.schema([("sums", pa.string()), ("counts", pa.list_(pa.int64())),
                                   ("lowest", pa.float64()), ("bins", pa.list_(pa.int64())),
                                   ("bin_counts", pa.list_(pa.int64()))])


@python_task
def _partials(batches):
    """The mapInArrow function: one row per task with its ``_Partial``."""
    part = _Partial()
    for batch in batches:
        part.add(batch.num_rows, *(_valid(batch.column(c))
                                   for c in ("label", "pred", "err", "log_error")))
    yield pa.RecordBatch.from_pydict({k: [v] for k, v in part.result().items()},
                                     schema=_PARTIAL_ARROW_SCHEMA)


def _array_partial(label: np.ndarray, pred: np.ndarray) -> dict:
    """``_Partial.result`` of rows given as arrays, each per-row value as Spark computes it in
    ``regression_metrics`` (LEAST with NaN above every number, ``log1p``, ``pow(x, 2)``)."""
    err = label - pred
    with np.errstate(invalid="ignore"):
        lowest = np.fmin(label, pred)
        defined = (lowest > -1.0) | np.isnan(lowest)
        log_error = strict_math.square(strict_math.log1p(label[defined])
                                       - strict_math.log1p(pred[defined]))
    part = _Partial()
    part.add(len(label), label, pred, err, log_error)
    return part.result()


def _array_bin_values(label: np.ndarray, pred: np.ndarray, *, first: int,
                      last: int) -> np.ndarray:
    """The |err| of rows given as arrays that fall in the histogram bins ``first``..``last``."""
    abs_err = np.abs(label - pred)
    keys = _bins(abs_err)
    return abs_err[(keys >= first) & (keys <= last)]


def _bins(abs_err: np.ndarray) -> np.ndarray:
    """Each non-negative value's histogram bin; NaN in ``_NAN_BIN``, after every number."""
    keys = abs_err.view(np.int64) >> _BIN_SHIFT
    return np.where(np.isnan(abs_err), _NAN_BIN, keys)


def _spark_min(values: np.ndarray) -> Optional[float]:
    """MIN as Spark takes it over non-NULL doubles: NaN is above every number; None if empty."""
    if not len(values):
        return None
    numbers = values[~np.isnan(values)]
    return float(numbers.min()) if len(numbers) else math.nan


def _valid(column: pa.Array) -> np.ndarray:
    """The non-NULL values of a DOUBLE column."""
    return column.drop_null().to_numpy(zero_copy_only=False)


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


def _exact_median(n: int, histogram, values_in_bins) -> Optional[float]:
    """Median of |err| as Spark's ``percentile(abs(err), 0.5)`` computes it (``n`` non-NULL
    values, NaN above every number), from the histogram (bins ascending, their counts): the
    bins holding the two middle ranks are found by counting, and only their values
    (``values_in_bins(first, last)``) are collected and sorted."""
    if not n:
        return None
    keys, counts = histogram
    position = (n - 1) * 0.5  # percentile's interpolation between the two middle values
    ranks = (int(position), -(-int(position * 2) // 2))
    ends = np.cumsum(counts)  # ranks below the end of each bin
    first, last = (int(np.searchsorted(ends, rank, side="right")) for rank in ranks)
    below = int(ends[first] - counts[first])  # values in the bins before the first wanted one
    values = np.sort(np.asarray(values_in_bins(int(keys[first]), int(keys[last])), np.float64))
    lower, upper = values[ranks[0] - below], values[ranks[1] - below]
    return float(lower) if ranks[0] == ranks[1] else float(0.5 * lower + 0.5 * upper)


def _in_bins(value: Column, first: int, last: int) -> Column:
    """Whether a non-negative double ``value`` is in the histogram bins ``first``..``last``, as
    a Spark filter (the bins' bounds are doubles: a bin holds one leading-bits pattern)."""
    def double(bits: int) -> float:
        return struct.unpack("<d", struct.pack("<q", bits))[0]

    if first == _NAN_BIN:
        return F.isnan(value)
    inside = value >= double(first << _BIN_SHIFT)
    upper = (last + 1) << _BIN_SHIFT
    if upper <= _INF_BITS:  # the bins end at a number (or at infinity, a bin of its own)
        return inside & (value < double(upper))
    # The last wanted bin is infinity's; NaN, in a bin of its own, is wanted or not.
    return inside & ~F.isnan(value) if last != _NAN_BIN else inside | F.isnan(value)


def metrics_dict(metrics: DataFrame) -> Dict[str, float]:
    """The one-row metrics table as an ordered dict."""
    row = metrics.head()
    return {name: (None if row[name] is None else float(row[name]))
            for name in schemas.EXPLICIT_METRICS}
