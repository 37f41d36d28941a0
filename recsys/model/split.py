"""BigQuery ML's DATA_SPLIT_METHOD for matrix factorization: DataFrame in, DataFrames out.

Methods (case-insensitive), as BigQuery ML's CREATE MODEL options describe them:

- NO_SPLIT   (the MF default) every row trains; ``eval`` is None.
- AUTO_SPLIT < 500 rows: no split (resolved to NO_SPLIT); 500..50,000 rows: RANDOM with 0.2;
             > 50,000 rows: exactly 10,000 eval rows, the ones with the smallest key hash
             (resolved method RANDOM, eval_fraction 10000/n). DATA_SPLIT_EVAL_FRACTION is ignored.
- RANDOM     a row is eval when hash(user, item, seed) mapped to [0, 1) is < eval_fraction.
- CUSTOM     DATA_SPLIT_COL is a BOOL column: TRUE or NULL -> eval, FALSE -> training.
- SEQ        DATA_SPLIT_COL orders the rows; the smallest values train, the largest are eval.

Exact counts: AUTO_SPLIT above 50,000 rows gives exactly 10,000 eval rows (unless several rows
share the (user, item) key at the boundary: one key never straddles the split). SEQ gives exactly
round_half_up(eval_fraction * n) eval rows when no NULLs and no ties sit at the boundary. RANDOM and
AUTO_SPLIT's 20 % regime are Bernoulli per key: the eval size is Binomial(n, fraction).

NULL / tie rules. Sources: the BigQuery API reference (TrainingOptions.dataSplitColumn: CUSTOM
"true are eval, false are training"; SEQ "the first rows from smallest to largest are training,
the rest eval") is silent on NULLs and ties. For CUSTOM NULL, a summary of the CREATE MODEL
(boosted tree) page lists "TRUE or NULL -> evaluation" (zenn.dev/tatamiya/scraps/2f8b0a7e789146).
For SEQ, no retrievable page settles ties/NULLs; the threshold rule below follows the CREATE MODEL
wording as remembered ("values smaller than the threshold train; the rest, including NULLs, are
eval") and is unverified:

- CUSTOM: NULL -> eval.
- SEQ: a threshold rule, not a row cut. With k = round_half_up(f * n) target eval rows, the
  threshold is the value at ascending position n - k (NULLs last); rows strictly below it train,
  every other row (ties with the threshold, NULLs, NaN which Spark sorts above all numbers) is eval.
  Rows sharing a value therefore never straddle the split, and eval may exceed k.

Determinism: no ``randomSplit``/``rand()`` (both depend on partitioning). Random choices come from
``xxhash64(user, item, seed)``, so the same input and seed give the same split for any partitioning
or row order; rows with the same (user, item) key always land on the same side.

A split may leave a user or item with eval rows only (ALS then has no factors for it). That is not
repaired (that would change the split) but counted in ``eval_only_users``/``eval_only_items``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import SPLIT_METHODS

# DATA_SPLIT_METHOD's values as BigQuery ML spells them; the list itself is the config's.
METHODS = tuple(method.upper() for method in SPLIT_METHODS)

AUTO_MIN_ROWS = 500          # below: AUTO_SPLIT does not split
AUTO_RANDOM_MAX_ROWS = 50_000  # up to here: 20 % random; above: 10,000 rows
AUTO_FRACTION = 0.2
AUTO_EVAL_ROWS = 10_000

# 2^53: the hash is reduced to 53 bits so that dividing by 2^53 is exact in a double.
_HASH_RANGE = 9007199254740992
_H = "__recsys_split_h"
_T = "__recsys_split_thr"
_E = "__recsys_split_is_eval"


@dataclass(frozen=True)
class SplitResult:
    """Training rows, eval rows (None when not split), the resolved method and fraction used.

    ``eval_fraction`` is 0.0 when not split, the realised eval share for CUSTOM, and otherwise the
    target fraction; ``eval_only_*`` count non-NULL ids whose rows are all in eval.
    """

    train: DataFrame
    eval: Optional[DataFrame]
    method: str
    eval_fraction: float
    eval_only_users: int = 0
    eval_only_items: int = 0


def split_ratings(ratings: DataFrame, *, method: str = "NO_SPLIT", eval_fraction: float = 0.2,
                  split_col: Optional[str] = None, seed: int = 42,
                  col_user: str = "user_id", col_item: str = "item_id") -> SplitResult:
    """Split ``ratings`` into training and eval rows following BigQuery ML's DATA_SPLIT_METHOD.

    Output rows keep every input column unchanged. Raises ValueError (one line, naming the
    BigQuery option) for an unknown method, a bad fraction or a missing/ill-typed split column.
    """
    resolved = _check_method(method)
    fraction = _check_fraction(eval_fraction)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    for name in (col_user, col_item):
        if name not in ratings.columns:
            raise ValueError(f"column {name!r} not found in ratings (columns: {ratings.columns})")
    if resolved in ("CUSTOM", "SEQ"):
        _check_split_col(ratings, resolved, split_col)
    elif split_col is not None:
        # BigQuery only reads DATA_SPLIT_COL for CUSTOM and SEQ; silently ignoring it here would
        # hide a misconfigured job.
        raise ValueError(f"data_split_col is only used with CUSTOM or SEQ, not {resolved}")

    columns = ratings.columns
    if resolved == "NO_SPLIT":
        return SplitResult(ratings, None, "NO_SPLIT", 0.0)

    if resolved == "AUTO_SPLIT":
        n = ratings.count()
        if n < AUTO_MIN_ROWS:
            return SplitResult(ratings, None, "NO_SPLIT", 0.0)
        if n <= AUTO_RANDOM_MAX_ROWS:
            resolved, fraction = "RANDOM", AUTO_FRACTION
        else:
            is_eval = _smallest_hashes(ratings, AUTO_EVAL_ROWS, seed, col_user, col_item)
            return _finish(is_eval, columns, "RANDOM", AUTO_EVAL_ROWS / n, col_user, col_item)

    if resolved == "RANDOM":
        unit = F.col(_H).cast("double") / F.lit(float(_HASH_RANGE))
        hashed = ratings.withColumn(_H, _key_hash(seed, col_user, col_item))
        return _finish(hashed.withColumn(_E, unit < F.lit(fraction)), columns,
                       "RANDOM", fraction, col_user, col_item)

    if resolved == "CUSTOM":
        # NULL counts as eval (BigQuery: "TRUE or NULL" -> evaluation data).
        flagged = ratings.withColumn(_E, F.coalesce(_c(split_col), F.lit(True)))
        shares = flagged.agg(F.count(F.lit(1)).alias("n"),
                             F.sum(F.col(_E).cast("int")).alias("e")).head()
        used = (shares["e"] or 0) / shares["n"] if shares["n"] else 0.0
        return _finish(flagged, columns, "CUSTOM", used, col_user, col_item)

    # SEQ
    is_eval = _seq_threshold(ratings, split_col, fraction)
    return _finish(is_eval, columns, "SEQ", fraction, col_user, col_item)


def _c(name: str) -> Column:
    # Backticks: a column literally named "a.b" must not be read as a struct field access.
    return F.col("`" + name.replace("`", "``") + "`")


def _check_method(method) -> str:
    name = method.strip().upper() if isinstance(method, str) else None
    if name not in METHODS:
        raise ValueError(f"data_split_method must be one of {', '.join(METHODS)} "
                         f"(case-insensitive), got {method!r}")
    return name


def _check_fraction(value) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (0.0 < float(value) < 1.0):  # also rejects NaN
        raise ValueError(f"data_split_eval_fraction must be a number strictly between 0 and 1, "
                         f"got {value!r}")
    return float(value)


def _check_split_col(ratings: DataFrame, method: str, split_col: Optional[str]) -> None:
    if not split_col:
        raise ValueError(f"data_split_col is required when data_split_method is {method}")
    if split_col not in ratings.columns:
        raise ValueError(f"data_split_col {split_col!r} not found in the input columns "
                         f"{ratings.columns}")
    dtype = ratings.schema[split_col].dataType
    if method == "CUSTOM" and not isinstance(dtype, T.BooleanType):
        raise ValueError(f"data_split_col {split_col!r} must be BOOLEAN for CUSTOM, "
                         f"got {dtype.simpleString()}")
    if method == "SEQ" and isinstance(dtype, (T.ArrayType, T.MapType, T.StructType)):
        raise ValueError(f"data_split_col {split_col!r} must be an orderable type for SEQ, "
                         f"got {dtype.simpleString()}")


def _key_hash(seed: int, col_user: str, col_item: str) -> Column:
    """Non-negative 53-bit hash of the row key (user, item, seed); never NULL."""
    # Hash of the key only (not of the row's position), so partitioning and order do not matter.
    h = F.xxhash64(_c(col_user), _c(col_item), F.lit(int(seed)))
    # A positive modulo without F.pmod (pyspark >= 3.4 only); |h % R| < R, so no overflow.
    r = F.lit(_HASH_RANGE)
    return ((h % r) + r) % r


def _smallest_hashes(ratings: DataFrame, k: int, seed: int, col_user: str,
                     col_item: str) -> DataFrame:
    """Rows flagged eval when their (hash, user, item) is among the k smallest."""
    hashed = ratings.withColumn(_H, _key_hash(seed, col_user, col_item))
    key = F.struct(F.col(_H).alias("h"), _c(col_user).alias("u"), _c(col_item).alias("i"))
    # The k-th smallest key; orderBy + offset + limit runs as a distributed top-k, not a full sort.
    kth = (hashed.select(key.alias(_T)).orderBy(F.col(_T).asc()).offset(k - 1).limit(1))
    joined = hashed.crossJoin(F.broadcast(kth))
    return joined.withColumn(_E, key <= F.col(_T)).drop(_T)


def _seq_threshold(ratings: DataFrame, split_col: str, fraction: float) -> DataFrame:
    """Rows flagged eval by SEQ's threshold rule (see the module docstring)."""
    n = ratings.count()
    k = int(math.floor(fraction * n + 0.5))
    n_train = n - k
    values = ratings.where(_c(split_col).isNotNull()).select(_c(split_col).alias(_T))
    # The first eval value: position n_train in ascending order. If NULLs alone fill the eval
    # quota the position is past the last non-NULL value: no threshold row, all non-NULLs train.
    thr = values.orderBy(F.col(_T).asc()).offset(n_train).limit(1)
    joined = ratings.join(F.broadcast(thr), on=F.lit(True), how="left")
    below = F.when(F.col(_T).isNull(), F.lit(True)).otherwise(_c(split_col) < F.col(_T))
    is_eval = F.when(_c(split_col).isNull(), F.lit(True)).otherwise(~below)
    return joined.withColumn(_E, is_eval).drop(_T)


def _finish(flagged: DataFrame, columns, method: str, fraction: float, col_user: str,
            col_item: str) -> SplitResult:
    train = flagged.where(~F.col(_E)).select(*[_c(c) for c in columns])
    evals = flagged.where(F.col(_E)).select(*[_c(c) for c in columns])
    return SplitResult(train, evals, method, float(fraction),
                       _eval_only(flagged, col_user), _eval_only(flagged, col_item))


def _eval_only(flagged: DataFrame, col: str) -> int:
    """Distinct non-NULL ids of ``col`` whose rows are all eval (ALS drops NULL ids anyway)."""
    # One aggregation instead of distinct + anti-join: an id is eval-only iff min(is_eval) is true.
    per_id = (flagged.where(_c(col).isNotNull()).groupBy(_c(col))
              .agg(F.min(F.col(_E)).alias("all_eval")))
    return per_id.where(F.col("all_eval")).count()
