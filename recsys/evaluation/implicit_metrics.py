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

How they are computed
---------------------
One user at a time, in NumPy (``user_metrics``), never as a table of every user x item pair:
the training-time ML.EVALUATE of an implicit model ranks every item for every user (22 M pairs
at ML-1M shape), and windows or joins over such a table run out of memory. A position is a
count, 1 + #{scored items ahead of it} (``_positions``: the relevant items' scores looked up in
one sorted copy of the user's scores). ``model_implicit_metrics`` scores a block of users
against the broadcast item side in each task with one BLAS product (memory grows with users +
items; ML-25M's 9.6 G cells at BLAS speed) and settles with the prediction formula the few
items the product cannot order, so the positions are the formula's; its squared errors over
every item are summed in closed form. ``implicit_metrics`` takes a given scores table, one
user's rows at a time (cogroup). The per-user values are then added with ``recsys.sums``'s
exact sums, so the metrics are the same to the last bit on any number of cores.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType

from recsys.model import FACTORS, INTERCEPT, TrainedModel, cast_ids, prediction
from recsys.model.recommend import SCORE_BLOCK_CELLS, local_side
from recsys.schemas import IMPLICIT_METRICS
from recsys.sums import exact_avg, exact_sum
from recsys.tasks import forget_zip_importers, python_task

COVERAGE_COLUMNS = (
    "evaluated_users",          # users with at least one relevant item (r > 0)
    "users_without_relevant",   # users in truth whose ratings are all <= 0 (not ranked)
    "users_without_scores",     # evaluated users with no usable score at all
    "relevant_pairs",
    "unscored_relevant_pairs",  # relevant pairs counted as misses ranked last
)

# Internal column names, prefixed so they cannot collide with the caller's names.
_U, _I, _R, _S = "__user", "__item", "__rating", "__score"
# One row per truth user: its share of each metric (NULL ranking values without relevant items).
_USER_SCHEMA = ("sq_err double, scored long, ap double, ndcg double, weighted_rank double, "
                "rating_sum double")


def _check_k(k: Optional[int]) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")


def user_metrics(scores: np.ndarray, relevant_at: np.ndarray, relevant_ratings: np.ndarray,
                 missing_ratings: np.ndarray, k: Optional[int] = None
                 ) -> Tuple[float, int, Optional[float], Optional[float], Optional[float],
                            Optional[float]]:
    """One user's share of the four metrics (definitions: module docstring).

    ``scores``: the user's candidate items in item id order (NaN: unscored), so that equal
    scores rank by position; ``relevant_at``: positions of the relevant items (r > 0) among the
    candidates, ``relevant_ratings`` their ratings; ``missing_ratings``: ratings of relevant
    items that are not candidates. Returns (sum of squared errors, scored pairs, AP, NDCG,
    sum of r * percentile, sum of r); the last four are None without a relevant item.

    >>> user_metrics(np.array([0.9, 0.8, 0.7, 0.2]), np.array([0, 2]), np.array([1.0, 3.0]),
    ...              np.array([]))[2:]  # AP 5/6, NDCG 2.5 / (3 + 1/log2(3)), 0 + 3 * 2/3, 4
    (0.8333333333333333, 0.6885288809404666, 2.0, 4.0)
    """
    scored = ~np.isnan(scores)
    n_scored = int(np.count_nonzero(scored))
    preference = np.zeros(len(scores))
    preference[relevant_at] = 1.0
    sq_err = float(np.sum(np.square(preference - scores)[scored]))
    hit = scored[relevant_at]  # a relevant candidate with a NaN score is a miss too
    misses = np.concatenate([missing_ratings, relevant_ratings[~hit]])
    usable = scores if n_scored == len(scores) else scores[scored]
    positions = _positions(usable, np.cumsum(scored)[relevant_at[hit]] - 1)
    return (sq_err, n_scored) + _ranking(positions, relevant_ratings[hit], misses, n_scored, k)


def _ranking(positions: np.ndarray, gains: np.ndarray, misses: np.ndarray, n_scored: int,
             k: Optional[int]) -> Tuple[Optional[float], ...]:
    """(AP, NDCG, sum of r * percentile, sum of r) from the 1-based positions of the scored
    relevant items, their ratings and the ratings of the unscored ones (misses)."""
    n_relevant = len(positions) + len(misses)
    if n_relevant == 0:
        return None, None, None, None
    order = np.argsort(positions)
    pos, gains = positions[order], gains[order]
    hits = np.arange(1, len(pos) + 1)
    top = pos <= (k if k is not None else n_scored)
    ap = float(np.sum(hits[top] / pos[top])) / (n_relevant if k is None else min(k, n_relevant))
    dcg = float(np.sum(gains[top] / np.log2(pos[top] + 1.0)))
    ideal = np.sort(np.concatenate([gains, misses]))[::-1][:k]
    idcg = float(np.sum(ideal / np.log2(np.arange(2, len(ideal) + 2))))
    percentile = (pos - 1) / max(n_scored - 1, 1)
    weighted_rank = float(np.sum(gains * percentile) + np.sum(misses))
    rating_sum = float(np.sum(gains) + np.sum(misses))
    return ap, dcg / idcg, weighted_rank, rating_sum


def _positions(scores: np.ndarray, at: np.ndarray, tolerance: float = 0.0,
               rescore: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> np.ndarray:
    """1-based positions of ``scores[at]`` in the order score DESC, then position ASC.

    A position is 1 + the scores above + the equal scores before, counted in one sorted copy of
    the scores. ``scores`` may be approximate (a BLAS product) within ``tolerance`` of the exact
    ones, except at ``at``, where they must be exact: an item further than that from every
    target is ordered against them by its approximation alone, and the few nearer ones are
    scored exactly by ``rescore(indices)`` first, so the positions are exact.

    >>> _positions(np.array([0.5, 0.9, 0.5, 0.1]), np.array([2, 0, 3]))  # 0.9 first, then ties
    array([3, 2, 4])
    """
    targets = scores[at]
    if not len(at):
        return np.zeros(0, dtype=np.int64)
    ordered = np.sort(scores)
    upto = np.searchsorted(ordered, targets + tolerance, "right")
    if tolerance > 0:
        near = upto - np.searchsorted(ordered, targets - tolerance, "left")
        if not np.any(near > 1):  # every target is alone in its band: its own approximation
            return len(scores) - upto + 1
        scores = scores.copy()
        band = _within(scores, np.sort(targets), tolerance)
        scores[band] = rescore(band)
        ordered = np.sort(scores)
        upto = np.searchsorted(ordered, targets, "right")
    position = len(scores) - upto + 1
    ties = upto - np.searchsorted(ordered, targets, "left")
    for j in np.flatnonzero(ties > 1):  # equal scores rank by position (item id)
        position[j] += np.count_nonzero(scores[:at[j]] == targets[j])
    return position


def _within(values: np.ndarray, sorted_targets: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the values within ``tolerance`` of some target."""
    right = np.searchsorted(sorted_targets, values)
    left = np.maximum(right - 1, 0)
    right = np.minimum(right, len(sorted_targets) - 1)
    gap = np.minimum(np.abs(values - sorted_targets[left]), np.abs(values - sorted_targets[right]))
    return np.flatnonzero(gap <= tolerance)


def _metrics_row(per_user: DataFrame) -> DataFrame:
    """The one-row metrics table (IMPLICIT_METRICS) from the per-user rows, with exact sums."""
    row = per_user.agg(
        exact_avg(F.col("ap")).alias("mean_average_precision"),
        # No scored pair at all: NULL (a plain division by 0 fails under ANSI mode).
        F.when(F.sum("scored") > 0, exact_sum(F.col("sq_err")) / F.sum("scored"))
        .alias("mean_squared_error"),
        exact_avg(F.col("ndcg")).alias("normalized_discounted_cumulative_gain"),
        (exact_sum(F.col("weighted_rank")) / exact_sum(F.col("rating_sum")))
        .alias("average_rank"))
    return row.select(*[F.col(name).cast("double").alias(name) for name in IMPLICIT_METRICS])


def _truth_pairs(truth: DataFrame, col_user: str, col_item: str, col_rating: str) -> DataFrame:
    """Truth renamed and summed per (user, item): duplicate interactions accumulate."""
    return (truth.select(F.col(col_user).alias(_U), F.col(col_item).alias(_I),
                         F.col(col_rating).cast("double").alias(_R))
            .groupBy(_U, _I).agg(F.sum(_R).alias(_R)))


def _usable_scores(scores: DataFrame, truth_pairs: DataFrame, col_user: str, col_item: str,
                   col_prediction: str) -> DataFrame:
    """The usable scores of truth users, one per pair (the highest)."""
    score = F.col(col_prediction).cast("double")
    return (scores.select(F.col(col_user).alias(_U), F.col(col_item).alias(_I), score.alias(_S))
            # NULL/NaN scores (ALS cold start) are "unscored": NaN would sort first in DESC.
            .where(F.col(_S).isNotNull() & ~F.isnan(_S))
            .groupBy(_U, _I).agg(F.max(_S).alias(_S))
            .join(truth_pairs.select(_U).distinct(), _U, "left_semi"))


def implicit_metrics(truth: DataFrame, scores: DataFrame, *, col_user: str = "user_id",
                     col_item: str = "item_id", col_rating: str = "rating",
                     col_prediction: str = "predicted_rating_confidence",
                     k: Optional[int] = None) -> DataFrame:
    """One-row DataFrame of ML.EVALUATE's four implicit metrics (definitions: module docstring).

    ``truth``: observed (user, item, rating) of the evaluation set; ``scores``: predicted
    confidence for the candidate (user, item) pairs, typically every item for each truth user.
    ``k`` truncates MAP and NDCG to the top k positions; None ranks the whole list.
    A model's own scores need no table: ``model_implicit_metrics``.
    """
    _check_k(k)
    truth_pairs = _truth_pairs(truth, col_user, col_item, col_rating)
    usable = _usable_scores(scores, truth_pairs, col_user, col_item, col_prediction)

    def one_user(truth_rows: pd.DataFrame, score_rows: pd.DataFrame) -> pd.DataFrame:
        forget_zip_importers()
        if truth_rows.empty:  # a scored user absent from truth (left out by the semi-join)
            return _user_batch([]).to_pandas()
        score_rows = score_rows.sort_values(_I, kind="stable")
        candidates = score_rows[_I].to_numpy()
        relevant = truth_rows[truth_rows[_R] > 0]
        at = prediction.id_positions(candidates, relevant[_I].to_numpy())
        ratings = relevant[_R].to_numpy(dtype=float)
        found = at >= 0
        return _user_batch([user_metrics(score_rows[_S].to_numpy(dtype=float), at[found],
                                         ratings[found], ratings[~found], k)]).to_pandas()

    per_user = (truth_pairs.groupBy(_U).cogroup(usable.groupBy(_U))
                .applyInPandas(one_user, _USER_SCHEMA))
    return _metrics_row(per_user)


def model_implicit_metrics(model: TrainedModel, truth: DataFrame, *, col_rating: str = "rating",
                           k: Optional[int] = None) -> DataFrame:
    """``implicit_metrics`` of ``model``'s scores of every model item for each truth user (the
    scores ML.RECOMMEND gives them; a user unknown to the model gets the item intercepts), without
    a table of those pairs: the item side is broadcast and each task scores its block of users
    against it.

    The ranks are those of ``recsys.model.prediction``'s formula, found with one BLAS product
    per block of users and the formula for the items a product cannot order
    (``_positions``); the squared errors over every item are summed in closed form from the item
    side's moments (``_squares``). Neither depends on how users fall into blocks."""
    _check_k(k)
    col_user, col_item = model.col_user, model.col_item
    truth = cast_ids(truth.select(col_user, col_item, col_rating), model)
    truth_pairs = _truth_pairs(truth, col_user, col_item, col_rating)
    per_user_truth = truth_pairs.groupBy(_U).agg(
        F.collect_list(F.when(F.col(_R) > 0, F.col(_I))).alias("_items"),
        F.collect_list(F.when(F.col(_R) > 0, F.col(_R))).alias("_ratings"))
    users = (per_user_truth.join(model.users.select(F.col(col_user).alias(_U), INTERCEPT, FACTORS),
                                 _U, "left")
             .select("_items", "_ratings", INTERCEPT, FACTORS))
    spark = model.users.sparkSession
    users = users.repartition(max(spark.sparkContext.defaultParallelism, 1))
    item_side = local_side(model.items, col_item, model.rank)
    shared = spark.sparkContext.broadcast(item_side + (_item_moments(*item_side[1:]),))
    rank, global_intercept = model.rank, float(model.global_intercept)

    @python_task
    def per_user(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        item_ids, item_bias, item_factors, moments = shared.value
        step = max(1, SCORE_BLOCK_CELLS // max(len(item_ids), 1))
        for batch in batches:
            column = batch.schema.get_field_index
            base = global_intercept + prediction.arrow_bias(batch.column(column(INTERCEPT)))
            user_factors = prediction.arrow_factors(batch.column(column(FACTORS)), rank)
            items = batch.column(column("_items")).to_pylist()
            ratings = batch.column(column("_ratings")).to_pylist()
            rows = []
            for start in range(0, len(base), step):
                stop = min(start + step, len(base))
                rows.extend(_block_metrics(base[start:stop], user_factors[start:stop],
                                           items[start:stop], ratings[start:stop], item_ids,
                                           item_bias, item_factors, moments, k))
            yield _user_batch(rows)

    return _metrics_row(users.mapInArrow(per_user, _USER_SCHEMA))


def _block_metrics(base, user_factors, items, ratings, item_ids, item_bias, item_factors,
                   moments, k):
    """``user_metrics`` rows of a block of users scored against every item."""
    approx = prediction.blas_cross(base, item_bias, user_factors, item_factors)
    tolerance = prediction.blas_tolerance(base, item_bias, user_factors, item_factors)
    squares = _squares(base, user_factors, moments)
    rows = []
    for row in range(len(base)):
        at = prediction.id_positions(item_ids, items[row])
        gains = np.asarray(ratings[row], dtype=float)
        found = at >= 0
        at, misses, gains = at[found], gains[~found], gains[found]

        def exact(indices, row=row):
            return prediction.pair_scores(base[row], item_bias[indices], user_factors[row],
                                          item_factors[indices])

        scores = approx[row]
        relevant = exact(at)
        scores[at] = relevant
        # Every item's squared error against preference 0, then the relevant ones' against 1.
        sq_err = float((squares[row] - np.sum(np.square(relevant)))
                       + np.sum(np.square(1.0 - relevant)))
        positions = _positions(scores, at, float(tolerance[row]), exact)
        rows.append((sq_err, len(item_ids))
                    + _ranking(positions, gains, misses, len(item_ids), k))
    return rows


def _item_moments(item_bias: np.ndarray, item_factors: np.ndarray):
    """The item side's sums that give sum_i score_ui^2 for any user (``_squares``), summed in a
    fixed order (einsum's loops, not BLAS) so they are the same on every machine."""
    return (len(item_bias), math.fsum(item_bias), math.fsum(item_bias * item_bias),
            np.einsum("ij->j", item_factors), np.einsum("i,ij->j", item_bias, item_factors),
            np.einsum("ij,ik->jk", item_factors, item_factors))


def _squares(base: np.ndarray, user_factors: np.ndarray, moments) -> np.ndarray:
    """sum over every item of score_ui^2 = (c + b_i + x.y_i)^2 per user, expanded:
    n c^2 + 2c sum b + sum b^2 + 2c x.sum y + 2 x.sum b y + x' (sum y y') x, each product in
    the formula's left-to-right order, so a user's value does not depend on its block."""
    n, bias_sum, bias_squares, factor_sum, bias_factor_sum, gram = moments
    quadratic = prediction.row_dots(user_factors,
                                    prediction.row_dots(user_factors[:, None, :], gram[None]))
    return (n * base * base + 2.0 * base * bias_sum + bias_squares
            + 2.0 * base * prediction.row_dots(user_factors, factor_sum[None, :])
            + 2.0 * prediction.row_dots(user_factors, bias_factor_sum[None, :]) + quadratic)


_USER_FIELDS = [("sq_err", pa.float64()), ("scored", pa.int64()), ("ap", pa.float64()),
                ("ndcg", pa.float64()), ("weighted_rank", pa.float64()),
                ("rating_sum", pa.float64())]


def _user_batch(rows) -> pa.RecordBatch:
    """``user_metrics`` results as a batch of ``_USER_SCHEMA`` rows (None -> NULL)."""
    columns = list(zip(*rows)) if rows else [[] for _ in _USER_FIELDS]
    return pa.RecordBatch.from_arrays(
        [pa.array(list(values), type) for values, (_, type) in zip(columns, _USER_FIELDS)],
        names=[name for name, _ in _USER_FIELDS])


def implicit_coverage(truth: DataFrame, scores: DataFrame, *, col_user: str = "user_id",
                      col_item: str = "item_id", col_rating: str = "rating",
                      col_prediction: str = "predicted_rating_confidence") -> DataFrame:
    """One-row DataFrame of counts (COVERAGE_COLUMNS) of what ``implicit_metrics`` ranked,
    skipped, or counted as a miss."""
    truth_pairs = _truth_pairs(truth, col_user, col_item, col_rating)
    usable = _usable_scores(scores, truth_pairs, col_user, col_item, col_prediction)
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
