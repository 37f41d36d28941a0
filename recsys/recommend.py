"""ML.RECOMMEND and the top-k table.

Predictions are the dot product of the ALS user and item factors, computed in Spark from the
factor tables (no Python UDF). A user or item the model has not seen gets the training mean.
Top-k ranks by ``predicted DESC, item ASC`` so ties always resolve the same way.
"""

from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import schemas
from recsys.errors import InputError
from recsys.model import TrainedModel


def _factors(model: TrainedModel, side: str, id_col: str) -> DataFrame:
    table = model.als.userFactors if side == "user" else model.als.itemFactors
    return table.select(F.col("id").cast("long").alias(id_col), F.col("features").alias(f"_{side}_f"))


def _dot(left: str, right: str):
    products = F.zip_with(F.col(left), F.col(right), lambda a, b: a.cast("double") * b.cast("double"))
    return F.aggregate(products, F.lit(0.0).cast("double"), lambda acc, x: acc + x)


def _score(joined: DataFrame, model: TrainedModel, pred_col: str) -> DataFrame:
    # Unknown user or item: no factors, so the prediction falls back to the training mean.
    return joined.withColumn(pred_col, F.coalesce(_dot("_user_f", "_item_f"),
                                                  F.lit(model.global_mean))) \
                 .drop("_user_f", "_item_f")


def recommend(model: TrainedModel, input_df: Optional[DataFrame] = None, *,
              col_user: str = "user_id", col_item: str = "item_id",
              col_rating: str = "rating") -> DataFrame:
    """ML.RECOMMEND: ``predicted_<rating>`` for

    - no input: every training user x every training item;
    - input with user and item columns: each row (other columns pass through);
    - input with only the user (or only the item) column: those users (items) x every item (user).
    """
    pred_col = schemas.prediction_col(col_rating)
    users, items = _factors(model, "user", col_user), _factors(model, "item", col_item)
    if input_df is None:
        scored = _score(users.crossJoin(items), model, pred_col)
        return scored.select(pred_col, col_user, col_item)
    has_user, has_item = col_user in input_df.columns, col_item in input_df.columns
    if not (has_user or has_item):
        raise InputError(f"recommend input needs a {col_user!r} or {col_item!r} column "
                         f"(columns: {', '.join(input_df.columns)})")
    if has_user and has_item:
        rows = input_df.withColumn(col_user, F.col(col_user).cast("long")) \
                       .withColumn(col_item, F.col(col_item).cast("long"))
        joined = rows.join(users, col_user, "left").join(items, col_item, "left")
        passthrough = [c for c in input_df.columns if c not in (col_user, col_item)]
        return _score(joined, model, pred_col).select(pred_col, col_user, col_item, *passthrough)
    given_col, other = (col_user, items) if has_user else (col_item, users)
    given = input_df.select(F.col(given_col).cast("long").alias(given_col)).distinct()
    own = users if has_user else items
    joined = given.join(own, given_col, "left").crossJoin(other)
    return _score(joined, model, pred_col).select(pred_col, col_user, col_item)


def top_k(predictions: DataFrame, *, k: int, movies: Optional[DataFrame] = None,
          exclude: Optional[DataFrame] = None, col_user: str = "user_id",
          col_item: str = "item_id", col_rating: str = "rating") -> DataFrame:
    """One row per user: ``recommendations`` ARRAY<STRUCT<item, movie_title, genre, predicted>>,
    best first, ties broken by the smaller item id.

    ``exclude`` (e.g. the training ratings) removes those (user, item) pairs first; ``movies``
    (movie_id, movie_title, genre) supplies titles, NULL for an item it lacks.
    """
    pred_col = schemas.prediction_col(col_rating)
    candidates = predictions.select(col_user, col_item, pred_col)
    if exclude is not None:
        candidates = candidates.join(exclude.select(col_user, col_item), [col_user, col_item],
                                     "left_anti")
    order = Window.partitionBy(col_user).orderBy(F.col(pred_col).desc_nulls_last(),
                                                 F.col(col_item).asc())
    best = candidates.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= k)
    if movies is not None:
        titles = movies.select(F.col("movie_id").alias(col_item), "movie_title", "genre")
        best = best.join(F.broadcast(titles), col_item, "left")
    else:
        best = best.withColumn("movie_title", F.lit(None).cast("string")) \
                   .withColumn("genre", F.lit(None).cast("string"))
    entry = F.struct(F.col("_rank"), F.col(col_item), F.col("movie_title"), F.col("genre"),
                     F.col(pred_col))
    grouped = best.groupBy(col_user).agg(F.sort_array(F.collect_list(entry)).alias("_ranked"))
    element = schemas.recommendation_struct(col_item, col_rating)
    recommendations = F.transform(F.col("_ranked"), lambda e: F.struct(
        *[e[f.name].alias(f.name) for f in element.fields]))
    return grouped.select(col_user, recommendations.alias("recommendations")).orderBy(col_user)
