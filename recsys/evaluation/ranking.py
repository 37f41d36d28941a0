"""Held-out evaluation: rating prediction on every test row, and top-k ranking under the
full-ranking protocol.

Full ranking: for each test user, every training item the user has not rated in training is a
candidate; candidates are ranked by ``predicted DESC, item ASC`` and the first k kept. The
relevant items are the user's test items with ``rating >= relevance_threshold``. Users without a
relevant test item are left out of the ranking metrics (as pyspark.ml's RankingEvaluator does with
an empty label set contributing 0 — recsys leaves them out instead, and counts them).

Metrics per user u with recommended list L_u (length k) and relevant set R_u, averaged over users:
- precision@k = |L_u ∩ R_u| / k
- recall@k    = |L_u ∩ R_u| / |R_u|
- ndcg@k      = DCG / IDCG with binary gains, DCG = sum_{pos i, L_u[i] in R_u} 1 / log2(i + 1),
  IDCG = sum_{i=1..min(k, |R_u|)} 1 / log2(i + 1)
- map@k       = sum_{pos i, L_u[i] in R_u} precision@i / min(k, |R_u|)
These are pyspark.ml RankingEvaluator's precisionAtK, recallAtK, ndcgAtK and
meanAveragePrecisionAtK (a test checks equality on the same lists).
Catalogue coverage = distinct recommended items / training items; mean popularity = mean training
rating count of the recommended items (lower = less dominated by blockbusters).
"""

from __future__ import annotations

import math
from typing import Dict, Optional

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import schemas
from recsys.evaluation.metrics import metrics_dict, regression_metrics
from recsys.model import TrainedModel, score_pairs
from recsys.model.recommend import ranked_top_k, supported_items

RANKING_METRICS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage",
                   "mean_popularity", "ranked_users")


def rating_metrics(model: TrainedModel, test: DataFrame, *, col_rating: str = "rating"
                   ) -> Dict[str, Optional[float]]:
    """RMSE, MAE and R² (plus ML.EVALUATE's other metrics) over *every* test row: a cold user
    or item is scored with the intercept fallback, never dropped."""
    pred_col = schemas.prediction_col(col_rating)
    scored = score_pairs(model, test, pred_col)
    values = metrics_dict(regression_metrics(scored, col_rating=col_rating,
                                             col_prediction=pred_col))
    values["rmse"] = math.sqrt(values["mean_squared_error"])
    values["scored_rows"] = float(scored.count())
    return values


def recommend_unseen(model: TrainedModel, train: DataFrame, users: DataFrame, *, k: int,
                     min_item_ratings: int = 0) -> DataFrame:
    """Top-k of every training item each given user has not rated in training:
    [user, item, score, rank]. Items with fewer than ``min_item_ratings`` training ratings
    are not recommended (minimum support)."""
    items = (supported_items(train, min_item_ratings, col_item=model.col_item)
             if min_item_ratings > 0 else None)
    best = ranked_top_k(model, k=k, users=users.select(model.col_user), items=items,
                        exclude=train.select(model.col_user, model.col_item),
                        col_prediction="score")
    return best.withColumnRenamed("_rank", "rank")


def ranking_metrics(top: DataFrame, test: DataFrame, train: DataFrame, *, k: int,
                    col_user: str = "user_id", col_item: str = "item_id",
                    col_rating: str = "rating", relevance_threshold: float = 4.0
                    ) -> Dict[str, Optional[float]]:
    """precision/recall/NDCG/MAP@k of ``top`` ([user, item, rank]) against the relevant test
    items, plus catalogue coverage and mean popularity of everything recommended."""
    relevant = (test.where(F.col(col_rating) >= relevance_threshold)
                .select(col_user, col_item).distinct())
    n_rel = relevant.groupBy(col_user).agg(F.count(F.lit(1)).alias("n_rel"))
    hits = (top.join(relevant.withColumn("hit", F.lit(1)), [col_user, col_item], "left")
            .fillna(0, subset=["hit"]))
    # Cumulative hits up to each position: precision@i at the relevant positions.
    upto = Window.partitionBy(col_user).orderBy("rank").rowsBetween(Window.unboundedPreceding, 0)
    hits = hits.withColumn("cum_hits", F.sum("hit").over(upto))
    per_user = hits.groupBy(col_user).agg(
        F.sum("hit").alias("n_hit"),
        F.sum(F.when(F.col("hit") == 1, 1.0 / F.log2(F.col("rank") + 1)).otherwise(0.0)).alias("dcg"),
        F.sum(F.when(F.col("hit") == 1, F.col("cum_hits") / F.col("rank")).otherwise(0.0))
        .alias("ap_sum"),
    ).join(n_rel, col_user)   # users without a relevant test item are left out
    ideal = F.expr(f"aggregate(sequence(1, least(n_rel, {k})), 0D, "
                   f"(acc, i) -> acc + 1D / log2(i + 1))")
    summary = per_user.select(
        (F.col("n_hit") / F.lit(k)).alias("p"),
        (F.col("n_hit") / F.col("n_rel")).alias("r"),
        (F.col("dcg") / ideal).alias("ndcg"),
        (F.col("ap_sum") / F.least(F.col("n_rel"), F.lit(k))).alias("ap"),
    ).agg(F.avg("p"), F.avg("r"), F.avg("ndcg"), F.avg("ap"), F.count(F.lit(1))).head()
    popularity = train.groupBy(col_item).agg(F.count(F.lit(1)).alias("n"))
    spread = top.join(popularity, col_item, "left").agg(
        F.countDistinct(col_item).alias("items"), F.avg("n").alias("pop")).head()
    n_items = train.select(col_item).distinct().count()
    return {
        "precision_at_k": summary[0], "recall_at_k": summary[1], "ndcg_at_k": summary[2],
        "map_at_k": summary[3], "coverage": spread["items"] / n_items if n_items else None,
        "mean_popularity": spread["pop"], "ranked_users": float(summary[4]),
    }
