"""ML.RECOMMEND and the top-k table.

Every prediction is ``recsys.model.prediction``'s formula, computed in the tasks on Arrow batches: an
unknown user or item contributes nothing (BigQuery ML's fallback to the known side's intercept).
Top-k ranks by ``predicted DESC, item ASC`` (``schemas.topk_order``) so ties always resolve the same way.

Crosses (ML.RECOMMEND without an input, or with only users or only items) broadcast the other
side once and score a block of rows against it per task. ``top_k_for_users`` takes the top-k
for every user without materialising the user x item pairs: each task scores a block of users
against the broadcast items with one matrix product (the blocked BLAS scheme of pyspark.ml's
``recommendForAllUsers``) to find candidates, re-scores those with the formula, and keeps k rows
per user. ``top_k`` ranks an arbitrary predictions table (ML.RECOMMEND's pairs input).
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.types import IntegerType, StructField, StructType

from recsys.model import prediction
from recsys import schemas
from recsys.errors import InputError
from recsys.model.scoring import cast_ids, score_pairs
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel
from recsys.tasks import TaskTable, python_task

# Rows of the all-pairs ML.RECOMMEND table per partition (and so per written file).
PAIRS_PER_PARTITION = 4_000_000
# Scores held in memory at once per task (users x items doubles): about 64 MB.
SCORE_BLOCK_CELLS = 8_000_000
# Candidates re-scored exactly per user beyond k: guards the order against the last-bit
# differences between a BLAS product and the SQL formula's plain sum (see _block_top_k).
RESCORE_MARGIN = 8


def prediction_column(model: TrainedModel, col_rating: str) -> str:
    """``predicted_<rating>``, or ``predicted_<rating>_confidence`` for implicit models."""
    name = schemas.prediction_col(col_rating)
    return f"{name}_confidence" if model.implicit else name


def recommend(model: TrainedModel, input_df: Optional[DataFrame] = None, *,
              col_rating: str = "rating",
              task_table: bool = False) -> Union[DataFrame, TaskTable]:
    """ML.RECOMMEND: the prediction column, then the user and item columns, for

    - no input: every training user x every training item;
    - input with user and item columns: each row (other columns pass through);
    - input with only the user (or only the item) column: those users (items) x every item (user).
      Such an input may have only that one column, as in BigQuery ML.

    ``task_table``: the crosses (no input, or one id column) as a ``TaskTable``, which a sink
    can write from the tasks that score them (the pairs then never cross back to the JVM).
    """
    col_user, col_item = model.col_user, model.col_item
    pred_col = prediction_column(model, col_rating)
    if input_df is None:
        users = model.users.select(col_user, INTERCEPT, FACTORS)
        cross = _cross(model, users.repartition(_pair_partitions(model), col_user), "user",
                       pred_col)
        return cross if task_table else cross.frame()
    has_user, has_item = col_user in input_df.columns, col_item in input_df.columns
    if has_user and has_item:
        passthrough = [c for c in input_df.columns if c not in (col_user, col_item)]
        return score_pairs(model, input_df, pred_col).select(pred_col, col_user, col_item,
                                                             *passthrough)
    if not (has_user or has_item) or len(input_df.columns) != 1:
        raise InputError(f"recommend input must have both {col_user!r} and {col_item!r} columns, "
                         f"or exactly one of them (columns: {', '.join(input_df.columns)})")
    given_col, which = (col_user, "user") if has_user else (col_item, "item")
    table = model.users if has_user else model.items
    given = cast_ids(input_df, model).select(given_col).distinct()
    own = given.join(table.select(given_col, INTERCEPT, FACTORS), given_col, "left")
    cross = _cross(model, own, which, pred_col)
    return cross if task_table else cross.frame()


def local_side(table: DataFrame, id_col: str, rank: int):
    """A side table collected for broadcasting: ids (sorted), intercepts, factors (n, rank),
    with 0 for a NULL intercept and zeros for NULL factors."""
    local = table.select(id_col, INTERCEPT, FACTORS).toPandas()
    local = local.sort_values(id_col, kind="stable").reset_index(drop=True)
    factors = np.array([f if f is not None else [0.0] * rank for f in local[FACTORS]],
                       dtype=float).reshape(len(local), rank)
    return local[id_col].to_numpy(), local[INTERCEPT].fillna(0.0).to_numpy(dtype=float), factors


def _cross(model: TrainedModel, own: DataFrame, which: str, pred_col: str) -> TaskTable:
    """(pred, user, item) for every row of ``own`` ([id, intercept, factors] of the ``which``
    side, NULLs for unknown ids) x every row of the other side's model table."""
    col_user, col_item = model.col_user, model.col_item
    own_col, other_col = (col_user, col_item) if which == "user" else (col_item, col_user)
    other_table = model.items if which == "user" else model.users
    other_ids, other_bias, other_factors = local_side(other_table, other_col, model.rank)
    spark = model.users.sparkSession
    shared = spark.sparkContext.broadcast((other_ids, other_bias, other_factors))
    schema = T.StructType([T.StructField(pred_col, T.DoubleType(), True),
                           model.users.schema[col_user], model.items.schema[col_item]])
    rank, global_intercept = model.rank, model.global_intercept
    other_type = other_table.schema[other_col].dataType
    own_is_user = which == "user"

    @python_task
    def score(batches):
        ids_, bias_, factors_ = shared.value
        other_array = pa.array(ids_, type=_arrow_type(other_type))
        for batch in batches:
            column = batch.schema.get_field_index
            own_ids = batch.column(column(own_col))
            own_bias = prediction.arrow_bias(batch.column(column(INTERCEPT)))
            own_factors = prediction.arrow_factors(batch.column(column(FACTORS)), rank)
            for start, stop in prediction.cross_blocks(len(own_ids), len(ids_)):
                if own_is_user:
                    values = prediction.cross_scores(global_intercept + own_bias[start:stop],
                                                     bias_, own_factors[start:stop], factors_)
                else:  # items x users: the same cells, (base + item) and products commute
                    values = prediction.cross_scores(own_bias[start:stop],
                                                     global_intercept + bias_,
                                                     own_factors[start:stop], factors_)
                repeated = pc.take(own_ids, np.repeat(np.arange(start, stop), len(ids_)))
                tiled = pc.take(other_array, np.tile(np.arange(len(ids_)), stop - start))
                users, items = (repeated, tiled) if own_is_user else (tiled, repeated)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(values.ravel(), pa.float64()), users, items],
                    names=[pred_col, col_user, col_item])

    return TaskTable(own, score, schema)


def _arrow_type(spark_type: T.DataType) -> pa.DataType:
    """The Arrow type Spark exchanges for an id column type."""
    return {T.LongType: pa.int64(), T.IntegerType: pa.int32(), T.StringType: pa.string(),
            T.ShortType: pa.int16(), T.ByteType: pa.int8()}[type(spark_type)]


def _pair_partitions(model: TrainedModel) -> int:
    """Partitions for the all-pairs table: about PAIRS_PER_PARTITION rows each, a multiple of
    the cores, so that the pairs are computed and written by every core at once."""
    cores = max(model.users.sparkSession.sparkContext.defaultParallelism, 1)
    pairs = int(model.data.get("n_users") or 0) * int(model.data.get("n_items") or 0)
    return cores * max(1, math.ceil(pairs / (PAIRS_PER_PARTITION * cores)))


def supported_items(ratings: DataFrame, min_ratings: int, *, col_item: str = "item_id"
                    ) -> DataFrame:
    """Items with at least ``min_ratings`` rows in ``ratings`` (minimum support): [col_item]."""
    counts = ratings.groupBy(col_item).count()
    return counts.where(F.col("count") >= min_ratings).select(col_item)


def top_k(predictions: DataFrame, *, k: int, movies: Optional[DataFrame] = None,
          exclude: Optional[DataFrame] = None, col_user: str = "user_id",
          col_item: str = "item_id", col_prediction: str = "predicted_rating") -> DataFrame:
    """One row per user: ``recommendations`` ARRAY<STRUCT<item, movie_title, genre, predicted>>,
    best first, ties broken by the smaller item id.

    ``exclude`` (e.g. the training ratings) removes those (user, item) pairs first; ``movies``
    (movie_id, movie_title, genre) supplies titles, NULL for an item it lacks.
    """
    pred_col = col_prediction
    candidates = predictions.select(col_user, col_item, pred_col)
    if exclude is not None:
        candidates = candidates.join(exclude.select(col_user, col_item), [col_user, col_item],
                                     "left_anti")
    order = Window.partitionBy(col_user).orderBy(*schemas.topk_order(pred_col, col_item))
    best = candidates.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= k)
    return _assemble(best, movies=movies, col_user=col_user, col_item=col_item,
                     col_prediction=pred_col)


def _assemble(best: DataFrame, *, movies: Optional[DataFrame], col_user: str, col_item: str,
              col_prediction: str) -> DataFrame:
    """Rows (user, item, prediction, _rank) -> one row per user with the ranked array."""
    pred_col = col_prediction
    if movies is not None:
        titles = movies.select(F.col("movie_id").alias(col_item), "movie_title", "genre")
        best = best.join(F.broadcast(titles), col_item, "left")
    else:
        best = best.withColumn("movie_title", F.lit(None).cast("string")) \
                   .withColumn("genre", F.lit(None).cast("string"))
    entry = F.struct(F.col("_rank"), F.col(col_item), F.col("movie_title"), F.col("genre"),
                     F.col(pred_col))
    grouped = best.groupBy(col_user).agg(F.sort_array(F.collect_list(entry)).alias("_ranked"))
    element = schemas.recommendation_struct(col_item, col_prediction)
    recommendations = F.transform(F.col("_ranked"), lambda e: F.struct(
        *[e[f.name].alias(f.name) for f in element.fields]))
    return grouped.select(col_user, recommendations.alias("recommendations")).orderBy(col_user)


def top_k_for_users(model: TrainedModel, *, k: int, users: Optional[DataFrame] = None,
                    exclude: Optional[DataFrame] = None, items: Optional[DataFrame] = None,
                    movies: Optional[DataFrame] = None, col_rating: str = "rating") -> DataFrame:
    """Top-k over all items for each user, without materialising the user x item pairs.

    Same result as ``top_k(recommend(model, users), ...)``: ``users`` (one id column; default
    every training user; an unknown user gets the item intercepts' order), ``exclude`` (pairs
    left out, e.g. the training ratings), ``items`` (one id column: the only candidates, e.g.
    ``supported_items``), ``movies`` for titles. The item side (ids, intercepts, factors) is
    collected and broadcast: a few MB even for ML-25M's 59k items.
    """
    pred_col = prediction_column(model, col_rating)
    best = ranked_top_k(model, k=k, users=users, exclude=exclude, items=items,
                        col_prediction=pred_col)
    return _assemble(best, movies=movies, col_user=model.col_user, col_item=model.col_item,
                     col_prediction=pred_col)


def ranked_top_k(model: TrainedModel, *, k: int, users: Optional[DataFrame] = None,
                 exclude: Optional[DataFrame] = None, items: Optional[DataFrame] = None,
                 col_prediction: str = "predicted_rating") -> DataFrame:
    """``top_k_for_users``'s rows before they are grouped: [user, item, prediction, _rank]."""
    col_user, col_item = model.col_user, model.col_item
    pred_col = col_prediction
    item_table = model.items
    if items is not None:
        item_table = item_table.join(cast_ids(items, model).select(col_item).distinct(), col_item)
    item_ids, item_bias, item_factors = local_side(item_table, col_item, model.rank)
    spark = model.users.sparkSession
    shared = spark.sparkContext.broadcast((item_ids, item_bias, item_factors))

    user_side = model.users if users is None else (
        cast_ids(users, model).select(col_user).distinct().join(model.users, col_user, "left"))
    user_side = user_side.select(col_user, F.coalesce(F.col(INTERCEPT), F.lit(0.0)).alias("_b"),
                                 F.col(FACTORS).alias("_f"))
    if exclude is not None:
        rated = (cast_ids(exclude, model).groupBy(col_user)
                 .agg(F.collect_list(col_item).alias("_rated")))
        user_side = user_side.join(rated, col_user, "left")
    else:
        user_side = user_side.withColumn("_rated", F.lit(None).cast(
            f"array<{model.items.schema[col_item].dataType.simpleString()}>"))
    partitions = max(spark.sparkContext.defaultParallelism, 1)
    user_side = user_side.repartition(partitions, col_user)

    out_schema = StructType([model.users.schema[col_user], model.items.schema[col_item],
                             StructField(pred_col, model.users.schema[INTERCEPT].dataType),
                             StructField("_rank", IntegerType(), False)])
    global_intercept = float(model.global_intercept)

    @python_task
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids_, bias_, factors_ = shared.value
        for batch in batches:
            step = max(1, SCORE_BLOCK_CELLS // max(len(ids_), 1))
            for start in range(0, len(batch), step):
                yield _block_top_k(batch.iloc[start:start + step], k, ids_, bias_, factors_,
                                   global_intercept, col_user, col_item, pred_col)

    return user_side.mapInPandas(score, out_schema)


def _block_top_k(block: pd.DataFrame, k: int, item_ids: np.ndarray, item_bias: np.ndarray,
                 item_factors: np.ndarray, global_intercept: float, col_user: str,
                 col_item: str, pred_col: str) -> pd.DataFrame:
    """Top-k rows (user, item, prediction, rank) for a block of users against every item."""
    n_users, n_items, rank = len(block), len(item_ids), item_factors.shape[1]
    if n_items == 0:
        return pd.DataFrame({col_user: block[col_user].to_numpy()[:0], col_item: item_ids,
                             pred_col: np.zeros(0), "_rank": np.zeros(0, dtype=np.int32)})
    user_factors = np.zeros((n_users, rank))
    for row, factors in enumerate(block["_f"]):
        if factors is not None:
            user_factors[row] = factors
    user_bias = block["_b"].to_numpy(dtype=float)
    scores = user_factors @ item_factors.T + item_bias[None, :]
    for row, rated in enumerate(block["_rated"]):
        if rated is not None and len(rated):
            at = prediction.id_positions(item_ids, rated)
            scores[row, at[at >= 0]] = -np.inf
    # Candidates: every item scoring within a hair of the (k + margin)-th best, so exact ties at
    # the boundary are all kept and the item-id tie-break below sees every one of them.
    take = min(k + RESCORE_MARGIN, n_items)
    kth = np.partition(scores, n_items - take, axis=1)[:, n_items - take]
    near = scores >= (kth - 1e-9 * (np.abs(kth) + 1.0))[:, None]
    users_out, items_out, values_out, ranks_out = [], [], [], []
    base = global_intercept + user_bias
    for row in range(n_users):
        candidates = np.flatnonzero(near[row] & np.isfinite(scores[row]))
        # Re-scored with the one formula, so the values and their order match the all-pairs
        # table bit for bit.
        exact = prediction.pair_scores(base[row], item_bias[candidates], user_factors[row],
                                       item_factors[candidates])
        # Best first, ties by item id (positions in the id-sorted item array).
        order = np.lexsort((candidates, -exact))[:k]
        users_out.append(np.full(len(order), row))
        items_out.append(candidates[order])
        values_out.append(exact[order])
        ranks_out.append(np.arange(1, len(order) + 1, dtype=np.int32))
    rows = np.concatenate(users_out) if users_out else np.zeros(0, dtype=int)
    return pd.DataFrame({
        col_user: block[col_user].to_numpy()[rows],
        col_item: item_ids[np.concatenate(items_out).astype(int)] if items_out else item_ids[:0],
        pred_col: np.concatenate(values_out) if values_out else np.zeros(0),
        "_rank": np.concatenate(ranks_out) if ranks_out else np.zeros(0, dtype=np.int32)})
