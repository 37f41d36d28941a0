"""DATA_SPLIT_METHOD: row counts checked against pandas, partition-independence, validation."""

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from recsys.model.split import SplitResult, split_ratings

pytestmark = pytest.mark.spark

SCHEMA = "row_id long, user_id int, item_id int, rating double, ts long, is_eval boolean"


def ratings_pdf(n=3000, seed=0, null_ts=0, ts_values=None):
    """Unique (user, item) pairs with a rating, an integer time and a boolean flag."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(200 * 300, size=n, replace=False)
    ts = rng.integers(0, ts_values, size=n) if ts_values else rng.permutation(n) * 10
    pdf = pd.DataFrame({
        "row_id": np.arange(n, dtype="int64"),
        "user_id": (pairs // 300).astype("int32"),
        "item_id": (pairs % 300).astype("int32"),
        "rating": rng.integers(1, 11, size=n) / 2.0,
        "ts": pd.array(ts, dtype="Int64"),
        "is_eval": pd.array(rng.random(n) < 0.25, dtype="boolean"),
    })
    if null_ts:
        pdf.loc[rng.choice(n, size=null_ts, replace=False), "ts"] = pd.NA
    return pdf


def to_spark(spark, pdf):
    rows = [tuple(None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in r)
            for r in pdf.itertuples(index=False)]
    return spark.createDataFrame(rows, SCHEMA)


def rows(df):
    return Counter(tuple(r) for r in df.collect())


def ids(df):
    return {r["row_id"] for r in df.select("row_id").collect()}


def assert_partition(df, result):
    """train + eval is the input, as a multiset, with the same columns and types."""
    assert result.train.schema == df.schema
    assert result.eval.schema == df.schema
    train, evals = rows(result.train), rows(result.eval)
    assert not (set(train) & set(evals))
    assert train + evals == rows(df)


def binomial_band(n, p, sigmas=5.0):
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def test_no_split_is_the_default_and_returns_input(spark):
    df = to_spark(spark, ratings_pdf(50))
    result = split_ratings(df)
    assert isinstance(result, SplitResult)
    assert (result.method, result.eval, result.eval_fraction) == ("NO_SPLIT", None, 0.0)
    assert rows(result.train) == rows(df)
    assert (result.eval_only_users, result.eval_only_items) == (0, 0)


@pytest.mark.parametrize("fraction", [0.2, 0.35])
def test_random_fraction_within_binomial_band_and_partitions_input(spark, fraction):
    n = 20000
    rng = np.random.default_rng(3)
    pairs = rng.choice(1000 * 1000, size=n, replace=False)
    df = spark.createDataFrame(
        [(int(i), int(p // 1000), int(p % 1000)) for i, p in enumerate(pairs)],
        "row_id long, user_id int, item_id int")
    result = split_ratings(df, method="random", eval_fraction=fraction)
    assert (result.method, result.eval_fraction) == ("RANDOM", fraction)
    lo, hi = binomial_band(n, fraction)  # 5 sd: a correct split lands outside with p < 1e-6
    assert lo <= result.eval.count() <= hi
    assert_partition(df, result)


def test_random_is_deterministic_across_partitioning_and_row_order(spark):
    pdf = ratings_pdf(3000, seed=1)
    df = to_spark(spark, pdf)
    shuffled = to_spark(spark, pdf.sample(frac=1.0, random_state=9)).repartition(7)
    a = split_ratings(df, method="RANDOM", seed=7)
    b = split_ratings(shuffled, method="RANDOM", seed=7)
    c = split_ratings(df, method="RANDOM", seed=8)
    assert ids(a.eval) == ids(b.eval)
    assert ids(a.train) == ids(b.train)
    assert ids(a.eval) != ids(c.eval)
    # Same (user, item) key -> same side: a duplicated key never straddles the split.
    dup = df.unionByName(df.withColumn("row_id", F.col("row_id") + 100000))
    d = split_ratings(dup, method="RANDOM", seed=7)
    assert {i % 100000 for i in ids(d.eval)} == ids(a.eval)
    assert d.eval.count() == 2 * a.eval.count()


def test_custom_true_and_null_are_eval(spark):
    pdf = ratings_pdf(1000, seed=2)
    pdf.loc[pdf.index[:37], "is_eval"] = pd.NA
    df = to_spark(spark, pdf)
    result = split_ratings(df, method="Custom", split_col="is_eval")
    expected_eval = set(pdf.loc[pdf["is_eval"].fillna(True).astype(bool), "row_id"])
    expected_train = set(pdf.loc[pdf["is_eval"].eq(False).fillna(False).astype(bool), "row_id"])
    assert ids(result.eval) == expected_eval
    assert ids(result.train) == expected_train
    assert result.method == "CUSTOM"
    assert result.eval_fraction == pytest.approx(len(expected_eval) / len(pdf))
    assert_partition(df, result)


def expected_seq_eval(pdf, fraction):
    """Independent SEQ: sort in pandas, threshold = first eval value, ties and NULLs go to eval."""
    n = len(pdf)
    k = int(math.floor(fraction * n + 0.5))
    ordered = pdf.sort_values("ts", na_position="last", kind="stable")
    non_null = ordered["ts"].dropna()
    if n - k >= len(non_null):
        return set(pdf.loc[pdf["ts"].isna(), "row_id"])
    threshold = non_null.iloc[n - k]
    return set(pdf.loc[pdf["ts"].isna() | (pdf["ts"] >= threshold), "row_id"])


def test_seq_distinct_values_gives_exactly_the_last_rows(spark):
    pdf = ratings_pdf(2001, seed=4)  # distinct ts: exact counts
    df = to_spark(spark, pdf).withColumn("ts", F.expr("timestamp_seconds(ts)"))
    result = split_ratings(df, method="SEQ", split_col="ts", eval_fraction=0.3)
    k = round(0.3 * 2001)  # 600.3 -> 600
    assert ids(result.eval) == set(pdf.sort_values("ts")["row_id"].iloc[-k:])
    assert (result.method, result.eval_fraction) == ("SEQ", 0.3)
    assert_partition(df, result)


@pytest.mark.parametrize("null_ts,fraction", [(0, 0.2), (40, 0.2), (700, 0.1)])
def test_seq_ties_and_nulls_go_to_eval(spark, null_ts, fraction):
    pdf = ratings_pdf(1500, seed=5, null_ts=null_ts, ts_values=60)  # ~25 rows per ts value
    df = to_spark(spark, pdf)
    result = split_ratings(df, method="seq", split_col="ts", eval_fraction=fraction)
    expected = expected_seq_eval(pdf, fraction)
    assert ids(result.eval) == expected
    assert len(expected) > round(fraction * len(pdf))  # ties / NULLs really pushed eval past k
    train_ts = pdf.loc[pdf["row_id"].isin(ids(result.train)), "ts"]
    eval_ts = pdf.loc[pdf["row_id"].isin(expected), "ts"].dropna()
    assert train_ts.notna().all()
    assert eval_ts.empty or train_ts.max() < eval_ts.min()  # no value on both sides
    shuffled = to_spark(spark, pdf.sample(frac=1.0, random_state=1)).repartition(7)
    assert ids(split_ratings(shuffled, method="SEQ", split_col="ts",
                             eval_fraction=fraction).eval) == expected
    assert_partition(df, result)


def keyed_range(spark, n):
    # Unique (user, item) per id; cheap and no driver-side data.
    return spark.range(n).select(F.col("id").alias("row_id"),
                                 (F.col("id") % 997).cast("int").alias("user_id"),
                                 (F.col("id") / 997).cast("int").alias("item_id"))


def test_auto_split_below_500_does_not_split(spark):
    result = split_ratings(keyed_range(spark, 499), method="AUTO_SPLIT", eval_fraction=0.5)
    assert (result.method, result.eval, result.eval_fraction) == ("NO_SPLIT", None, 0.0)
    assert result.train.count() == 499


@pytest.mark.parametrize("n", [500, 50000])
def test_auto_split_middle_regime_is_random_twenty_percent(spark, n):
    df = keyed_range(spark, n)
    result = split_ratings(df, method="auto_split", eval_fraction=0.5)  # fraction is ignored
    assert (result.method, result.eval_fraction) == ("RANDOM", 0.2)
    lo, hi = binomial_band(n, 0.2)
    n_eval, n_train = result.eval.count(), result.train.count()
    assert lo <= n_eval <= hi and n_eval + n_train == n
    assert ids(result.eval) == ids(split_ratings(df, method="RANDOM", eval_fraction=0.2).eval)


def test_auto_split_above_50000_takes_exactly_10000_rows(spark):
    n = 50001
    df = keyed_range(spark, n)
    result = split_ratings(df, method="AUTO_SPLIT")
    assert result.method == "RANDOM"
    assert result.eval_fraction == pytest.approx(10000 / n)
    eval_ids = ids(result.eval)
    assert len(eval_ids) == 10000
    assert len(eval_ids | ids(result.train)) == n and not (eval_ids & ids(result.train))
    # A random pick, not the first rows: about a fifth of the low ids land in eval.
    assert 1500 < sum(1 for i in eval_ids if i < 10000) < 2500
    again = split_ratings(keyed_range(spark, n).orderBy(F.desc("row_id")).repartition(7),
                          method="AUTO_SPLIT")
    assert ids(again.eval) == eval_ids
    assert ids(split_ratings(df, method="AUTO_SPLIT", seed=1).eval) != eval_ids


def test_eval_only_users_and_items_are_counted_not_fixed(spark):
    data = [  # (user, item, is_eval)
        (1, 10, False), (2, 10, False), (2, 20, False),
        (1, 20, True), (3, 10, True), (3, 30, True), (4, 30, True),
    ]
    df = spark.createDataFrame(data, "user_id int, item_id int, is_eval boolean")
    result = split_ratings(df, method="CUSTOM", split_col="is_eval")
    assert result.eval_only_users == 2   # users 3 and 4 have eval rows only
    assert result.eval_only_items == 1   # item 30
    assert result.eval.count() == 4 and result.train.count() == 3  # nothing moved to train


def test_eval_only_counts_match_pandas_on_a_random_split(spark):
    pdf = ratings_pdf(800, seed=6)
    result = split_ratings(to_spark(spark, pdf), method="RANDOM", eval_fraction=0.5)
    train = pdf[pdf["row_id"].isin(ids(result.train))]
    evals = pdf[pdf["row_id"].isin(ids(result.eval))]
    users = len(set(evals["user_id"]) - set(train["user_id"]))
    items = len(set(evals["item_id"]) - set(train["item_id"]))
    assert users > 0 and items > 0  # the fixture really has eval-only ids
    assert (result.eval_only_users, result.eval_only_items) == (users, items)


@pytest.mark.parametrize("kwargs,option", [
    ({"method": "KFOLD"}, "data_split_method"),
    ({"method": None}, "data_split_method"),
    ({"method": "RANDOM", "eval_fraction": 0.0}, "data_split_eval_fraction"),
    ({"method": "RANDOM", "eval_fraction": 1.0}, "data_split_eval_fraction"),
    ({"method": "SEQ", "split_col": "ts", "eval_fraction": float("nan")},
     "data_split_eval_fraction"),
    ({"method": "CUSTOM"}, "data_split_col"),
    ({"method": "SEQ"}, "data_split_col"),
    ({"method": "SEQ", "split_col": "missing"}, "data_split_col"),
    ({"method": "CUSTOM", "split_col": "ts"}, "data_split_col"),
    ({"method": "RANDOM", "split_col": "is_eval"}, "data_split_col"),
])
def test_invalid_options_raise_one_line_value_error(spark, kwargs, option):
    df = to_spark(spark, ratings_pdf(10))
    with pytest.raises(ValueError) as err:
        split_ratings(df, **kwargs)
    message = str(err.value)
    assert option in message and "\n" not in message
    if option == "data_split_method":
        for name in ("NO_SPLIT", "AUTO_SPLIT", "RANDOM", "CUSTOM", "SEQ"):
            assert name in message
