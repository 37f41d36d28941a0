"""ML.EVALUATE metrics against a numpy oracle."""

import numpy as np
import pandas as pd
import pytest

from oracles import regression_metrics as numpy_metrics
from recsys.evaluation.metrics import metrics_dict, prediction_metrics, regression_metrics

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
    pdf = pd.DataFrame({"rating": label, "predicted_rating": pred})
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


class ArrayParts:
    """Rows as NumPy (rating, prediction) arrays cut into parts: the interface
    ``prediction_metrics`` reads (``recsys.model.bqml_als.TrainingPredictions``), run here on
    the driver."""

    def __init__(self, label, pred, parts):
        self.parts = list(zip(np.array_split(label, parts), np.array_split(pred, parts)))

    def map(self, fn):
        return [fn(label, pred) for label, pred in self.parts]


def same(a, b):
    """Equal to the last bit (None and NaN equal themselves)."""
    return a == b or (a is not None and b is not None and np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("case", ["ratings and predictions", "undefined log", "NaN and infinity",
                                  "one row"])
def test_metrics_of_arrays_are_the_tables_to_the_last_bit(spark, case):
    """``prediction_metrics`` (the per-row values in NumPy, rows in parts) against
    ``regression_metrics`` of the same rows in a table (the per-row values by Spark SQL): every
    metric the same double, or both NULL."""
    rng = np.random.default_rng(5)
    label = rng.integers(1, 11, size=20_001) / 2.0
    pred = label + rng.normal(0.2, 0.9, size=len(label))  # some predictions below -1 ...
    if case == "ratings and predictions":
        pred = np.maximum(pred, -0.999)                    # ... kept above it here
    if case == "NaN and infinity":
        pred[[3, 70, 500]] = [np.nan, np.inf, -np.inf]
    if case == "one row":
        label, pred = label[:1], pred[:1]
    pdf = pd.DataFrame({"rating": label, "predicted_rating": pred})
    want = metrics_dict(regression_metrics(spark.createDataFrame(pdf)))
    got = prediction_metrics(ArrayParts(label, pred, parts=3))
    assert list(got) == list(want)
    for name in want:
        assert same(got[name], want[name]), (name, got[name], want[name])
    if case == "undefined log":
        assert got["mean_squared_log_error"] is None


@pytest.mark.parametrize("path", ["broadcast", "join", "split"])
def test_a_fit_scores_its_own_training_ratings_as_the_table_is_scored(spark, path):
    """ML.EVALUATE at training time from the predictions the bigquery_ml fit holds, with no
    table read (``fit(score_training=...)``), on the whole shipped sample (100,004 ratings):
    every metric the same double as scoring the training table (``model_metrics_for``) and
    NumPy's formulas on the model's own tables. Where the fit does not hold them (the join
    path, a split's evaluation rows) it leaves the metrics to the table."""
    from conftest import SAMPLE
    from recsys.config import ModelConfig
    from recsys.evaluation import model_metrics_for
    from recsys.model import fit

    frame = pd.read_csv(f"{SAMPLE}/ratings.csv").rename(
        columns={"userId": "user_id", "movieId": "item_id"})
    ratings = spark.createDataFrame(frame[["user_id", "item_id", "rating"]]).cache()
    held = spark.createDataFrame(frame[["user_id", "item_id", "rating"]].head(500))
    cfg = ModelConfig(num_factors=8, l2_reg=9.83, max_iterations=2, early_stop=False, seed=3,
                      broadcast_max_mb=0.0 if path == "join" else 64.0)
    calls = []

    def score(predictions):
        calls.append(predictions.n_ratings)
        return prediction_metrics(predictions)

    model = fit(ratings, cfg, held if path == "split" else None, score_training=score)
    if path != "broadcast":
        assert calls == [] and model.training_metrics == {}
        return
    assert calls == [len(frame)] == [100_004]
    got = model.training_metrics
    table = model_metrics_for(model, ratings, "rating")
    for name in table:
        assert same(got[name], table[name]), (name, got[name], table[name])
    users = model.users.toPandas().set_index("user_id")
    items = model.items.toPandas().set_index("item_id")
    u, i = users.loc[frame.user_id], items.loc[frame.item_id]
    pred = (model.global_intercept + u.intercept.to_numpy() + i.intercept.to_numpy()
            + np.einsum("nk,nk->n", np.stack(u.factors.to_numpy()), np.stack(i.factors.to_numpy())))
    want = numpy_metrics(frame.rating.to_numpy(), pred)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name
