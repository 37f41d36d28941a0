"""Sums of DOUBLE columns that do not depend on the order Spark merges partial sums in, so
that metrics, losses and intercepts are the same to the last bit on any number of cores.

Two implementations of one definition. A value is first rounded to 18 decimals (half away from
zero) from its shortest decimal representation, which is what Spark's
``CAST(x AS DECIMAL(38, 18))`` does (``Double.toString``, then ROUND_HALF_UP); those fixed-point
values are added exactly and the total is rounded once to DOUBLE.

- ``exact_sum`` / ``exact_avg``: Spark SQL columns (DECIMAL arithmetic in the JVM);
- ``FixedPointSum``: the same sum in Arrow tasks, as an integer count of 1e-18 units (pyarrow
  formats doubles by their shortest representation too), with per-task partials combined
  exactly on the driver. About 10x cheaper than DECIMAL aggregation for the metrics'
  million-row passes (docs/performance.md).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column
from pyspark.sql import functions as F

SCALE = 18
UNIT = 10 ** SCALE
# DECIMAL(38, 18) holds magnitudes below 1e20.
LIMIT = 10 ** 20
# pyarrow's shortest form is Java's for every double below this magnitude (checked value by
# value against Spark's cast, tests/test_sums.py); from 2^53 on, Java writes integers with
# other digits. A batch of such small values also cannot overflow the int128 pyarrow adds
# DECIMAL128 values in. Larger values are left to Spark (``FixedPointSum.beyond``).
ARROW_MAX = 1e15
# Bands of magnitude by the decimals their shortest forms can have (at most 17 significant
# digits): from 0.01 up, at most 18 (the form is the fixed-point value itself); from 1e-6 up,
# at most 23 (rounded to 18 by pyarrow); below, one by one with Python's decimal.
_PLAIN_MIN, _SMALL_MIN = 1e-2, 1e-6
_PLAIN_TYPE, _SMALL_TYPE = pa.decimal128(38, SCALE), pa.decimal128(38, 24)
# Values buffered before pyarrow converts them: large batches amortise each kernel call.
_FLUSH_AT = 1 << 18
# A batch whose first _PROBE values hold at most _PROBE // 8 distinct ones is counted by value.
_PROBE = 256
# Enough digits for any fixed-point value in the exact conversions below.
_CONTEXT = decimal.Context(prec=400, Emax=999_999, Emin=-999_999)


def exact_sum(col: Column) -> Column:
    """SUM of a DOUBLE column that is the same whatever the order of the rows.

    Floating-point addition is not associative, and Spark merges partial sums in the order
    shuffle blocks arrive; each value is instead rounded to 18 decimals (a fixed, per-row step)
    and added exactly as DECIMAL(38, 18). Values must stay below 1e20 in magnitude.
    """
    return F.sum(col.cast("decimal(38,18)")).cast("double")


def exact_avg(col: Column) -> Column:
    """AVG with ``exact_sum``'s order independence (NULLs skipped, as AVG does)."""
    return exact_sum(col) / F.count(col)


@dataclass
class FixedPointSum:
    """``exact_sum`` of the values added so far, kept exactly: ``positive`` and ``negative``
    in 1e-18 units, over ``decimals`` values that are decimals (NaN and infinities are not:
    Spark's cast gives NULL for them). ``beyond`` is set once a value reaches ``ARROW_MAX``
    in magnitude: the sum must then be taken by Spark (``exact_sum``) instead.

    Positive and negative values are kept apart so that the sum of the absolute values comes
    from the same rounding (``absolute``): a decimal's rounding is symmetric in its sign.

    >>> s = FixedPointSum()
    >>> s.add(np.array([0.1, 0.2, -0.3, float("nan")]))
    >>> s.value(), s.absolute().value(), s.decimals
    (0.0, 0.6, 3)
    """

    positive: int = 0
    negative: int = 0
    decimals: int = 0
    beyond: bool = False
    _pending: list = field(default_factory=list, repr=False, compare=False)
    _repeated: dict = field(default_factory=dict, repr=False, compare=False)  # value -> count

    def add(self, values: np.ndarray) -> None:
        """Add a batch of doubles (NULLs already left out)."""
        values = values[np.isfinite(values)]
        if not len(values):
            return
        self.decimals += len(values)
        if self.beyond or np.abs(values).max() >= ARROW_MAX:
            self.beyond = True
            return
        if len(np.unique(values[:_PROBE])) <= _PROBE // 8:  # few distinct values (ratings)
            distinct, counts = np.unique(values, return_counts=True)
            for value, count in zip(distinct.tolist(), counts.tolist()):
                self._repeated[value] = self._repeated.get(value, 0) + count
            return
        self._pending.append(values)
        if sum(len(v) for v in self._pending) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._pending and not self.beyond:
            values = np.concatenate(self._pending)
            self.positive += _units(values[values > 0])
            self.negative += _units(values[values < 0])
        for value, count in self._repeated.items():
            units = count * _to_units(decimal.Decimal(repr(value)))  # repr: shortest, as pyarrow
            if value > 0:
                self.positive += units
            else:
                self.negative += units
        self._pending, self._repeated = [], {}

    def merge(self, other: "FixedPointSum") -> "FixedPointSum":
        """The sum of both parts' values (exact, so the order of merges does not matter)."""
        self._flush()
        other._flush()
        return FixedPointSum(self.positive + other.positive, self.negative + other.negative,
                             self.decimals + other.decimals, self.beyond or other.beyond)

    def absolute(self) -> "FixedPointSum":
        """The sum of the absolute values (with the same per-value rounding)."""
        self._flush()
        return FixedPointSum(self.positive - self.negative, 0, self.decimals, self.beyond)

    @property
    def needs_spark(self) -> bool:
        """True when Spark must compute this sum: a value beyond ``ARROW_MAX``, or a total
        beyond DECIMAL(38, 18) (NULL or an error there, depending on ANSI mode)."""
        return self.beyond or abs(self.units) >= LIMIT * UNIT

    @property
    def units(self) -> int:
        """The exact total, in 1e-18 units."""
        self._flush()
        return self.positive + self.negative

    def value(self) -> Optional[float]:
        """The total rounded to DOUBLE as Spark's DECIMAL-to-DOUBLE cast does (correctly);
        None where Spark's SUM is NULL (no decimal value). Not for ``needs_spark`` sums."""
        assert not self.needs_spark, "a sum beyond the Arrow range is Spark's to compute"
        if not self.decimals:
            return None
        return self.units / UNIT  # int / int: correctly rounded

    def to_json(self) -> list:
        """A JSON-safe form (Python ints of any size) for a task's partial."""
        self._flush()
        return [str(self.positive), str(self.negative), self.decimals, self.beyond]

    @classmethod
    def from_json(cls, data: list) -> "FixedPointSum":
        """The inverse of ``to_json``."""
        return cls(int(data[0]), int(data[1]), int(data[2]), bool(data[3]))


def _units(values: np.ndarray) -> int:
    """Sum of ``round_half_up(shortest decimal of v, 18) * 10**18`` over finite ``values``
    below ``ARROW_MAX`` in magnitude, exactly.

    pyarrow writes each double in its shortest form (``0.1``, ``1e-7``) and reads that text as
    DECIMAL128 exactly; each band of magnitude (``_PLAIN_MIN``) is read at a scale that holds
    all its digits, rounded to 18 decimals and added by pyarrow in int128, which cannot
    overflow below ``ARROW_MAX``.
    """
    magnitude = np.abs(values)
    plain = magnitude >= _PLAIN_MIN
    small = ~plain & (magnitude >= _SMALL_MIN)
    tiny = ~plain & ~small
    return (_decimal_sum(values[plain], _PLAIN_TYPE) + _decimal_sum(values[small], _SMALL_TYPE)
            + sum(_to_units(decimal.Decimal(repr(v))) for v in values[tiny].tolist()))


def _decimal_sum(values: np.ndarray, kind: pa.DataType) -> int:
    """The 1e-18 units of ``values`` read as ``kind`` from their shortest text, each rounded
    half away from zero to 18 decimals, added."""
    if not len(values):
        return 0
    read = pc.cast(pa.array(values, pa.float64()).cast(pa.string()), kind)
    if kind.scale > SCALE:
        read = pc.round(read, ndigits=SCALE, round_mode="half_towards_infinity")
    total = pc.sum(read).as_py()
    return 0 if total is None else _to_units(total)


def _to_units(value: decimal.Decimal) -> int:
    """A decimal's count of 1e-18 units, rounded half away from zero (Java's HALF_UP)."""
    return int(value.scaleb(SCALE, _CONTEXT).to_integral_value(decimal.ROUND_HALF_UP, _CONTEXT))
