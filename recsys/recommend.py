"""ML.RECOMMEND and the top-k table.

Predictions come from the model's side tables (``recsys.model.side``/``predicted``), computed in
Spark without Python UDFs: global + user intercept + item intercept + x_u . y_i, where an unknown
user or item contributes nothing (BigQuery ML's fallback to the known side's intercept).
Top-k ranks by ``predicted DESC, item ASC`` so ties always resolve the same way.
"""

from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import schemas
from recsys.errors import InputError
from recsys.model import TrainedModel, cast_ids, predicted, score_pairs, side


def prediction_column(model: TrainedModel, col_rating: str) -> str:
    """``predicted_<rating>``, or ``predicted_<rating>_confidence`` for implicit models."""
    name = schemas.prediction_col(col_rating)
    return f"{name}_confidence" if model.implicit else name


def recommend(model: TrainedModel, input_df: Optional[DataFrame] = None, *,
              col_rating: str = "rating") -> DataFrame:
    """ML.RECOMMEND: the prediction column, then the user and item columns, for

    - no input: every training user x every training item;
    - input with user and item columns: each row (other columns pass through);
    - input with only the user (or only the item) column: those users (items) x every item (user).
      Such an input may have only that one column, as in BigQuery ML.
    """
    col_user, col_item = model.col_user, model.col_item
    pred_col = prediction_column(model, col_rating)
    users, items = side(model, "user"), side(model, "item")
    if input_df is None:
        return users.crossJoin(items).select(predicted(model).alias(pred_col), col_user, col_item)
    has_user, has_item = col_user in input_df.columns, col_item in input_df.columns
    if has_user and has_item:
        passthrough = [c for c in input_df.columns if c not in (col_user, col_item)]
        return score_pairs(model, input_df, pred_col).select(pred_col, col_user, col_item,
                                                             *passthrough)
    if not (has_user or has_item) or len(input_df.columns) != 1:
        raise InputError(f"recommend input must have both {col_user!r} and {col_item!r} columns, "
                         f"or exactly one of them (columns: {', '.join(input_df.columns)})")
    given_col = col_user if has_user else col_item
    given = cast_ids(input_df, model).select(given_col).distinct()
    own, other = (users, items) if has_user else (items, users)
    joined = given.join(own, given_col, "left").crossJoin(other)
    return joined.select(predicted(model).alias(pred_col), col_user, col_item)


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
    element = schemas.recommendation_struct(col_item, col_prediction)
    recommendations = F.transform(F.col("_ranked"), lambda e: F.struct(
        *[e[f.name].alias(f.name) for f in element.fields]))
    return grouped.select(col_user, recommendations.alias("recommendations")).orderBy(col_user)
