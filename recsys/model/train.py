"""The train stage, CREATE MODEL: BigQuery ML matrix factorization, fitted by one of two solvers.

The explicit model is BigQuery ML's: a global intercept, an intercept per user and per item, and
latent factors, so that
    predicted = global + user_intercept + item_intercept + x_u . y_i
An unknown user gets global + item intercept, an unknown item global + user intercept. The
implicit model (weighted ALS) has no intercepts (BigQuery ML: global intercept 0).

- ``bigquery_ml`` (default): BigQuery ML's own objective, intercepts and factors fitted jointly
  with a ridge not scaled by rating counts, solved on Spark by ``recsys.model.bqml_als``
  (docs/solvers.md).
- ``spark_als``: pyspark.ml ALS (``recsys.model.spark_als``). The intercepts are
  ridge-regularised means fitted first (``fit_intercepts``: b_i = sum(residual) / (n_i +
  L2_REG)); ALS factorises what they leave.
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
import math
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.model import bqml_als, ids
from recsys.config import REG_PARAM_RULES, ModelConfig, to_dict
from recsys.errors import ConfigError, InputError
from recsys.model.rating_blocks import IS_EVAL, ITEM_IDX, USER_HASH, USER_IDX, VALUE
from recsys.model.spark_als import fit_spark_als
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel
from recsys.sums import exact_avg


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
                           col_rating: str, distinct: bool = True) -> Dict[str, Any]:
    """Counts, mean rating and an order-independent fingerprint of the rows, in two passes:
    the distinct counts apart (together they would multiply every row through Spark's Expand).
    ``distinct=False`` leaves ``n_users`` and ``n_items`` None, for a caller that counts them
    while indexing the ids."""
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
                           F.countDistinct(col_item).alias("n_items")).head().asDict()
               if distinct else {"n_users": None, "n_items": None})
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


# --- training ----------------------------------------------------------------------------------

def fit(ratings: DataFrame, cfg: ModelConfig, eval_ratings: Optional[DataFrame] = None,
        progress: Optional[Callable[[str], None]] = None,
        warm_start: Optional[TrainedModel] = None,
        score_training: Optional[Callable[["bqml_als.TrainingPredictions"],
                                          Optional[Dict[str, Optional[float]]]]] = None
        ) -> TrainedModel:
    """Train on ``ratings`` (columns ``cfg.user_col``, ``cfg.item_col``, ``cfg.rating_col``)
    with ``cfg.solver``.

    ``eval_ratings`` (a split's evaluation rows) only feeds ``eval_loss`` in training_info.
    ``progress`` receives a line per iteration (``bigquery_ml``). ``warm_start`` (a saved
    model, ``bigquery_ml``): its users start from their saved factors and intercepts, the
    others from the seeded start. ``score_training``: metrics of the final model on the
    training ratings from their predictions where the fit holds them (``bigquery_ml``,
    explicit, broadcast path, no ``eval_ratings``), kept as the model's ``training_metrics``;
    elsewhere, or when it returns None, the model has none and the caller scores the table.
    """
    missing = [c for c in (cfg.user_col, cfg.item_col, cfg.rating_col) if c not in ratings.columns]
    if missing:
        raise InputError(f"training table has no column {missing[0]!r} "
                         f"(columns: {', '.join(ratings.columns)})")
    fit_start = time.perf_counter()
    ratings = ratings.select(cfg.user_col, cfg.item_col,
                             F.col(cfg.rating_col).cast("double").alias(cfg.rating_col)).cache()
    # Without evaluation rows the bigquery_ml fit's id indices hold exactly the training ids:
    # their sizes are the distinct counts, and describe skips its second pass.
    data = describe_training_data(ratings, col_user=cfg.user_col, col_item=cfg.item_col,
                                  col_rating=cfg.rating_col,
                                  distinct=cfg.solver != "bigquery_ml" or eval_ratings is not None)
    if data["n_rows"] == 0:
        raise InputError("training table is empty")
    options = resolve_options(cfg, data)
    timings: Dict[str, float] = {"describe": time.perf_counter() - fit_start}
    if cfg.solver == "bigquery_ml":
        model = _fit_bigquery_ml(ratings, cfg, eval_ratings, options, data, timings, progress,
                                 warm_start, score_training)
    elif warm_start is not None:
        raise ConfigError("model.warm_start needs model.solver bigquery_ml")
    else:
        model = fit_spark_als(ratings, cfg, eval_ratings, options, data, timings)
    ratings.unpersist()
    timings["total"] = time.perf_counter() - fit_start
    return replace(model, timings=timings)


def _fit_bigquery_ml(ratings, cfg: ModelConfig, eval_ratings, options, data, timings,
                     progress, warm_start: Optional[TrainedModel] = None,
                     score_training=None) -> TrainedModel:
    """BigQuery ML's objective, solved on Spark (``recsys.model.bqml_als``)."""
    clock = time.perf_counter()
    # Implicit feedback (WALS) has no intercepts: BigQuery ML reports a global intercept of 0.
    mu = 0.0 if cfg.feedback_type == "implicit" else float(data["mean_rating"])
    both = ratings if eval_ratings is None else ratings.unionByName(
        eval_ratings.select(*ratings.columns))
    try:
        users = ids.counted_index(both, cfg.user_col, index_col="_idx")
        items = ids.counted_index(both, cfg.item_col, index_col="_idx")
    except ValueError as exc:  # more distinct ids than an INT32 index
        raise InputError(str(exc)) from None
    user_index, n_users, item_index, n_items = users.index, users.size, items.index, items.size
    if data["n_users"] is None:  # no evaluation rows: the indices hold the training ids
        data.update(n_users=n_users, n_items=n_items)
    table, id_values = _solver_rows(ratings, eval_ratings, users, items, cfg)
    timings["index"] = time.perf_counter() - clock
    clock = time.perf_counter()
    warm_users = None
    if warm_start is not None:
        warm_users, options["warm_start_users"] = _warm_users(warm_start, user_index, cfg,
                                                              options)
    sides = bqml_als.solve(table, solver_params(cfg, options), n_users=n_users, n_items=n_items,
                           center=mu, progress=progress, warm_users=warm_users,
                           id_values=id_values)
    timings["als_fit"] = time.perf_counter() - clock
    training_metrics = {}
    if score_training is not None and eval_ratings is None:
        clock = time.perf_counter()
        training_metrics = _score_training(sides, score_training, data["n_rows"]) or {}
        timings["training_metrics"] = time.perf_counter() - clock
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
                        data=data, training_info=sides.history,
                        training_metrics=training_metrics)


def _solver_rows(ratings: DataFrame, eval_ratings: Optional[DataFrame],
                 users: "ids.CountedIndex", items: "ids.CountedIndex", cfg: ModelConfig):
    """The solver's input (``bqml_als.solve``) and its ``id_values``.

    Integer and string ids numbered on the driver (every MovieLens release) stay as they are:
    the solver's tasks look their indices up (``rating_blocks.both_blocks``), with no join
    (ML-1M's train stage 20.8 s against 23.4 s, means of four same-run pairs,
    docs/performance.md). Other ids, or more than ``ids.LOCAL_INDEX_MAX`` of them, are joined
    with the indices here."""
    simple = (users.values is not None and items.values is not None
              and all(isinstance(ratings.schema[c].dataType, (T.IntegralType, T.StringType))
                      for c in (cfg.user_col, cfg.item_col)))
    # The start of a user's factors: a hash of the id and the seed (bqml_als module docstring).
    user_hash = F.xxhash64(F.col(cfg.user_col), F.lit(cfg.seed)).alias(USER_HASH)

    def rows(df, is_eval):
        if simple:
            user, item = F.col(cfg.user_col), F.col(cfg.item_col)
        else:
            df = ids.to_index(ids.to_index(df, users.index.withColumnRenamed("_idx", "_iu"),
                                           cfg.user_col, index_col="_iu"),
                              items.index.withColumnRenamed("_idx", "_ii"), cfg.item_col,
                              index_col="_ii")
            user, item = F.col("_iu").cast("long"), F.col("_ii").cast("long")
        return df.select(user.alias(USER_IDX), item.alias(ITEM_IDX),
                         F.col(cfg.rating_col).alias(VALUE), F.lit(is_eval).alias(IS_EVAL),
                         user_hash)

    table = rows(ratings, False)
    if eval_ratings is not None:
        table = table.unionByName(rows(eval_ratings.select(*ratings.columns), True))
    return table, ((users.values, items.values) if simple else None)


def _score_training(sides: "bqml_als.SolvedSides", score_training, n_rows: int):
    """``score_training`` of the fit's training predictions, or None where the fit does not
    hold them all (the join path, implicit feedback, or rows the fit did not use)."""
    predictions = sides.training_predictions()
    if predictions is None:
        return None
    try:
        return score_training(predictions) if predictions.n_ratings == n_rows else None
    finally:
        predictions.release()


def _warm_users(warm: TrainedModel, user_index: DataFrame, cfg: ModelConfig,
                options: Dict[str, Any]):
    """(RDD of (user index, starting state), how many users it covers) from a saved model's
    users: [factors, intercept] for explicit feedback, the factors for implicit."""
    if warm.rank != options["num_factors"] or warm.implicit != (cfg.feedback_type == "implicit"):
        raise ConfigError(
            f"model.warm_start: the saved model has {warm.rank} factors and "
            f"{warm.options['feedback_type']} feedback; this fit has {options['num_factors']} "
            f"and {cfg.feedback_type}")
    saved = warm.users.select(F.col(warm.col_user).alias(cfg.user_col), INTERCEPT, FACTORS)
    try:
        keyed = ids.to_index(saved, user_index, cfg.user_col, index_col="_idx",
                             keep_unknown=False)
    except ValueError as exc:  # the saved ids are of another type than the training ids
        raise InputError(f"model.warm_start: {exc}") from None
    explicit = cfg.feedback_type != "implicit"
    rows = keyed.rdd.map(lambda r: (int(r["_idx"]), list(r[FACTORS])
                                    + ([float(r[INTERCEPT])] if explicit else [])))
    return rows, keyed.count()


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
