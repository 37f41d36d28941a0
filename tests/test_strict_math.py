"""recsys.strict_math against Spark itself, bit for bit: ``log1p`` against Spark SQL's
``log1p`` (StrictMath.log1p), ``square`` against Spark's ``pow(d, 2)``."""

import numpy as np
import pyarrow as pa
from pyspark.sql import functions as F

from recsys.strict_math import log1p, square


def _ulps_around(center_bits: int, n: int) -> np.ndarray:
    """The ``2n`` doubles whose bit patterns are ``center_bits - n .. center_bits + n - 1``."""
    center = np.uint64(center_bits & (2**64 - 1)).view(np.int64)
    return (center + np.arange(-n, n, dtype=np.int64)).view(np.float64)


def _spark_log1p(spark, x: np.ndarray):
    """Spark's inputs as read back, and its ``log1p`` of each. Spark SQL gives NULL for
    x <= -1; there the expected value is StrictMath.log1p's own, called by Spark's
    ``java_method`` (its string is Java's Double.toString, which reads back exactly)."""
    df = spark.createDataFrame(pa.table({"x": pa.array(x, type=pa.float64())}))
    out = df.select(
        "x",
        F.log1p("x").alias("y"),
        F.when(F.log1p("x").isNull(),
               F.expr("java_method('java.lang.StrictMath', 'log1p', x)")).alias("strict"),
    ).toArrow()
    back = out.column("x").to_numpy()
    y = out.column("y")
    null = y.is_null().to_numpy(zero_copy_only=False)
    y = y.fill_null(0.0).to_numpy()
    strict = out.column("strict").to_pylist()
    assert np.array_equal(null, back <= -1.0), "Spark's log1p is NULL exactly where x <= -1"
    expected = y.copy()
    expected[null] = [float(s) for s, is_null in zip(strict, null) if is_null]
    return back, expected


def _assert_same_bits(x, expected, got):
    same = (expected.view(np.int64) == got.view(np.int64)) | (np.isnan(expected) & np.isnan(got))
    bad = np.flatnonzero(~same)
    lines = [f"  x={x[i].hex()} ({x[i]!r}): Spark {expected[i]!r} ({expected[i].hex()}),"
             f" got {got[i]!r} ({got[i].hex()})" for i in bad[:10]]
    assert bad.size == 0, f"{bad.size} of {x.size} differ:\n" + "\n".join(lines)


def _check_log1p(spark, x):
    back, expected = _spark_log1p(spark, x)
    same_input = (back.view(np.int64) == x.view(np.int64)) | (np.isnan(back) & np.isnan(x))
    assert same_input.all(), "the inputs came back from Spark in order and unchanged"
    _assert_same_bits(back, expected, log1p(back))


SPECIAL = [0.0, -0.0, -1.0, -1 + 2.0**-53, -1 - 2.0**-52, -2.0, np.inf, -np.inf, np.nan,
           5e-324, -5e-324, 2.0**-1074 * 3, 2.0**-60, -2.0**-60, 2.0**-54, 2.0**-29, -2.0**-29,
           2.0**-20, 0.41421356, 0.4142135623730950, -0.29289321881, -0.2928932188134524,
           2.0**53 - 1, 2.0**53, 2.0**53 + 2, 1e300, 1.7976931348623157e308]
RATINGS = list(np.arange(1, 11) * 0.5)


def test_log1p_special_values_and_ratings(spark):
    x = np.array(SPECIAL + RATINGS + [-r for r in RATINGS], dtype=np.float64)
    _check_log1p(spark, x)
    assert log1p(np.array([-0.0])).view(np.int64)[0] == np.float64(-0.0).view(np.int64)
    assert log1p(np.array([], dtype=np.float64)).shape == (0,)


def _branch_points(rng) -> np.ndarray:
    parts = []
    # Each high-word test of s_log1p.c, both signs where the test is on |x|: 2000 ulps either
    # side of the high word's first double, and doubles of the 400 high words around it.
    for hi in (0x3FDA827A, 0xBFD2BEC3, 0x3E200000, 0xBE200000, 0x3C900000, 0xBC900000,
               0x43400000, 0xBFF00000, 0x7FF00000, 0x00100000):
        parts.append(_ulps_around(hi << 32, 2000))
        words = (hi + np.arange(-200, 200, dtype=np.int64)) & 0xFFFFFFFF
        parts.append(((words << 32) | rng.integers(0, 1 << 32, 400)).view(np.float64))
    # 1+x (or x itself from 2**53 on) around the 0x6a09e mantissa threshold (sqrt(2)*2**e),
    # around 2**e (the |f| < 2**-20 path, hu == 0, on both sides of 2**e).
    sqrt2 = np.uint64(0x3FF6A09E00000000).view(np.float64)
    for e in (-20, -10, -3, -2, -1, 0, 1, 2, 5, 20, 52, 53, 54, 100, 1000):
        for u in (np.ldexp(sqrt2, e), np.ldexp(1.0, e)):
            center = u - 1.0 if e < 53 else u
            parts.append(_ulps_around(int(np.float64(center).view(np.int64)), 1000))
            # |f| < 2**-20 spans 2**32 ulps of u: random doubles in it too.
            parts.append(u * (1.0 + rng.uniform(-2.0**-20, 2.0**-20, 300)) - (e < 53))
    return np.concatenate(parts)


def test_log1p_around_every_branch_point(spark):
    x = _branch_points(np.random.default_rng(7))
    _check_log1p(spark, x)


def test_log1p_random_doubles(spark):
    rng = np.random.default_rng(20260611)
    n = 100_000
    predictions = rng.uniform(-1.0, 10.0, n)
    magnitudes = 10.0 ** rng.uniform(-300.0, 300.0, n) * rng.choice([-1.0, 1.0], n)
    patterns = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False).view(np.float64)
    x = np.concatenate([predictions, magnitudes, patterns])
    assert x.size == 300_000
    _check_log1p(spark, x)


def test_spark_pow_2_is_the_numpy_square(spark):
    rng = np.random.default_rng(11)
    n = 100_000
    ratings = rng.integers(1, 11, n) * 0.5
    predictions = rng.uniform(-1.0, 10.0, n)
    d = np.concatenate([ratings - predictions, rng.normal(0.0, 1e-160, 1000),
                        rng.normal(0.0, 1e160, 1000),
                        [0.0, -0.0, 5e-324, -1e300, np.inf, -np.inf, np.nan]])
    df = spark.createDataFrame(pa.table({"d": pa.array(d, type=pa.float64())}))
    out = df.select("d", F.pow("d", 2).alias("sq")).toArrow()
    back = out.column("d").to_numpy()
    _assert_same_bits(back, out.column("sq").to_numpy(), square(back))
    with np.errstate(over="ignore"):
        _assert_same_bits(back, out.column("sq").to_numpy(), back * back)
