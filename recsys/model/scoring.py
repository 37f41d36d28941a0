"""Scoring pairs with a trained model: ``score_pairs`` (the prediction of each (user, item) row,
``recsys.model.prediction``'s formula in the tasks) and ``training_loss`` (ML.TRAINING_INFO's
loss). Small model sides are broadcast and looked up by id; larger ones are joined."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.model import prediction
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel
from recsys.sums import exact_avg
from recsys.tasks import python_task


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


def training_loss(model: TrainedModel, ratings: DataFrame, *, col_rating: str) -> float:
    """ML.TRAINING_INFO's loss: MSE of the predictions over ``ratings``.

    Implicit models: mean of (1 - prediction)^2 over the observed (positive) rows, i.e. the
    preference error where p = 1; the unobserved pairs' part of the weighted loss is left out.
    """
    scored = score_pairs(model, ratings, "_pred")
    target = F.lit(1.0) if model.implicit else F.col(col_rating)
    value = scored.agg(exact_avg(F.pow(target - F.col("_pred"), 2))).head()[0]
    return float(value) if value is not None else float("nan")
