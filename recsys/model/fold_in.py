"""Fold-in: users the model has not seen, solved against its fixed item side.

BigQuery ML answers a user unseen at training with the intercepts alone. Given some ratings of
such a user, fold-in solves that user's half of the model's own objective with every item held
fixed: the same ridge normal equations as the user half-step of training
(``recsys.model.normal_equations``), one system per user, in the tasks
(``recsys.model.bqml_als.solve_against``). Explicit feedback:

    minimise over (x_u, b_u)  sum_j (r_uj - mu - b_j - b_u - x_u . y_j)^2
                              + L2_REG |x_u|^2 + INTERCEPT_L2_REG b_u^2

over the user's ratings j; implicit feedback (WALS):

    minimise over x_u  sum_i c_ui (p_ui - x_u . y_i)^2 + L2_REG |x_u|^2

over every item i, c = 1 + WALS_ALPHA * r and p = 1 on the rated items, c = 1 and p = 0 on the
others (Y^T Y carries them). A folded-in user is then scored by the one prediction formula like
any training user. Only ``bigquery_ml`` models fold in: ``spark_als`` fits its intercepts and its
ALS-WR factors in two separate stages, with another penalty, so no one solve is its objective.

Rows on items the model does not know carry no factors to solve against: they are left out and
counted. A user whose rows are all such gets zero factors and intercept, which scores exactly as
BigQuery ML's unknown-user fallback. The rows' users must be absent from the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys.errors import InputError
from recsys.model import bqml_als, ids
from recsys.model.rating_blocks import (IS_EVAL, ITEM_IDX, USER_HASH, USER_IDX, VALUE,
                                        user_blocks)
from recsys.model.scoring import cast_ids
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel


@dataclass(frozen=True)
class FoldIn:
    """A model with folded-in users, and what was folded in."""

    model: TrainedModel    # the model's users and the new ones; the same items
    users: DataFrame       # the new users: [user, intercept, factors]
    ratings: DataFrame     # the rows used: [user, item, rating] (items the model knows)
    n_users: int
    n_rows: int            # rows used
    n_unknown_items: int   # rows left out: their item is not in the model


def fold_in(model: TrainedModel, ratings: DataFrame) -> FoldIn:
    """Solve the users of ``ratings`` (the model's user, item and rating columns) against the
    model's items; raises a one-line ``InputError`` for a user already in the model, a NULL or
    unconvertible value, or a model the solve is not its objective for."""
    col_user, col_item = model.col_user, model.col_item
    col_rating = model.options["rating_col"]
    if model.options.get("solver") != "bigquery_ml":
        raise InputError(f"recommend.fold_in needs a model trained with model.solver bigquery_ml "
                         f"(this one: {model.options.get('solver')}; spark_als fits intercepts "
                         f"and factors separately, so no one solve is its objective)")
    missing = [c for c in (col_user, col_item, col_rating) if c not in ratings.columns]
    if missing:
        raise InputError(f"recommend.fold_in has no column {missing[0]!r} "
                         f"(columns: {', '.join(ratings.columns)})")
    rows = cast_ids(ratings.select(col_user, col_item, col_rating), model).withColumn(
        col_rating, F.expr(f"try_cast(`{col_rating}` as double)"))
    bad = rows.where(F.col(col_user).isNull() | F.col(col_item).isNull()
                     | F.col(col_rating).isNull()).count()
    if bad:
        raise InputError(f"recommend.fold_in: {bad:,} rows have a NULL or unconvertible user, "
                         f"item or rating")
    known = rows.select(col_user).distinct().join(model.users.select(col_user), col_user,
                                                  "left_semi")
    n_known = known.count()
    if n_known:
        first = known.orderBy(col_user).first()[0]
        raise InputError(f"recommend.fold_in: {n_known:,} of its users are already in the model "
                         f"(the first: {first}); fold-in solves users the model has not seen")

    spark = ratings.sparkSession
    rank, implicit = model.rank, model.implicit
    item_index = ids.build_index(model.items, col_item, index_col=ITEM_IDX)
    fixed = _item_states(model, item_index)
    user_index = ids.build_index(rows, col_user, index_col=USER_IDX)
    indexed = ids.to_index(ids.to_index(rows, user_index, col_user, index_col=USER_IDX),
                           item_index, col_item, index_col=ITEM_IDX).cache()
    used = indexed.where(F.col(ITEM_IDX).isNotNull())
    n_all, n_rows = indexed.count(), used.count()
    mu = float(model.global_intercept)
    table = used.select(F.col(USER_IDX).cast("long").alias(USER_IDX),
                        F.col(ITEM_IDX).cast("long").alias(ITEM_IDX),
                        F.col(col_rating).cast("double").alias(VALUE),
                        F.lit(False).alias(IS_EVAL), F.lit(0).cast("long").alias(USER_HASH))
    params = _params(model, n_rows)
    # Implicit feedback: every unrated item enters through Y^T Y over all the model's items.
    gram = fixed.T @ fixed if implicit else None
    solved_table = spark.createDataFrame([], bqml_als.STATE_SCHEMA)
    blocks = shipped = solved = None
    if n_rows:
        blocks = user_blocks(table, params.num_blocks, center=mu)
        solved, shipped = bqml_als.solve_against(blocks, fixed, params, gram)
        solved_table = spark.createDataFrame(bqml_als.solved_rows(solved, rank),
                                             bqml_als.STATE_SCHEMA)
    zeros = F.array_repeat(F.lit(0.0), rank)
    new_users = (user_index.select(F.col(USER_IDX).cast("long").alias("_idx"), col_user)
                 .join(solved_table, "_idx", "left")
                 .select(col_user, F.coalesce(F.col(INTERCEPT), F.lit(0.0)).alias(INTERCEPT),
                         F.coalesce(F.col(FACTORS), zeros).alias(FACTORS)))
    # Checkpointed: the solves run once, however often recommend and top-k read the users, and
    # no lost partition needs the blocks or the broadcast released below.
    cached = new_users.persist()
    new_users = cached.checkpoint(eager=True)
    cached.unpersist()
    n_users = new_users.count()
    for done in (solved, blocks):
        if done is not None:
            done.unpersist()
    if shipped is not None:
        shipped.destroy()
    used_rows = used.select(col_user, col_item, col_rating)
    extended = replace(model, users=model.users.select(col_user, INTERCEPT, FACTORS)
                       .unionByName(new_users))
    return FoldIn(model=extended, users=new_users, ratings=used_rows, n_users=n_users,
                  n_rows=n_rows, n_unknown_items=n_all - n_rows)


def _item_states(model: TrainedModel, item_index: DataFrame) -> np.ndarray:
    """The fixed side as the solver holds it, row k = the item of index k: [factors,
    intercept] for explicit feedback, the factors for implicit."""
    local = (item_index.join(model.items, model.col_item)
             .select(ITEM_IDX, INTERCEPT, FACTORS).toPandas())
    width = model.rank if model.implicit else model.rank + 1
    states = np.zeros((len(local), width))
    at = local[ITEM_IDX].to_numpy(dtype=np.int64)
    states[at, :model.rank] = np.array(local[FACTORS].tolist(), dtype=float).reshape(
        len(local), model.rank)
    if not model.implicit:
        states[at, model.rank] = local[INTERCEPT].fillna(0.0).to_numpy(dtype=float)
    return states


def _params(model: TrainedModel, n_rows: int) -> "bqml_als.SolverParams":
    """The model's own penalties; blocks from the fold-in rows' count (never from the cores)."""
    options = model.options
    intercept_l2 = options.get("intercept_l2_reg")
    return bqml_als.SolverParams(
        rank=model.rank, l2_reg=float(options["l2_reg"]),
        intercept_l2_reg=float(options["l2_reg"] if intercept_l2 is None else intercept_l2),
        max_iterations=1, early_stop=False, min_rel_progress=0.0,
        num_blocks=bqml_als.default_num_blocks(n_rows), broadcast_max_bytes=0,
        checkpoint_interval=0,
        wals_alpha=float(options["wals_alpha"]) if model.implicit else None)
