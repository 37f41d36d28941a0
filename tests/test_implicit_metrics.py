"""Implicit-feedback ML.EVALUATE metrics against a pure-Python oracle (loops over sorted lists)."""

import math
from collections import defaultdict

import numpy as np
import pytest
from pyspark.sql.types import DoubleType, LongType

from recsys.evaluation.implicit_metrics import (
    COVERAGE_COLUMNS,
    IMPLICIT_METRICS,
    implicit_coverage,
    implicit_metrics,
    metrics_dict,
)

pytestmark = pytest.mark.spark

TRUTH_DDL = "user_id long, item_id long, rating double"
SCORES_DDL = "user_id long, item_id long, predicted_rating_confidence double"


def oracle(truth_rows, score_rows, k=None):
    """The four metrics by the module's definitions, written independently with plain loops."""
    rating = defaultdict(float)
    for user, item, r in truth_rows:
        rating[(user, item)] += r  # duplicate truth rows accumulate
    truth_users = {user for user, _ in rating}
    score = {}
    for user, item, s in score_rows:
        if s is None or math.isnan(s) or user not in truth_users:
            continue
        score[(user, item)] = max(s, score.get((user, item), -math.inf))

    errors = [((1.0 if rating.get(pair, 0.0) > 0 else 0.0) - s) ** 2 for pair, s in score.items()]
    aps, ndcgs, weighted_rank, rating_sum = [], [], 0.0, 0.0
    for user in sorted(truth_users):
        relevant = {i: r for (u, i), r in rating.items() if u == user and r > 0}
        if not relevant:
            continue
        ranked = sorted(((i, s) for (u, i), s in score.items() if u == user),
                        key=lambda pair: (-pair[1], pair[0]))
        position = {item: p for p, (item, _) in enumerate(ranked, start=1)}
        depth = len(ranked) if k is None else k
        hits = ap = dcg = 0.0
        for p, (item, _) in enumerate(ranked[:depth], start=1):
            if item in relevant:
                hits += 1
                ap += hits / p
                dcg += relevant[item] / math.log2(p + 1)
        aps.append(ap / (len(relevant) if k is None else min(k, len(relevant))))
        ideal = sorted(relevant.values(), reverse=True)
        ideal = ideal if k is None else ideal[:k]
        ndcgs.append(dcg / sum(g / math.log2(j + 1) for j, g in enumerate(ideal, start=1)))
        for item, r in relevant.items():
            pct = (position[item] - 1) / max(len(ranked) - 1, 1) if item in position else 1.0
            weighted_rank += r * pct
            rating_sum += r
    return {
        "mean_average_precision": sum(aps) / len(aps) if aps else None,
        "mean_squared_error": sum(errors) / len(errors) if errors else None,
        "normalized_discounted_cumulative_gain": sum(ndcgs) / len(ndcgs) if ndcgs else None,
        "average_rank": weighted_rank / rating_sum if rating_sum else None,
    }


def run(spark, truth_rows, score_rows, **kwargs):
    truth = spark.createDataFrame(truth_rows, TRUTH_DDL)
    scores = spark.createDataFrame(score_rows, SCORES_DDL)
    return metrics_dict(implicit_metrics(truth, scores, **kwargs))


def assert_close(got, want):
    assert list(got) == list(want)
    for name, value in want.items():
        if value is None:
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


# (a) tiny hand-computed case -------------------------------------------------------------------
# user 1: scores 10:.9, 20:.8, 30:.7, 40:.2 -> order 10,20,30,40 (n=4); relevant 10 (r=1), 30 (r=3)
#   AP   = (1/1 + 2/3) / 2 = 5/6
#   DCG  = 1/log2(2) + 3/log2(4) = 2.5;  IDCG = 3/log2(2) + 1/log2(3) = 3.63093;  NDCG = 0.688529
#   percentiles: item 10 -> 0/3 = 0, item 30 -> 2/3
#   squared errors: (1-.9)^2=.01, (0-.8)^2=.64, (1-.7)^2=.09, (0-.2)^2=.04
# user 2: scores 10:.5, 20:.5 (tie -> item 10 first), 30:.1 -> order 10,20,30; relevant 20 (r=2)
#   AP = (1/2) / 1 = 0.5;  NDCG = (2/log2(3)) / (2/log2(2)) = 0.630930;  percentile 1/2
#   squared errors: .25, .25, .01
# MAP = (5/6 + 1/2)/2 = 2/3;  NDCG = (0.688529 + 0.630930)/2 = 0.659729
# average_rank = (1*0 + 3*(2/3) + 2*(1/2)) / (1+3+2) = 3/6 = 0.5;  MSE = 1.29/7 = 0.184286
HAND_TRUTH = [(1, 10, 1.0), (1, 30, 3.0), (2, 20, 2.0)]
HAND_SCORES = [(1, 10, 0.9), (1, 20, 0.8), (1, 30, 0.7), (1, 40, 0.2),
               (2, 10, 0.5), (2, 20, 0.5), (2, 30, 0.1)]


def test_hand_computed(spark):
    got = run(spark, HAND_TRUTH, HAND_SCORES)
    assert got["mean_average_precision"] == pytest.approx(2 / 3)
    assert got["mean_squared_error"] == pytest.approx(1.29 / 7)
    ndcg_user1 = 2.5 / (3 + 1 / math.log2(3))
    assert ndcg_user1 == pytest.approx(0.688529, abs=1e-6)
    assert got["normalized_discounted_cumulative_gain"] == pytest.approx(
        (ndcg_user1 + 1 / math.log2(3)) / 2)
    assert got["average_rank"] == pytest.approx(0.5)
    assert_close(got, oracle(HAND_TRUTH, HAND_SCORES))


def test_hand_computed_top_2(spark):
    # k=2: user 1 sees 10,20 -> AP = (1/1)/min(2,2) = 0.5, DCG = 1, IDCG@2 = 3.63093
    #      user 2 sees 10,20 -> AP = (1/2)/1 = 0.5, NDCG unchanged 0.630930
    # MAP@2 = 0.5; NDCG@2 = (1/3.63093 + 0.630930)/2 = 0.453171; MSE and average_rank ignore k.
    got = run(spark, HAND_TRUTH, HAND_SCORES, k=2)
    assert got["mean_average_precision"] == pytest.approx(0.5)
    assert got["normalized_discounted_cumulative_gain"] == pytest.approx(
        (1 / (3 + 1 / math.log2(3)) + 1 / math.log2(3)) / 2)
    assert got["mean_squared_error"] == pytest.approx(1.29 / 7)
    assert got["average_rank"] == pytest.approx(0.5)


def test_schema_is_four_doubles_in_bigquery_order(spark):
    truth = spark.createDataFrame(HAND_TRUTH, TRUTH_DDL)
    scores = spark.createDataFrame(HAND_SCORES, SCORES_DDL)
    result = implicit_metrics(truth, scores)
    assert result.columns == ["mean_average_precision", "mean_squared_error",
                              "normalized_discounted_cumulative_gain", "average_rank"]
    assert list(IMPLICIT_METRICS) == result.columns
    assert all(isinstance(f.dataType, DoubleType) for f in result.schema.fields)
    assert result.count() == 1


# (b) random data with ties ---------------------------------------------------------------------
def random_case(seed):
    rng = np.random.default_rng(seed)
    items = list(range(25))
    truth, scores = [], []
    for user in range(1, 10):
        n_relevant = int(rng.integers(1, 9))  # different numbers of relevant items per user
        chosen = rng.choice(items, size=n_relevant + 2, replace=False)
        for item in chosen[:n_relevant]:
            truth.append((user, int(item), float(rng.choice([0.5, 1.0, 2.0, 3.0, 5.0]))))
        for item in chosen[n_relevant:]:
            truth.append((user, int(item), 0.0))  # observed but preference 0
        if user == 9:
            continue  # a truth user the model never scored
        for item in items:
            if user == 8 and item % 4 == 0:
                continue  # some candidates (maybe relevant ones) were never scored
            # one decimal on a narrow range: many tied scores
            scores.append((user, item, float(np.round(rng.uniform(-0.2, 1.2), 1))))
    truth.append(truth[0])                       # duplicated interaction: ratings add up
    truth += [(10, 3, 0.0), (10, 4, 0.0)]        # a user with no relevant item
    scores += [(10, item, 0.3) for item in items]
    scores += [(11, item, 0.9) for item in items]  # not in truth: ignored everywhere
    scores.append((7, 99, float("nan")))         # NaN score: treated as unscored
    scores.append((6, 98, None))
    return truth, scores


@pytest.mark.parametrize("seed,k", [(1, None), (2, None), (3, 1), (4, 5), (5, 100)])
def test_random_data_matches_oracle(spark, seed, k):
    truth, scores = random_case(seed)
    assert_close(run(spark, truth, scores, k=k), oracle(truth, scores, k=k))


def test_tie_break_is_item_ascending(spark):
    # Both items score 0.5; item 1 ranks first, so relevant item 2 is at position 2.
    got = run(spark, [(1, 2, 1.0)], [(1, 2, 0.5), (1, 1, 0.5)])
    assert got["mean_average_precision"] == pytest.approx(0.5)
    assert got["average_rank"] == pytest.approx(1.0)


# (c) edge cases --------------------------------------------------------------------------------
def test_perfect_ranking(spark):
    # user 1: relevant 0,1,2 (ratings 5,3,1) on top in rating order among 50 items;
    # user 2: a single relevant item ranked first among 50.
    truth = [(1, 0, 5.0), (1, 1, 3.0), (1, 2, 1.0), (2, 7, 4.0)]
    scores = [(1, i, 100.0 - i) for i in range(50)]
    scores += [(2, i, 1.0 if i == 7 else 0.0) for i in range(50)]
    got = run(spark, truth, scores)
    assert got["mean_average_precision"] == pytest.approx(1.0)
    assert got["normalized_discounted_cumulative_gain"] == pytest.approx(1.0)
    # (5*0 + 3*(1/49) + 1*(2/49) + 4*0) / 13
    assert got["average_rank"] == pytest.approx(5 / 49 / 13)
    assert got["average_rank"] < 0.01
    assert_close(got, oracle(truth, scores))


def test_single_relevant_item_ranked_first_has_rank_zero(spark):
    got = run(spark, [(1, 3, 1.0)], [(1, i, 1.0 if i == 3 else 0.1) for i in range(10)])
    assert got["average_rank"] == 0.0
    assert got["mean_average_precision"] == pytest.approx(1.0)


def test_right_items_wrong_order_keeps_map_but_lowers_ndcg(spark):
    # relevant 0,1,2 with ratings 1,3,5 ranked 0,1,2: every relevant item is on top (MAP 1),
    # but the highest rating is last: DCG = 1 + 3/log2(3) + 5/2, IDCG = 5 + 3/log2(3) + 1/2.
    truth = [(1, 0, 1.0), (1, 1, 3.0), (1, 2, 5.0)]
    scores = [(1, i, 10.0 - i) for i in range(6)]
    got = run(spark, truth, scores)
    assert got["mean_average_precision"] == pytest.approx(1.0)
    want = (1 + 3 / math.log2(3) + 2.5) / (5 + 3 / math.log2(3) + 0.5)
    assert got["normalized_discounted_cumulative_gain"] == pytest.approx(want)
    assert want < 0.9


def test_reversed_ranking(spark):
    # the only relevant item is last of 10: AP = 1/10, NDCG = 1/log2(11), percentile 9/9 = 1
    scores = [(1, i, float(i)) for i in range(10)]  # item 0 scores lowest
    got = run(spark, [(1, 0, 2.0)], scores)
    assert got["mean_average_precision"] == pytest.approx(0.1)
    assert got["normalized_discounted_cumulative_gain"] == pytest.approx(1 / math.log2(11))
    assert got["average_rank"] == pytest.approx(1.0)
    # squared errors: (1-0)^2 for item 0, i^2 for i = 1..9 -> (1 + 285) / 10
    assert got["mean_squared_error"] == pytest.approx(28.6)


def test_unscored_pairs_are_misses_ranked_last_and_counted(spark):
    # user 1: relevant 1 (scored first of 2) and 5 (no score);
    # user 2: relevant 1 but no score at all, nor a usable one (NaN).
    truth = [(1, 1, 1.0), (1, 5, 3.0), (2, 1, 1.0), (3, 1, 0.0)]
    scores = [(1, 1, 0.9), (1, 2, 0.1), (2, 1, float("nan")), (3, 1, 0.5)]
    got = run(spark, truth, scores)
    # AP: user 1 = (1/1)/2, user 2 = 0 -> MAP 0.25
    assert got["mean_average_precision"] == pytest.approx(0.25)
    # NDCG: user 1 = 1 / (3 + 1/log2(3)), user 2 = 0
    assert got["normalized_discounted_cumulative_gain"] == pytest.approx(
        1 / (3 + 1 / math.log2(3)) / 2)
    # average_rank: (1*0 + 3*1 + 1*1) / 5
    assert got["average_rank"] == pytest.approx(0.8)
    # MSE only over scored pairs: (1-.9)^2, (0-.1)^2 and user 3's (0-.5)^2
    assert got["mean_squared_error"] == pytest.approx((0.01 + 0.01 + 0.25) / 3)
    coverage = metrics_dict(implicit_coverage(spark.createDataFrame(truth, TRUTH_DDL),
                                              spark.createDataFrame(scores, SCORES_DDL)))
    assert coverage == {"evaluated_users": 2, "users_without_relevant": 1,
                        "users_without_scores": 1, "relevant_pairs": 3,
                        "unscored_relevant_pairs": 2}


def test_coverage_schema_and_empty_truth(spark):
    truth = spark.createDataFrame([], TRUTH_DDL)
    scores = spark.createDataFrame(HAND_SCORES, SCORES_DDL)
    coverage = implicit_coverage(truth, scores)
    assert coverage.columns == list(COVERAGE_COLUMNS)
    assert all(isinstance(f.dataType, LongType) for f in coverage.schema.fields)
    assert set(metrics_dict(coverage).values()) == {0}
    # nothing to evaluate: NULL metrics (no NaN, no division error)
    assert set(metrics_dict(implicit_metrics(truth, scores)).values()) == {None}


def test_no_relevant_items_gives_null_ranking_metrics(spark):
    got = run(spark, [(1, 1, 0.0)], [(1, 1, 0.5), (1, 2, 0.0)])
    assert got["mean_average_precision"] is None
    assert got["normalized_discounted_cumulative_gain"] is None
    assert got["average_rank"] is None
    assert got["mean_squared_error"] == pytest.approx(0.125)


def test_custom_column_names(spark):
    truth = spark.createDataFrame(HAND_TRUTH, "visitor long, content long, duration double")
    scores = spark.createDataFrame(HAND_SCORES, "visitor long, content long, conf double")
    got = metrics_dict(implicit_metrics(truth, scores, col_user="visitor", col_item="content",
                                        col_rating="duration", col_prediction="conf"))
    assert got["mean_average_precision"] == pytest.approx(2 / 3)
    assert got["average_rank"] == pytest.approx(0.5)


@pytest.mark.parametrize("bad_k", [0, -1, 2.5, True])
def test_invalid_k_is_refused(spark, bad_k):
    truth = spark.createDataFrame(HAND_TRUTH, TRUTH_DDL)
    scores = spark.createDataFrame(HAND_SCORES, SCORES_DDL)
    with pytest.raises(ValueError, match="k must be"):
        implicit_metrics(truth, scores, k=bad_k)


# (d) the model path: the model's own scores of every item, never a table of the pairs -----------
def test_model_scores_give_the_oracle_of_the_recommend_scores(spark):
    """``model_implicit_metrics`` equals the oracle fed with every model item's score for each
    truth user: a user unknown to the model (item intercepts only), a truth item unknown to the
    model (a miss ranked last), a user whose ratings are all 0, duplicated truth rows, and items
    with equal factors and intercepts (exact ties, broken by item id), at k None and 2."""
    from recsys.model import TrainedModel
    from recsys.evaluation.implicit_metrics import model_implicit_metrics

    rng = np.random.default_rng(11)
    user_f = {u: rng.normal(size=3).round(2) for u in (1, 2, 3, 4)}
    item_f = {i: rng.normal(size=3).round(2) for i in range(10, 30)}
    item_b = {i: round(float(rng.normal()), 2) for i in item_f}
    for twin in (21, 22, 23):  # three items tied with item 20 for every user
        item_f[twin], item_b[twin] = item_f[20], item_b[20]
    side = "id long, intercept double, factors array<double>"
    users = spark.createDataFrame([(u, 0.25 * u, f.tolist()) for u, f in user_f.items()],
                                  side.replace("id", "user_id"))
    items = spark.createDataFrame([(i, item_b[i], f.tolist()) for i, f in item_f.items()],
                                  side.replace("id", "item_id"))
    model = TrainedModel(users=users, items=items, global_intercept=0.5,
                         options={"user_col": "user_id", "item_col": "item_id",
                                  "num_factors": 3, "feedback_type": "implicit"}, data={})
    truth = [(1, 20, 2.0), (1, 22, 1.0), (1, 11, 3.0), (1, 99, 4.0), (1, 11, 1.0),
             (2, 23, 1.0), (2, 12, 0.0), (3, 13, 0.0), (9, 14, 2.0), (9, 21, 1.0),
             (4, 10, 5.0), (4, 29, 0.5), (4, 28, 1.5)]
    scores = [(u, i, (0.5 + 0.25 * u if u in user_f else 0.5) + item_b[i]
               + (float(user_f[u] @ f) if u in user_f else 0.0))
              for u in sorted({row[0] for row in truth}) for i, f in item_f.items()]
    frame = spark.createDataFrame(truth, TRUTH_DDL)
    for k in (None, 2):
        got = metrics_dict(model_implicit_metrics(model, frame, k=k))
        assert_close(got, oracle(truth, scores, k=k))
        table = run(spark, truth, scores, k=k)
        ranks = [name for name in IMPLICIT_METRICS if name != "mean_squared_error"]
        # The scores-table path ranks the same cells: the same ranking metrics to the last bit.
        assert [got[name] for name in ranks] == [table[name] for name in ranks]
        # The model path sums the squared errors in closed form (the item side's moments).
        assert got["mean_squared_error"] == pytest.approx(table["mean_squared_error"], rel=1e-12)


def _formula_positions(exact, at):
    """1-based positions of ``at`` in (score DESC, index ASC), by a full lexsort."""
    order = np.lexsort((np.arange(len(exact)), -exact))
    position = np.empty(len(exact), dtype=np.int64)
    position[order] = np.arange(1, len(exact) + 1)
    return position[at]


@pytest.mark.parametrize("seed", range(4))
def test_blas_positions_equal_the_formula_positions(seed):
    """Ranks found from a BLAS product equal a full sort of the formula's scores, with items a
    last bit apart from a relevant one (scaled factors), exact ties (copied items) and a user
    unknown to the model; and the BLAS cells stay within ``blas_tolerance`` of the formula."""
    from recsys.evaluation.implicit_metrics import _positions
    from recsys.model import prediction

    rng = np.random.default_rng(seed)
    n_items, rank = 3000, 34
    item_factors = rng.normal(size=(n_items, rank)) * 0.3
    item_bias = rng.normal(size=n_items) * 0.1
    relevant = rng.choice(n_items, 40, replace=False)
    twins = rng.choice(n_items, 40, replace=False)
    # A near-twin of a relevant item: factors one ulp away, so the two scores differ in the
    # last bits, where BLAS and the formula can disagree on the order.
    item_factors[twins[:20]] = np.nextafter(item_factors[relevant[:20]], np.inf)
    item_bias[twins[:20]] = item_bias[relevant[:20]]
    item_factors[twins[20:]] = item_factors[relevant[20:]]  # exact ties, broken by index
    item_bias[twins[20:]] = item_bias[relevant[20:]]
    user_factors = rng.normal(size=(6, rank))
    user_factors[5] = 0.0  # unknown user: intercepts only
    base = 0.5 + rng.normal(size=6) * 0.1

    exact = prediction.cross_scores(base, item_bias, user_factors, item_factors)
    approx = prediction.blas_cross(base, item_bias, user_factors, item_factors)
    tolerance = prediction.blas_tolerance(base, item_bias, user_factors, item_factors)
    assert np.all(np.abs(approx - exact) <= tolerance[:, None])
    at = np.sort(relevant)
    for row in range(6):
        scores = approx[row].copy()
        scores[at] = exact[row, at]
        got = _positions(scores, at, float(tolerance[row]),
                         lambda idx, row=row: exact[row, idx])
        np.testing.assert_array_equal(got, _formula_positions(exact[row], at))
