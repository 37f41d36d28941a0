"""recsys.sums: the Arrow-side fixed-point sums equal Spark's DECIMAL(38, 18) sums to the last
bit, value by value and in total, whatever the batches and their order."""

import decimal
import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys.sums import ARROW_MAX, FixedPointSum, _to_units, exact_sum

pytestmark = pytest.mark.spark


def _values() -> np.ndarray:
    """Doubles of every band of magnitude, ties at the 18th decimal, powers of two, repeats."""
    rng = np.random.default_rng(15)
    parts = [
        rng.integers(1, 6, 2000) - (3.6 + rng.normal(0, 1.1, 2000)),       # rating errors
        (rng.normal(0, 1, 2000) * 0.05) ** 2,                              # small squares
        10.0 ** rng.uniform(-24, 14.9, 4000) * rng.choice([-1, 1], 4000),  # every band
        (rng.integers(0, 10 ** 6, 1000) + 0.5) * 1e-18,                    # ties, tiny
        (rng.integers(0, 10 ** 4, 1000) + 0.5) * 1e-18 + 1e-6,             # ties, small
        2.0 ** rng.integers(-70, 45, 1000),                                # powers of two
        np.array([0.01, 1e-6, -0.01, 5e-19, -5e-19, 0.0, -0.0, 1e-300]),   # band edges
    ]
    return np.concatenate(parts)


def test_each_value_is_rounded_as_spark_casts_it(spark):
    values = _values()
    df = spark.createDataFrame([(float(v),) for v in values], "x double")
    got = df.select(F.col("x").cast("decimal(38,18)").alias("d")).collect()
    context = decimal.Context(prec=100)
    want = [int(row["d"].scaleb(18, context)) for row in got]
    for v, units in zip(values.tolist(), want):
        one = FixedPointSum()
        one.add(np.array([v]))
        assert one.units == units, repr(v)
        assert _to_units(decimal.Decimal(repr(v))) == units, repr(v)  # the repeated-values path


def test_total_equals_exact_sum_in_any_order(spark):
    values = _values()
    rng = np.random.default_rng(0)
    df = spark.createDataFrame([(float(v),) for v in values], "x double")
    want = df.agg(exact_sum(F.col("x")).alias("s"), exact_sum(F.abs("x")).alias("a")).head()
    for _ in range(3):
        total = FixedPointSum()
        for chunk in np.array_split(rng.permutation(values), 7):
            part = FixedPointSum()
            part.add(chunk)
            total = FixedPointSum.from_json(part.merge(total).to_json())
        assert total.value() == want["s"]
        assert total.absolute().value() == want["a"]


def test_repeated_values_are_counted_by_value(spark):
    ratings = np.tile(np.array([0.5, 1.0, 3.5, 4.0, 5.0]), 2000)
    df = spark.createDataFrame([(float(v),) for v in ratings], "x double")
    want = df.agg(exact_sum(F.col("x") * F.col("x"))).head()[0]
    total = FixedPointSum()
    total.add(ratings * ratings)
    assert total.value() == want


def test_nan_and_empty_and_beyond():
    s = FixedPointSum()
    assert s.value() is None  # SUM of nothing is NULL
    s.add(np.array([math.nan, math.inf]))
    assert s.value() is None and s.decimals == 0  # not decimals: Spark's cast gives NULL
    s.add(np.array([ARROW_MAX]))
    assert s.needs_spark  # Java writes such doubles with other digits: Spark's to sum
