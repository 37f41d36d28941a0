"""Sums of DOUBLE columns that do not depend on the order Spark merges partial sums in, so
that metrics, losses and intercepts are the same to the last bit on any number of cores."""

from pyspark.sql import Column
from pyspark.sql import functions as F


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
