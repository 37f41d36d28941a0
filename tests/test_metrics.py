"""ML.EVALUATE metrics against a numpy oracle."""

import numpy as np
import pytest

from oracles import regression_metrics as numpy_metrics
from recsys.evaluation.metrics import metrics_dict, regression_metrics

pytestmark = pytest.mark.spark


@pytest.mark.parametrize("n", [1000, 999])  # even and odd counts: the median differs
def test_metrics_match_numpy(spark, n):
    rng = np.random.default_rng(n)
    label = rng.integers(1, 6, size=n).astype(float)
    pred = label + rng.normal(0.3, 0.8, size=n)  # biased, so r2 and explained variance differ
    pred = np.maximum(pred, -0.9)                 # keep LN(1 + prediction) defined
    df = spark.createDataFrame([(float(a), float(b)) for a, b in zip(label, pred)],
                               "rating double, predicted_rating double")
    got = metrics_dict(regression_metrics(df))
    want = numpy_metrics(label, pred)
    assert list(got) == list(want)  # BigQuery ML's column order
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
    assert got["r2_score"] < got["explained_variance"]


def test_hand_computed_small_table(spark):
    # errors 1, -1, 2, 0: MAE 1, MSE 1.5, median |e| 1, var(label) = 1.25
    df = spark.createDataFrame([(1.0, 0.0), (2.0, 3.0), (3.0, 1.0), (4.0, 4.0)],
                               "rating double, predicted_rating double")
    got = metrics_dict(regression_metrics(df))
    assert got["mean_absolute_error"] == pytest.approx(1.0)
    assert got["mean_squared_error"] == pytest.approx(1.5)
    assert got["median_absolute_error"] == pytest.approx(1.0)
    assert got["r2_score"] == pytest.approx(1 - 6.0 / (4 * 1.25))
    assert got["explained_variance"] == pytest.approx(1 - 1.25 / 1.25)  # var(err)=1.25


def test_custom_column_names(spark):
    df = spark.createDataFrame([(1.0, 2.0), (3.0, 3.0)], "stars double, guess double")
    got = metrics_dict(regression_metrics(df, col_rating="stars", col_prediction="guess"))
    assert got["mean_absolute_error"] == pytest.approx(0.5)


def test_log_error_is_null_where_undefined(spark):
    df = spark.createDataFrame([(1.0, -1.5), (3.0, 3.0)], "rating double, predicted_rating double")
    got = metrics_dict(regression_metrics(df))
    assert got["mean_squared_log_error"] is None
    assert got["mean_absolute_error"] == pytest.approx(1.25)


@pytest.mark.parametrize("n", [300_000, 300_001])
def test_median_is_exact_where_only_the_middle_is_collected(spark, n):
    """Enough rows that the middle bin holds a small share of them; every error distinct but
    for a block of repeated rows (ties)."""
    rng = np.random.default_rng(n)
    label = rng.integers(1, 11, size=n) / 2.0
    pred = label + rng.normal(0.0, 1.0, size=n)
    pred[: n // 10] = pred[n // 10: 2 * (n // 10)]  # repeated errors
    label[: n // 10] = label[n // 10: 2 * (n // 10)]
    pdf = __import__("pandas").DataFrame({"rating": label, "predicted_rating": pred})
    got = metrics_dict(regression_metrics(spark.createDataFrame(pdf)))
    assert got["median_absolute_error"] == np.median(np.abs(label - pred))


@pytest.mark.parametrize("case", ["middle across two bins", "one distinct value",
                                  "NaN, infinities and NULLs", "NaN in the middle"])
def test_median_and_msle_at_the_edges_as_spark_sql_gives_them(spark, case):
    """The median and MSLE's definedness (the lowest label or prediction) against Spark SQL's
    own percentile and MIN over the same rows (NaN above every number)."""
    rows = {
        # |err| 1.0 and 1.0 + 2**-40 share a bin, 1.5 and 2.0 have their own: the middle pair
        # (1.0 + 2**-40, 1.5) spans two bins, the first of them holding a smaller value too.
        "middle across two bins": [(2.0, 1.0), (1.0, 2.0 + 2 ** -40), (3.0, 1.5), (4.0, 2.0)],
        "one distinct value": [(4.0, 3.0)] * 5,
        "NaN, infinities and NULLs": [(1.0, float("nan")), (2.0, float("inf")), (None, 1.0),
                                      (3.0, None), (1.0, 1.5), (-2.0, 0.5)],
        "NaN in the middle": [(1.0, float("nan")), (2.0, float("nan")), (1.0, 1.25)],
    }[case]
    df = spark.createDataFrame(rows, "rating double, predicted_rating double")
    got = metrics_dict(regression_metrics(df))
    want = df.selectExpr(
        "percentile(abs(rating - predicted_rating), 0.5) AS median",
        "least(min(rating), min(predicted_rating)) AS lowest").head()
    median = got["median_absolute_error"]
    assert (median == want["median"]) or (np.isnan(median) and np.isnan(want["median"]))
    lowest = want["lowest"]
    defined = lowest is not None and (np.isnan(lowest) or lowest > -1.0)
    assert (got["mean_squared_log_error"] is not None) == defined
