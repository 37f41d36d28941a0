"""ML.EVALUATE's implicit-feedback metrics (FEEDBACK_TYPE='IMPLICIT'), computed in Spark.

What BigQuery ML documents
--------------------------
ML.EVALUATE returns one row with ``mean_average_precision``, ``mean_squared_error``,
``normalized_discounted_cumulative_gain`` and ``average_rank`` for an implicit matrix
factorization model (ML.EVALUATE reference, "The ML.EVALUATE function",
cloud.google.com/bigquery-ml/docs/reference/standard-sql/bigqueryml-syntax-evaluate; it links
average_rank to the Hu, Koren & Volinsky paper). The BigQuery v2 REST type ``RankingMetrics``
("Evaluation metrics used by weighted-ALS models specified by feedback_type=implicit") says only:

- meanAveragePrecision: "a precision per user for all the items by ranking them and then
  averages all the precisions across all the users";
- meanSquaredError: like the explicit MSE, but "computed against a preference which is 1 or 0
  depending on if the rating exists or not";
- normalizedDiscountedCumulativeGain: the ranking by predicted confidence "compared to an ideal
  rank measured by the original ratings";
- averageRank: "the percentile rank from the predicted confidence".

The implicit model uses preference p_ui = 1 where r_ui > 0 (else 0), confidence
c_ui = 1 + WALS_ALPHA * r_ui, and scores are ``predicted_<rating_col>_confidence`` (intercept 0).

What we chose where the docs are silent
---------------------------------------
Each evaluated user u ranks its scored candidate items by ``score DESC, item ASC`` (the item id
breaks ties deterministically); pos_ui = 1..n_u. R_u = {i : r_ui > 0} are u's relevant items
(duplicate truth rows of a pair are summed, as implicit counts accumulate). K = k or infinity.

- mean_average_precision = mean over users with R_u non-empty of
  AP_u = sum_{i in R_u, pos_ui <= K} precision@pos_ui / min(K, |R_u|),
  precision@p = |{relevant items at positions 1..p}| / p. (Standard AP; min(K, |R_u|) as in
  Spark's RankingMetrics.meanAveragePrecisionAt, so a perfect top-K list scores 1.)
- mean_squared_error = mean of (p_ui - score_ui)^2 over every scored pair of a user present in
  ``truth``: pairs absent from truth have preference 0, as the REST docs say. Unweighted (the
  docs mention no confidence weights); k does not apply.
- normalized_discounted_cumulative_gain = mean over the same users of DCG_u / IDCG_u with the
  original rating as a linear gain ("ideal rank measured by the original ratings"):
  DCG_u = sum_{i in R_u, pos_ui <= K} r_ui / log2(pos_ui + 1), IDCG_u = the same sum over R_u
  sorted by rating descending. Linear rather than 2^r - 1 gain, because implicit ratings
  (counts, durations) can be large.
- average_rank = Hu, Koren & Volinsky (ICDM 2008, "Collaborative Filtering for Implicit Feedback
  Datasets") expected percentile rank: sum_{u, i in R_u} r_ui * rank_ui / sum r_ui, with
  rank_ui = (pos_ui - 1) / (n_u - 1) as a fraction in [0, 1] (0 = top; 0 when n_u = 1); lower
  is better, 0.5 ~ random. Always over the full list; k does not apply.

Missing scores: a relevant pair with no score (or a NULL/NaN score, e.g. ALS cold start) counts
as a miss ranked last: it adds nothing to AP or DCG but stays in |R_u| and IDCG, and gets
rank 1.0. A truth user without any score is therefore AP 0, NDCG 0, rank 1.0, so a model cannot
improve its metrics by scoring less. Such pairs are left out of mean_squared_error (there is no
prediction to compare). Users whose truth rows all have r <= 0 have no relevant item and are
left out of MAP/NDCG. ``implicit_coverage`` counts all of these. With no relevant pair at all
the ranking metrics are NULL, never NaN.
"""

from __future__ import annotations

from typing import Dict, Optional

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType

from recsys import schemas
from recsys.schemas import IMPLICIT_METRICS

COVERAGE_COLUMNS = (
    "evaluated_users",          # users with at least one relevant item (r > 0)
    "users_without_relevant",   # users in truth whose ratings are all <= 0 (not ranked)
    "users_without_scores",     # evaluated users with no usable score at all
    "relevant_pairs",
    "unscored_relevant_pairs",  # relevant pairs counted as misses ranked last
)

# Internal column names, prefixed so they cannot collide with the caller's names.
_U, _I, _R, _S = "__user", "__item", "__rating", "__score"


def _check_k(k: Optional[int]) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")


def _prepared(truth: DataFrame, scores: DataFrame, col_user: str, col_item: str,
              col_rating: str, col_prediction: str):
    """(truth per pair, usable scores of truth users): renamed, deduplicated, typed."""
    truth_pairs = (truth.select(F.col(col_user).alias(_U), F.col(col_item).alias(_I),
                                F.col(col_rating).cast("double").alias(_R))
                   .groupBy(_U, _I).agg(F.sum(_R).alias(_R)))
    score = F.col(col_prediction).cast("double")
    usable = (scores.select(F.col(col_user).alias(_U), F.col(col_item).alias(_I), score.alias(_S))
              # NULL/NaN scores (ALS cold start) are "unscored": NaN would sort first in DESC.
              .where(F.col(_S).isNotNull() & ~F.isnan(_S))
              .groupBy(_U, _I).agg(F.max(_S).alias(_S))
              .join(truth_pairs.select(_U).distinct(), _U, "left_semi"))
    return truth_pairs, usable


def implicit_metrics(truth: DataFrame, scores: DataFrame, *, col_user: str = "user_id",
                     col_item: str = "item_id", col_rating: str = "rating",
                     col_prediction: str = "predicted_rating_confidence",
                     k: Optional[int] = None) -> DataFrame:
    """One-row DataFrame of ML.EVALUATE's four implicit metrics (definitions: module docstring).

    ``truth``: observed (user, item, rating) of the evaluation set; ``scores``: predicted
    confidence for the candidate (user, item) pairs, typically every item for each truth user.
    ``k`` truncates MAP and NDCG to the top k positions; None ranks the whole list.
    """
    _check_k(k)
    truth_pairs, usable = _prepared(truth, scores, col_user, col_item, col_rating, col_prediction)

    by_score = Window.partitionBy(_U).orderBy(*schemas.topk_order(_S, _I))
    ranked = (usable.withColumn("pos", F.row_number().over(by_score))
              .withColumn("n", F.count(F.lit(1)).over(Window.partitionBy(_U))))

    # MSE over every scored pair of a truth user, against the 0/1 preference.
    preference = F.when(F.col(_R) > 0, 1.0).otherwise(0.0)
    mse = (ranked.join(truth_pairs, [_U, _I], "left")
           .agg(F.avg(F.pow(preference - F.col(_S), 2)).alias("mean_squared_error")))

    relevant = (truth_pairs.where(F.col(_R) > 0)
                .join(ranked.select(_U, _I, "pos", "n"), [_U, _I], "left"))
    # Unscored items sort last, so the running hit count only sees scored relevant items.
    hits = F.row_number().over(Window.partitionBy(_U).orderBy(F.col("pos").asc_nulls_last()))
    ideal_pos = F.row_number().over(
        Window.partitionBy(_U).orderBy(F.col(_R).desc(), F.col(_I).asc()))
    pos = F.col("pos")
    in_top = pos.isNotNull() if k is None else pos <= k
    ideal_in_top = F.lit(True) if k is None else F.col("ideal_pos") <= k
    percentile = F.coalesce((pos - 1) / F.greatest(F.col("n") - 1, F.lit(1)), F.lit(1.0))

    per_user = (relevant.withColumn("hits", hits).withColumn("ideal_pos", ideal_pos)
                .groupBy(_U).agg(
                    F.sum(F.when(in_top, F.col("hits") / pos).otherwise(0.0)).alias("ap_sum"),
                    F.count(F.lit(1)).alias("n_relevant"),
                    F.sum(F.when(in_top, F.col(_R) / F.log2(pos + 1)).otherwise(0.0)).alias("dcg"),
                    F.sum(F.when(ideal_in_top, F.col(_R) / F.log2(F.col("ideal_pos") + 1))
                          .otherwise(0.0)).alias("idcg"),
                    F.sum(F.col(_R) * percentile).alias("weighted_rank"),
                    F.sum(_R).alias("rating_sum")))
    ap_denominator = F.col("n_relevant") if k is None else F.least(F.col("n_relevant"), F.lit(k))
    ranking = per_user.agg(
        F.avg(F.col("ap_sum") / ap_denominator).alias("mean_average_precision"),
        F.avg(F.col("dcg") / F.col("idcg")).alias("normalized_discounted_cumulative_gain"),
        (F.sum("weighted_rank") / F.sum("rating_sum")).alias("average_rank"))

    return ranking.crossJoin(mse).select(
        *[F.col(name).cast("double").alias(name) for name in IMPLICIT_METRICS])


def implicit_coverage(truth: DataFrame, scores: DataFrame, *, col_user: str = "user_id",
                      col_item: str = "item_id", col_rating: str = "rating",
                      col_prediction: str = "predicted_rating_confidence") -> DataFrame:
    """One-row DataFrame of counts (COVERAGE_COLUMNS) of what ``implicit_metrics`` ranked,
    skipped, or counted as a miss."""
    truth_pairs, usable = _prepared(truth, scores, col_user, col_item, col_rating, col_prediction)
    scored_users = usable.select(_U).distinct().withColumn("has_scores", F.lit(True))
    relevant = (truth_pairs.withColumn("is_relevant", F.col(_R) > 0)
                .join(usable.select(_U, _I, F.lit(True).alias("scored")), [_U, _I], "left"))
    per_user = (relevant.groupBy(_U).agg(
        F.sum(F.col("is_relevant").cast("long")).alias("relevant"),
        F.sum((F.col("is_relevant") & F.col("scored").isNull()).cast("long")).alias("unscored"))
        .join(scored_users, _U, "left"))
    evaluated = F.col("relevant") > 0
    counts = per_user.agg(
        F.sum(evaluated.cast("long")).alias("evaluated_users"),
        F.sum((~evaluated).cast("long")).alias("users_without_relevant"),
        F.sum((evaluated & F.col("has_scores").isNull()).cast("long"))
        .alias("users_without_scores"),
        F.sum("relevant").alias("relevant_pairs"),
        F.sum("unscored").alias("unscored_relevant_pairs"))
    # coalesce: an empty truth table gives zero counts, not NULLs.
    return counts.select(*[F.coalesce(F.col(c), F.lit(0)).cast(LongType()).alias(c)
                           for c in COVERAGE_COLUMNS])


def metrics_dict(metrics: DataFrame) -> Dict[str, Optional[float]]:
    """A one-row metrics (or coverage) table as an ordered dict; NULL stays None."""
    row = metrics.head()
    return {name: row[name] for name in metrics.columns}
