"""model: CREATE MODEL and what a model answers. This module fits and saves the model;
``bqml_als`` + ``normal_equations`` solve BigQuery ML's objective on Spark, ``ids``
maps ids to dense indices, ``split`` is DATA_SPLIT_METHOD, ``prediction`` the one
prediction formula, ``recommend`` ML.RECOMMEND and the top-k, ``weights`` ML.WEIGHTS.
Imports the foundations only; reads and writes no tables.

CREATE MODEL: BigQuery ML matrix factorization, fitted by one of two solvers.

The explicit model is BigQuery ML's: a global intercept, an intercept per user and per item, and
latent factors, so that
    predicted = global + user_intercept + item_intercept + x_u . y_i
An unknown user gets global + item intercept, an unknown item global + user intercept. The
implicit model (weighted ALS) has no intercepts (BigQuery ML: global intercept 0).

- ``bigquery_ml`` (default): BigQuery ML's own objective, intercepts and factors fitted jointly
  with a ridge not scaled by rating counts, solved on Spark by ``recsys.model.bqml_als``
  (docs/solvers.md).
- ``spark_als``: pyspark.ml ALS. The intercepts are ridge-regularised means fitted first
  (``fit_intercepts``: b_i = sum(residual) / (n_i + L2_REG)); ALS factorises what they leave.
  ALS-WR minimises sum (r_ui - x_u.y_i)^2 + regParam * (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2):
  its ridge grows with the row's rating count, so no regParam gives BigQuery ML's model;
  ``SPARK_REG_PARAM_RULES`` derive one from L2_REG (default: L2_REG / mean ratings per user, the
  rule measured closest to BigQuery ML's objective, docs/solvers.md). ``reg_param`` sets Spark's
  value directly.

Ids of any type (INT64 beyond INT32, STRING) are mapped to dense indices (``recsys.model.ids``); the
saved model keeps the original ids and types.

>>> round(spark_reg_param(9.83, n_rows=1_000_209, n_users=6_040, n_items=3_706), 4)
0.0594
>>> default_num_factors(1_000_209)
20
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import AnalysisException
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.model import bqml_als, ids, prediction
from recsys.config import REG_PARAM_RULES, ModelConfig, to_dict
from recsys.errors import InputError
from recsys.sums import exact_avg, exact_sum
from recsys.tasks import python_task

METADATA_DIR = "metadata"
USERS_DIR, ITEMS_DIR = "users", "items"
INTERCEPT_SWEEPS = 5
# Column names of the model's side tables: id, intercept, factors (ARRAY<DOUBLE>).
INTERCEPT, FACTORS = "intercept", "factors"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model: per-user and per-item intercepts and factors, keyed by original ids."""

    users: DataFrame
    items: DataFrame
    global_intercept: float
    options: Dict[str, Any]
    data: Dict[str, Any]
    training_metrics: Dict[str, Optional[float]] = field(default_factory=dict)
    training_info: List[Dict[str, Any]] = field(default_factory=list)
    # Wall seconds of the fit's parts (intercepts, als_fit, ...): for reports and benchmarks.
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def col_user(self) -> str:
        """Name of the user id column (USER_COL)."""
        return self.options["user_col"]

    @property
    def col_item(self) -> str:
        """Name of the item id column (ITEM_COL)."""
        return self.options["item_col"]

    @property
    def rank(self) -> int:
        """Number of latent factors (NUM_FACTORS)."""
        return int(self.options["num_factors"])

    @property
    def implicit(self) -> bool:
        """True for FEEDBACK_TYPE implicit."""
        return self.options["feedback_type"] == "implicit"

    def metadata(self) -> Dict[str, Any]:
        """JSON-serialisable description saved beside the factor tables."""
        return {"options": self.options, "training_data": self.data,
                "global_intercept": self.global_intercept,
                "training_metrics": self.training_metrics, "training_info": self.training_info}


# --- options -----------------------------------------------------------------------------------

# pyspark.ml ALS's regParam from BigQuery ML's L2_REG (model.reg_param_rule). ALS-WR's ridge for
# a row with n ratings is regParam * n, BigQuery ML's L2_REG whatever n: each rule matches the two
# at a typical n. ``default`` names the rule recsys uses when only l2_reg is given.
SPARK_REG_PARAM_RULES = {
    # the mean of L2_REG / mean(n_u) and L2_REG / mean(n_i)
    "mean_ridge": lambda l2, n, users, items: l2 * (users + items) / (2.0 * n),
    # L2_REG / mean(n_u): exact for the average user
    "per_user": lambda l2, n, users, items: l2 * users / n,
    # L2_REG / mean(n_i): exact for the average item
    "per_item": lambda l2, n, users, items: l2 * items / n,
    # L2_REG / sqrt(mean(n_u) * mean(n_i))
    "geometric": lambda l2, n, users, items: l2 * (users * items) ** 0.5 / n,
    # L2_REG as regParam, as a user would first try (docs/solvers.md: predictions collapse to zero)
    "literal": lambda l2, n, users, items: l2,
}
# Measured closest to bigquery_ml (benchmarks/fidelity.py, docs/solvers.md).
DEFAULT_REG_PARAM_RULE = "per_user"
assert tuple(SPARK_REG_PARAM_RULES) == REG_PARAM_RULES


def spark_reg_param(l2_reg: float, *, n_rows: int, n_users: int, n_items: int,
                    rule: str = "default") -> float:
    """pyspark.ml regParam standing in for BigQuery ML's L2_REG under ``rule``."""
    rule = DEFAULT_REG_PARAM_RULE if rule == "default" else rule
    return SPARK_REG_PARAM_RULES[rule](l2_reg, n_rows, n_users, n_items)


def default_num_factors(n_rows: int) -> int:
    """BigQuery ML's NUM_FACTORS default, log2(training rows), within its range 2..200."""
    return int(min(200, max(2, round(math.log2(max(n_rows, 2))))))


def describe_training_data(ratings: DataFrame, *, col_user: str, col_item: str,
                           col_rating: str) -> Dict[str, Any]:
    """Counts, mean rating and an order-independent fingerprint of the rows, in two passes:
    the distinct counts apart (together they would multiply every row through Spark's Expand)."""
    cols = ", ".join(f"`{c}`" for c in ratings.columns)
    row_hash = F.expr(f"xxhash64({cols})")
    row = ratings.agg(
        F.count(F.lit(1)).alias("n_rows"),
        exact_avg(F.col(col_rating).cast("double")).alias("mean_rating"),
        # The exact sum of the 64-bit hashes from its two 32-bit halves (LONG sums, exact below
        # 2^31 rows): the same integer as a DECIMAL sum, at a fraction of the cost.
        F.sum(F.shiftright(row_hash, 32)).alias("hash_high"),
        F.sum(row_hash.bitwiseAND(F.lit(0xFFFFFFFF))).alias("hash_low"),
        F.expr(f"bit_xor(xxhash64({cols}))").alias("hash_xor"),
    ).head().asDict()
    row.update(ratings.agg(F.countDistinct(col_user).alias("n_users"),
                           F.countDistinct(col_item).alias("n_items")).head().asDict())
    high, low = row.pop("hash_high"), row.pop("hash_low")
    hash_sum = None if high is None else high * 2 ** 32 + low
    digest = hashlib.sha256(f"{row['n_rows']}|{hash_sum}|{row.pop('hash_xor')}"
                            .encode()).hexdigest()
    row["fingerprint"] = digest[:32]
    return {key: row[key] for key in ("n_rows", "n_users", "n_items", "mean_rating",
                                      "fingerprint")}


def resolve_options(cfg: ModelConfig, data: Dict[str, Any]) -> Dict[str, Any]:
    """The config's options with defaults filled in: NUM_FACTORS, the intercepts' ridge and the
    block count (``bigquery_ml``), or Spark's regParam (``spark_als``)."""
    options = to_dict(cfg)
    if options["num_factors"] is None:
        options["num_factors"] = default_num_factors(data["n_rows"])
    options["intercept_l2_reg"] = (cfg.l2_reg if cfg.intercept_l2_reg is None
                                   else cfg.intercept_l2_reg)
    if cfg.solver == "bigquery_ml":
        options["num_blocks"] = cfg.num_blocks or bqml_als.default_num_blocks(data["n_rows"])
        return options
    if cfg.reg_param is not None:
        options["spark_reg_param"] = cfg.reg_param
    else:
        options["spark_reg_param"] = spark_reg_param(
            cfg.l2_reg, n_rows=data["n_rows"], n_users=data["n_users"], n_items=data["n_items"],
            rule=cfg.reg_param_rule)
    return options


# --- intercepts --------------------------------------------------------------------------------

def fit_intercepts(ratings: DataFrame, *, global_mean: float, l2_reg: float,
                   col_user: str = "user_id", col_item: str = "item_id",
                   col_rating: str = "rating",
                   sweeps: int = INTERCEPT_SWEEPS) -> Tuple[DataFrame, DataFrame]:
    """Ridge-regularised user and item intercepts by alternating (Gauss-Seidel) sweeps.

    Minimises sum (r - global - b_u - b_i)^2 + l2_reg * (sum b_u^2 + sum b_i^2): each half-step
    is the exact minimiser b_i = sum(r - global - b_u) / (n_i + l2_reg), and likewise for b_u.
    Returns (users: [col_user, intercept], items: [col_item, intercept]).
    """
    rating = F.col(col_rating).cast("double")
    users = ratings.select(col_user).distinct().withColumn(INTERCEPT, F.lit(0.0))
    items = None
    for _ in range(sweeps):
        items = _intercept_step(ratings, users, col_user, col_item, rating, global_mean, l2_reg)
        users = _intercept_step(ratings, items, col_item, col_user, rating, global_mean, l2_reg)
    return users, items


def _intercept_step(ratings, other, other_col, own_col, rating, global_mean, l2_reg):
    # The side tables are small (one row per user or item): broadcast them into the join.
    joined = ratings.join(F.broadcast(other.withColumnRenamed(INTERCEPT, "_other")), other_col)
    step = joined.groupBy(own_col).agg(
        (exact_sum(rating - F.lit(global_mean) - F.col("_other"))
         / (F.count(F.lit(1)) + F.lit(l2_reg))).alias(INTERCEPT))
    # Cut the lineage between sweeps; a reliable checkpoint survives a lost executor.
    return step.checkpoint(eager=True)


# --- prediction --------------------------------------------------------------------------------

def side(model: TrainedModel, which: str) -> DataFrame:
    """The user or item table renamed for joins: [id, _<which>_b, _<which>_f]."""
    table = model.users if which == "user" else model.items
    id_col = model.col_user if which == "user" else model.col_item
    return table.select(F.col(id_col), F.col(INTERCEPT).alias(f"_{which}_b"),
                        F.col(FACTORS).alias(f"_{which}_f"))


def cast_ids(df: DataFrame, model: TrainedModel) -> DataFrame:
    """Input id columns cast to the model's id types (NULL where a value does not convert)."""
    for col, table in ((model.col_user, model.users), (model.col_item, model.items)):
        if col in df.columns:
            spark_type = table.schema[col].dataType.simpleString()
            df = df.withColumn(col, F.expr(f"try_cast(`{col}` as {spark_type})"))
    return df


def score_pairs(model: TrainedModel, pairs: DataFrame, pred_col: str) -> DataFrame:
    """``pairs`` (with user and item columns) plus ``pred_col`` (``recsys.model.prediction``); other
    columns are kept, after the item and user columns (the order a join on them gives).

    Model sides up to ``BROADCAST_SIDE_MAX_BYTES`` are broadcast and looked up in the tasks
    by id: each pair then crosses to Python as two ids, not as two factor arrays (68 doubles a
    row at rank 34). Larger sides, and ids neither integers nor strings, are joined instead."""
    pairs = cast_ids(pairs, model)
    sides = [_broadcast_side(model, which) for which in ("user", "item")]
    if any(one is None for one in sides):
        return _score_pairs_joined(model, pairs, pred_col)
    col_user, col_item = model.col_user, model.col_item
    fields = [pairs.schema[col_item], pairs.schema[col_user]] + [
        f for f in pairs.schema.fields if f.name not in (col_user, col_item)]
    out_schema = T.StructType(fields + [T.StructField(pred_col, T.DoubleType(), True)])
    names, global_intercept = [f.name for f in fields], model.global_intercept
    shared = pairs.sparkSession.sparkContext.broadcast(sides)

    @python_task
    def score(batches):
        (user_ids, user_b, user_f), (item_ids, item_b, item_f) = shared.value
        for batch in batches:
            column = batch.schema.get_field_index
            users = _positions(batch.column(column(col_user)), user_ids)
            items = _positions(batch.column(column(col_item)), item_ids)
            value = prediction.pair_scores(global_intercept + _gather(user_b, users),
                                           _gather(item_b, items), _gather(user_f, users),
                                           _gather(item_f, items))
            yield pa.RecordBatch.from_arrays(
                [batch.column(column(n)) for n in names] + [pa.array(value, pa.float64())],
                names=names + [pred_col])

    return pairs.mapInArrow(score, out_schema)


# Model sides of at most this many bytes of intercepts and factors are broadcast to the scoring
# tasks (every Python worker holds a copy; at rank 34 that is about 960 k rows); larger ones
# are joined to the pairs.
BROADCAST_SIDE_MAX_BYTES = 256 << 20


def _broadcast_side(model: TrainedModel, which: str):
    """(ids, intercepts, factors (n, rank)) of one side collected on the driver, with 0 for a
    NULL intercept and zeros for NULL factors (``prediction.arrow_bias``/``arrow_factors``);
    None when the side is too large or its ids are neither integers nor strings (floating
    point ids: NaN and -0.0 match in Spark's joins, not in Arrow's lookups)."""
    table = side(model, which)
    id_col = table.columns[0]
    if not isinstance(table.schema[id_col].dataType, (T.IntegralType, T.StringType)):
        return None
    max_rows = BROADCAST_SIDE_MAX_BYTES // ((model.rank + 1) * 8)
    local = table.limit(max_rows + 1).toPandas()
    if len(local) > max_rows:
        return None
    # The NULL rules of every other scoring path (prediction.arrow_bias / arrow_factors).
    bias = prediction.arrow_bias(pa.array(local[f"_{which}_b"], pa.float64(), from_pandas=True))
    factors = prediction.arrow_factors(
        pa.array(local[f"_{which}_f"], pa.list_(pa.float64()), from_pandas=True), model.rank)
    return local[id_col].to_numpy(), bias, factors


def _positions(ids: pa.Array, known: np.ndarray) -> np.ndarray:
    """Each id's row in ``known`` (the side's ids), -1 where unknown or NULL (a left join's
    miss)."""
    found = pc.index_in(ids, value_set=pa.array(known, type=ids.type))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _gather(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``values`` at ``positions`` (rows), 0 where the position is -1 (a missing side)."""
    out = np.zeros((len(positions),) + values.shape[1:])
    hit = positions >= 0
    out[hit] = values[positions[hit]]
    return out


def _score_pairs_joined(model: TrainedModel, pairs: DataFrame, pred_col: str) -> DataFrame:
    """``score_pairs`` by joining both side tables to the pairs (any side size or id type)."""
    joined = (pairs.join(side(model, "user"), model.col_user, "left")
              .join(side(model, "item"), model.col_item, "left"))
    kept = [f for f in joined.schema.fields
            if f.name not in ("_user_b", "_user_f", "_item_b", "_item_f")]
    out_schema = T.StructType(kept + [T.StructField(pred_col, T.DoubleType(), True)])
    names, rank, global_intercept = [f.name for f in kept], model.rank, model.global_intercept

    @python_task
    def score(batches):
        for batch in batches:
            column = batch.schema.get_field_index
            value = prediction.pair_scores(
                global_intercept + prediction.arrow_bias(batch.column(column("_user_b"))),
                prediction.arrow_bias(batch.column(column("_item_b"))),
                prediction.arrow_factors(batch.column(column("_user_f")), rank),
                prediction.arrow_factors(batch.column(column("_item_f")), rank))
            yield pa.RecordBatch.from_arrays(
                [batch.column(column(n)) for n in names] + [pa.array(value, pa.float64())],
                names=names + [pred_col])

    return joined.mapInArrow(score, out_schema)


# --- training ----------------------------------------------------------------------------------

def fit(ratings: DataFrame, cfg: ModelConfig, eval_ratings: Optional[DataFrame] = None,
        progress: Optional[Callable[[str], None]] = None) -> TrainedModel:
    """Train on ``ratings`` (columns ``cfg.user_col``, ``cfg.item_col``, ``cfg.rating_col``)
    with ``cfg.solver``.

    ``eval_ratings`` (a split's evaluation rows) only feeds ``eval_loss`` in training_info.
    ``progress`` receives a line per iteration (``bigquery_ml``).
    """
    missing = [c for c in (cfg.user_col, cfg.item_col, cfg.rating_col) if c not in ratings.columns]
    if missing:
        raise InputError(f"training table has no column {missing[0]!r} "
                         f"(columns: {', '.join(ratings.columns)})")
    fit_start = time.perf_counter()
    ratings = ratings.select(cfg.user_col, cfg.item_col,
                             F.col(cfg.rating_col).cast("double").alias(cfg.rating_col)).cache()
    data = describe_training_data(ratings, col_user=cfg.user_col, col_item=cfg.item_col,
                                  col_rating=cfg.rating_col)
    if data["n_rows"] == 0:
        raise InputError("training table is empty")
    options = resolve_options(cfg, data)
    timings: Dict[str, float] = {"describe": time.perf_counter() - fit_start}
    if cfg.solver == "bigquery_ml":
        model = _fit_bigquery_ml(ratings, cfg, eval_ratings, options, data, timings, progress)
    else:
        model = _fit_spark_als(ratings, cfg, eval_ratings, options, data, timings)
    ratings.unpersist()
    timings["total"] = time.perf_counter() - fit_start
    return replace(model, timings=timings)


def _fit_bigquery_ml(ratings, cfg: ModelConfig, eval_ratings, options, data, timings,
                     progress) -> TrainedModel:
    """BigQuery ML's objective, solved on Spark (``recsys.model.bqml_als``)."""
    clock = time.perf_counter()
    # Implicit feedback (WALS) has no intercepts: BigQuery ML reports a global intercept of 0.
    mu = 0.0 if cfg.feedback_type == "implicit" else float(data["mean_rating"])
    both = ratings if eval_ratings is None else ratings.unionByName(
        eval_ratings.select(*ratings.columns))
    try:
        user_index = ids.build_index(both, cfg.user_col, index_col="_idx")
        item_index = ids.build_index(both, cfg.item_col, index_col="_idx")
    except ValueError as exc:  # more distinct ids than an INT32 index
        raise InputError(str(exc)) from None
    # The start of a user's factors: a hash of the id and the seed (bqml_als module docstring).
    hashes = user_index.select(F.col("_idx").alias("_hu"),
                               F.xxhash64(F.col(cfg.user_col), F.lit(cfg.seed))
                               .alias(bqml_als.USER_HASH))

    def rows(df, is_eval):
        indexed = ids.to_index(ids.to_index(df, user_index.withColumnRenamed("_idx", "_iu"),
                                            cfg.user_col, index_col="_iu"),
                               item_index.withColumnRenamed("_idx", "_ii"), cfg.item_col,
                               index_col="_ii")
        return indexed.select(F.col("_iu").cast("long").alias(bqml_als.USER_IDX),
                              F.col("_ii").cast("long").alias(bqml_als.ITEM_IDX),
                              (F.col(cfg.rating_col) - F.lit(mu)).alias(bqml_als.VALUE),
                              F.lit(is_eval).alias(bqml_als.IS_EVAL))

    table = rows(ratings, False)
    if eval_ratings is not None:
        table = table.unionByName(rows(eval_ratings.select(*ratings.columns), True))
    table = table.join(F.broadcast(hashes), F.col(bqml_als.USER_IDX) == F.col("_hu")).drop("_hu")
    n_users, n_items = user_index.count(), item_index.count()
    timings["index"] = time.perf_counter() - clock
    clock = time.perf_counter()
    sides = bqml_als.solve(table, solver_params(cfg, options), n_users=n_users, n_items=n_items,
                           progress=progress)
    timings["als_fit"] = time.perf_counter() - clock
    options["solver_path"] = sides.path
    spark = ratings.sparkSession

    def side_table(which, index, id_col):
        states = spark.createDataFrame(bqml_als.state_rows(sides, which, options["num_factors"]),
                                       bqml_als.STATE_SCHEMA)
        keyed = states.join(index.select(F.col("_idx").cast("long").alias("_idx"), id_col), "_idx")
        keyed = keyed.select(id_col, INTERCEPT, FACTORS).persist()
        # A reliable checkpoint writes what a second job computes: cached first, that job
        # reads the rows instead of converting the solver's states in Python again.
        table = keyed.checkpoint(eager=True)
        keyed.unpersist()
        return table

    users = side_table("user", user_index, cfg.user_col)
    items = side_table("item", item_index, cfg.item_col)
    sides.release()
    return TrainedModel(users=users, items=items, global_intercept=mu, options=options,
                        data=data, training_info=sides.history)


def solver_params(cfg: ModelConfig, options: Dict[str, Any]) -> "bqml_als.SolverParams":
    """The ``bigquery_ml`` solver's options from the config and the resolved options."""
    return bqml_als.SolverParams(
        rank=options["num_factors"], l2_reg=cfg.l2_reg,
        intercept_l2_reg=options["intercept_l2_reg"], max_iterations=cfg.max_iterations,
        early_stop=cfg.early_stop, min_rel_progress=cfg.min_rel_progress,
        num_blocks=options["num_blocks"],
        broadcast_max_bytes=int(cfg.broadcast_max_mb * (1 << 20)),
        checkpoint_interval=cfg.checkpoint_interval,
        wals_alpha=cfg.wals_alpha if cfg.feedback_type == "implicit" else None)


def _fit_spark_als(ratings, cfg: ModelConfig, eval_ratings, options, data,
                   timings) -> TrainedModel:
    """pyspark.ml ALS (ALS-WR) on the residual of ridge intercepts fitted first."""
    clock = time.perf_counter()
    implicit = cfg.feedback_type == "implicit"
    cols = dict(col_user=cfg.user_col, col_item=cfg.item_col, col_rating=cfg.rating_col)

    if implicit:
        global_intercept = 0.0
        users_b = ratings.select(cfg.user_col).distinct().withColumn(INTERCEPT, F.lit(0.0))
        items_b = ratings.select(cfg.item_col).distinct().withColumn(INTERCEPT, F.lit(0.0))
        target = ratings.withColumn("_target", F.col(cfg.rating_col))
    else:
        global_intercept = float(data["mean_rating"])
        users_b, items_b = fit_intercepts(ratings, global_mean=global_intercept,
                                          l2_reg=cfg.l2_reg, **cols)
        target = (ratings.join(F.broadcast(users_b.withColumnRenamed(INTERCEPT, "_bu")), cfg.user_col)
                  .join(F.broadcast(items_b.withColumnRenamed(INTERCEPT, "_bi")), cfg.item_col)
                  .withColumn("_target", F.col(cfg.rating_col) - F.lit(global_intercept)
                              - F.col("_bu") - F.col("_bi")))

    timings["intercepts"] = time.perf_counter() - clock
    clock = time.perf_counter()
    try:
        user_index = ids.build_index(ratings, cfg.user_col, index_col="_u")
        item_index = ids.build_index(ratings, cfg.item_col, index_col="_i")
    except ValueError as exc:  # more distinct ids than ALS can index
        raise InputError(str(exc)) from None
    als_input = ids.to_index(ids.to_index(target, user_index, cfg.user_col, index_col="_u"),
                             item_index, cfg.item_col, index_col="_i").select("_u", "_i", "_target")
    als_input = als_input.cache()
    timings["index"] = time.perf_counter() - clock
    timings["als_fit"] = 0.0

    def assemble(als_model) -> TrainedModel:
        def table(factors, index, idx_col, id_col, intercepts):
            named = factors.select(F.col("id").alias(idx_col),
                                   F.col("features").cast("array<double>").alias(FACTORS))
            keyed = index.join(named, idx_col).drop(idx_col)
            return intercepts.join(keyed, id_col, "left").select(id_col, INTERCEPT, FACTORS)

        return TrainedModel(
            users=table(als_model.userFactors, user_index, "_u", cfg.user_col, users_b),
            items=table(als_model.itemFactors, item_index, "_i", cfg.item_col, items_b),
            global_intercept=global_intercept, options=options, data=data)

    def als(max_iter: int):
        estimator = ALS(rank=options["num_factors"], maxIter=max_iter,
                        regParam=options["spark_reg_param"], implicitPrefs=implicit,
                        alpha=cfg.wals_alpha, userCol="_u", itemCol="_i", ratingCol="_target",
                        nonnegative=False, seed=cfg.seed)
        # Spark's default is 10 blocks whatever the cores; one per core measured faster
        # (docs/performance.md: 21.5 s against 24.1 s for ML-1M's 20 iterations on 2 cores).
        blocks = cfg.num_blocks or max(2, ratings.sparkSession.sparkContext.defaultParallelism)
        estimator = estimator.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
        return estimator.fit(als_input)

    # Each iterate is a fresh fit with maxIter = k: with a fixed seed ALS starts from the same
    # factors, so that fit *is* iterate k of the longer run. Costly (k fits); see docs/solvers.md.
    schedule = (range(1, cfg.max_iterations + 1) if cfg.training_info == "every_iteration"
                else [cfg.max_iterations])
    history: List[Dict[str, Any]] = []
    model = None
    for k in schedule:
        start = time.perf_counter()
        als_model = als(k)  # ALS.fit runs every iteration and materialises the factors
        timings["als_fit"] += time.perf_counter() - start
        model = assemble(als_model)
        model = replace(model, users=model.users.checkpoint(eager=True),
                        items=model.items.checkpoint(eager=True))
        loss = training_loss(model, ratings, col_rating=cfg.rating_col)
        eval_loss = (training_loss(model, eval_ratings, col_rating=cfg.rating_col)
                     if eval_ratings is not None else None)
        history.append({"training_run": 0, "iteration": k - 1, "loss": loss, "eval_loss": eval_loss,
                        "learning_rate": None,
                        "duration_ms": int(round((time.perf_counter() - start) * 1000))})
        if (cfg.early_stop and len(history) >= 2
                and bqml_als.rel_progress(history) < cfg.min_rel_progress):
            break
    assert model is not None
    als_input.unpersist()
    return replace(model, training_info=history)


def training_loss(model: TrainedModel, ratings: DataFrame, *, col_rating: str) -> float:
    """ML.TRAINING_INFO's loss: MSE of the predictions over ``ratings``.

    Implicit models: mean of (1 - prediction)^2 over the observed (positive) rows, i.e. the
    preference error where p = 1; the unobserved pairs' part of the weighted loss is left out.
    """
    scored = score_pairs(model, ratings, "_pred")
    target = F.lit(1.0) if model.implicit else F.col(col_rating)
    value = scored.agg(exact_avg(F.pow(target - F.col("_pred"), 2))).head()[0]
    return float(value) if value is not None else float("nan")


def with_training_metrics(model: TrainedModel, metrics: Dict[str, Optional[float]]) -> TrainedModel:
    """A copy of ``model`` carrying its training-time ML.EVALUATE metrics."""
    return replace(model, training_metrics=dict(metrics))


# --- persistence -------------------------------------------------------------------------------

def save(model: TrainedModel, path: str) -> None:
    """Write ``users/``, ``items/`` (Parquet) and then ``metadata/`` (one JSON text file) into the
    new folder ``path`` — any Hadoop path (local, ``gs://``). The metadata comes last: a model
    folder without it is an unfinished write."""
    spark = model.users.sparkSession
    model.users.write.parquet(_join(path, USERS_DIR))
    model.items.write.parquet(_join(path, ITEMS_DIR))
    text = json.dumps(model.metadata(), indent=2, sort_keys=True, allow_nan=True)
    spark.createDataFrame([(text,)], "value string").coalesce(1).write.text(
        _join(path, METADATA_DIR))


def load(spark: SparkSession, path: str) -> TrainedModel:
    """Read a model saved by ``save``."""
    try:
        text = spark.read.text(_join(path, METADATA_DIR), wholetext=True).head()
    except AnalysisException:  # the path does not exist
        text = None
    if text is None:
        raise InputError(f"no trained model at {path} (run the train job first)")
    meta = json.loads(text[0])
    return TrainedModel(
        users=spark.read.parquet(_join(path, USERS_DIR)),
        items=spark.read.parquet(_join(path, ITEMS_DIR)),
        global_intercept=meta["global_intercept"], options=meta["options"],
        data=meta["training_data"], training_metrics=meta["training_metrics"],
        training_info=meta["training_info"])


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"
