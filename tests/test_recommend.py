"""ML.RECOMMEND and top-k: an exactly factorisable matrix, input variants, ties, exclusions."""

import numpy as np
import pytest

from recsys.config import ModelConfig
from recsys.model import fit, spark_reg_param
from recsys.model.recommend import recommend, top_k

pytestmark = pytest.mark.spark

RNG = np.random.default_rng(7)
USERS = np.array([3, 5, 8, 13, 21, 34, 55, 2 ** 40])   # one id beyond INT32
ITEMS = np.array([100, 200, 300, 400, 500, 600, 700])
# Rank 2 plus a constant; minus the intercepts the residual has rank <= 5 < 7 items, so a
# 5-factor model reproduces it exactly.
TRUE = 1.0 + RNG.uniform(0.5, 1.2, (8, 2)) @ RNG.uniform(0.5, 1.5, (2, 7))


@pytest.fixture(scope="module")
def exact_model(spark):
    rows = [(int(u), int(i), float(TRUE[a, b])) for a, u in enumerate(USERS)
            for b, i in enumerate(ITEMS)]
    ratings = spark.createDataFrame(rows, "user_id long, item_id long, rating double")
    # spark_als fits the intercepts first, so on a complete matrix they are the exact means
    # (the joint fit of bigquery_ml may trade them against the factors).
    cfg = ModelConfig(solver="spark_als", num_factors=5, reg_param=1e-7, l2_reg=1e-6,
                      max_iterations=60, seed=1)
    return fit(ratings, cfg)


def test_all_pairs_reproduce_the_exact_matrix(exact_model):
    got = {(r.user_id, r.item_id): r.predicted_rating for r in recommend(exact_model).collect()}
    assert len(got) == len(USERS) * len(ITEMS)
    for a, u in enumerate(USERS):
        for b, i in enumerate(ITEMS):
            assert got[(u, i)] == pytest.approx(TRUE[a, b], abs=2e-3)


@pytest.mark.parametrize("path", ["broadcast sides", "joined sides"])
def test_pairs_input_passes_other_columns_and_scores_unknown_ids(spark, exact_model, path,
                                                               monkeypatch):
    if path == "joined sides":  # the path of sides too large to broadcast
        monkeypatch.setattr("recsys.model.scoring.BROADCAST_SIDE_MAX_BYTES", 0)
    pairs = spark.createDataFrame([(3, 200, "a"), (999, 200, "b"), (5, 999, "c")],
                                  "user_id long, item_id long, tag string")
    got = {r.tag: (r.user_id, r.item_id, r.predicted_rating)
           for r in recommend(exact_model, pairs).collect()}
    assert got["a"][2] == pytest.approx(TRUE[0, 1], abs=2e-3)
    # Unknown user: global + item intercept; unknown item: global + user intercept. On a
    # complete matrix (ridge ~0) those are the item's and the user's mean rating.
    assert got["b"] == (999, 200, pytest.approx(TRUE[:, 1].mean(), abs=1e-4))
    assert got["c"] == (5, 999, pytest.approx(TRUE[1, :].mean(), abs=1e-4))
    assert recommend(exact_model, pairs).columns == ["predicted_rating", "user_id", "item_id", "tag"]


def test_users_only_and_items_only_inputs(spark, exact_model):
    users = spark.createDataFrame([(8,), (8,), (13,)], "user_id long")
    got = recommend(exact_model, users).collect()
    assert sorted((r.user_id, r.item_id) for r in got) == sorted(
        (u, int(i)) for u in (8, 13) for i in ITEMS)
    items = spark.createDataFrame([(300,)], "item_id long")
    got = {r.user_id: r.predicted_rating for r in recommend(exact_model, items).collect()}
    assert set(got) == set(USERS.tolist())
    assert got[21] == pytest.approx(TRUE[4, 2], abs=2e-3)
    assert got[2 ** 40] == pytest.approx(TRUE[7, 2], abs=2e-3)


def test_input_with_extra_columns_needs_both_ids(spark, exact_model):
    from recsys.errors import InputError

    bad = spark.createDataFrame([(8, "x")], "user_id long, tag string")
    with pytest.raises(InputError, match="exactly one of them"):
        recommend(exact_model, bad)


def test_top_k_breaks_ties_by_item_and_keeps_order(spark):
    preds = spark.createDataFrame(
        [(1, 5, 4.0), (1, 3, 4.0), (1, 9, 4.5), (1, 1, 2.0), (1, 7, 4.0), (1, 2, 4.0),
         (2, 3, 1.0), (2, 4, 1.5)],
        "user_id long, item_id long, predicted_rating double")
    movies = spark.createDataFrame([(9, "Nine", "Drama"), (2, "Two", "Comedy")],
                                   "movie_id long, movie_title string, genre string")
    rows = top_k(preds, k=3, movies=movies).collect()
    assert [r.user_id for r in rows] == [1, 2]
    assert [(e.item_id, e.movie_title, e.genre, e.predicted_rating)
            for e in rows[0].recommendations] == [
        (9, "Nine", "Drama", 4.5), (2, "Two", "Comedy", 4.0), (3, None, None, 4.0)]
    assert [e.item_id for e in rows[1].recommendations] == [4, 3]


def test_top_k_excludes_rated_pairs(spark):
    preds = spark.createDataFrame([(1, 1, 5.0), (1, 2, 4.0), (1, 3, 3.0), (2, 1, 5.0)],
                                  "user_id long, item_id long, predicted_rating double")
    rated = spark.createDataFrame([(1, 1, 4.0)], "user_id long, item_id long, rating double")
    rows = {r.user_id: [e.item_id for e in r.recommendations]
            for r in top_k(preds, k=2, exclude=rated).collect()}
    assert rows == {1: [2, 3], 2: [1]}


@pytest.mark.parametrize("rule, want", [
    ("default", 9.83 / (1000 / 10)),          # per_user: exact for the average user
    ("per_user", 9.83 / (1000 / 10)),
    ("per_item", 9.83 / (1000 / 40)),
    ("mean_ridge", (9.83 / (1000 / 10) + 9.83 / (1000 / 40)) / 2),
    ("geometric", 9.83 / (100 * 25) ** 0.5),
    ("literal", 9.83),
])
def test_l2_reg_mapping_rules(rule, want):
    # ALS-WR's ridge for a row with n ratings is regParam * n; BigQuery ML's is L2_REG.
    got = spark_reg_param(9.83, n_rows=1000, n_users=10, n_items=40, rule=rule)
    assert got == pytest.approx(want)


def _hand_model(spark):
    """Two users, five items; items 40 and 20 are identical (an exact tie), user 2 is unknown
    to the factors (NULL) and so ranks by the item intercepts alone."""
    from recsys.model import TrainedModel

    users = spark.createDataFrame(
        [(1, 0.5, [1.0, 0.0]), (2, -0.25, None)],
        "user_id long, intercept double, factors array<double>")
    items = spark.createDataFrame(
        [(10, 0.0, [0.5, 1.0]), (20, 0.25, [1.0, 0.0]), (30, -1.0, [3.0, 0.0]),
         (40, 0.25, [1.0, 0.0]), (50, 0.5, [0.0, 2.0])],
        "item_id long, intercept double, factors array<double>")
    return TrainedModel(users=users, items=items, global_intercept=3.0,
                        options={"user_col": "user_id", "item_col": "item_id",
                                 "feedback_type": "explicit", "num_factors": 2}, data={})


def test_blocked_top_k_matches_a_hand_computed_table(spark):
    from recsys.model.recommend import top_k_for_users

    model = _hand_model(spark)
    # user 1: 3+0.5 + b_i + x.y -> 10: 4.0, 20: 4.75, 30: 5.5, 40: 4.75, 50: 4.0
    # user 2 (no factors): 3-0.25 + b_i -> 10: 2.75, 20: 3.0, 30: 1.75, 40: 3.0, 50: 3.25
    # user 3 is not in the model: 3 + b_i -> same order as user 2, 0.25 higher
    users = spark.createDataFrame([(1,), (2,), (3,)], "user_id long")
    got = {r.user_id: [(e.item_id, e.predicted_rating) for e in r.recommendations]
           for r in top_k_for_users(model, k=3, users=users).collect()}
    assert got == {1: [(30, 5.5), (20, 4.75), (40, 4.75)],
                   2: [(50, 3.25), (20, 3.0), (40, 3.0)],
                   3: [(50, 3.5), (20, 3.25), (40, 3.25)]}
    rated = spark.createDataFrame([(1, 30), (1, 20), (2, 50)], "user_id long, item_id long")
    support = spark.createDataFrame([(10,), (20,), (40,), (50,)], "item_id long")
    got = {r.user_id: [e.item_id for e in r.recommendations]
           for r in top_k_for_users(model, k=2, exclude=rated, items=support).collect()}
    assert got == {1: [40, 10], 2: [20, 40]}


def test_blocked_top_k_equals_ranking_all_pairs_on_real_data(spark):
    """The blocked path against the all-pairs path on a model of real MovieLens rows: same
    items, same order, same values to the last bit (both sum in the SQL formula's order)."""
    import os

    import pandas as pd

    from recsys.model.recommend import supported_items, top_k_for_users

    sample = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ml-latest-small")
    ratings = pd.read_csv(os.path.join(sample, "ratings.csv")).query("userId <= 60")
    train = spark.createDataFrame(
        ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
        [["user_id", "item_id", "rating"]]).cache()
    model = fit(train, ModelConfig(num_factors=8, l2_reg=5.0, max_iterations=5, seed=3))
    users = spark.createDataFrame([(u,) for u in range(1, 70, 3)], "user_id long")
    support = supported_items(train, 3)

    def as_lists(df):
        return {r.user_id: [(e.item_id, e.predicted_rating) for e in r.recommendations]
                for r in df.collect()}

    blocked = as_lists(top_k_for_users(model, k=10, users=users, exclude=train, items=support))
    all_pairs = recommend(model, users).join(support, "item_id")
    reference = as_lists(top_k(all_pairs, k=10, exclude=train))
    assert blocked == reference
    assert len(blocked) == 23 and all(len(v) == 10 for v in blocked.values())


# --- top-k under constraints, against a plain-Python oracle -----------------------------------

K = 5
# Item ids out of order and not contiguous; 400 items, so that a tie group is far longer than
# k + RESCORE_MARGIN (13) and the blocked path's candidate margin really decides (with a few
# dozen items NumPy's partial sort happens to keep the smallest positions of a tie).
ITEM_IDS = [7 * j + 3 for j in range(400)]


def _constrained_model(spark):
    """global 3; items: 300 share intercept 0.5 (a cold user ties them all), 12 of those also
    share their factors (a known user's tie group across position k), the rest differ. Every
    fourth item scores lower, so that each tie group is interleaved in id order with items
    outside it (a selection that is not the smallest ids shows)."""
    from recsys.model import TrainedModel

    rng = np.random.default_rng(23)
    items, identical = [], 0
    for n, item in enumerate(ITEM_IDS):
        if n % 4 == 3:
            bias, factors = float(rng.uniform(-1, 0.4)), [float(v) for v in rng.uniform(-1, 1, 2)]
        elif identical < 12:
            identical += 1
            bias, factors = 0.5, [1.0, 1.0]           # identical: an exact tie group
        else:
            bias, factors = 0.5, [float(v) for v in rng.uniform(-1, 0.9, 2)]
        items.append((item, bias, factors))
    rng.shuffle(items)
    users = [(1, 0.1, [1.0, 1.0]),                     # ranks the tie group first
             (2, -0.2, [0.3, -0.8]), (3, 0.0, [-0.5, 0.2]), (4, 0.4, [0.9, 0.1]),
             (5, 0.0, None)]                           # known intercept, no factors
    return TrainedModel(
        users=spark.createDataFrame(users, "user_id long, intercept double, factors array<double>"),
        items=spark.createDataFrame(items, "item_id long, intercept double, factors array<double>"),
        global_intercept=3.0, data={},
        options={"user_col": "user_id", "item_col": "item_id", "feedback_type": "explicit",
                 "num_factors": 2}), dict((u, (b, f)) for u, b, f in users), \
        dict((i, (b, f)) for i, b, f in items)


def _oracle_top_k(users, items, wanted, excluded, supported, k):
    """Each wanted user's best k eligible items by (score DESC, item ASC); the score summed in
    the SQL formula's order, global + user + item + x0*y0 + x1*y1."""
    out = {}
    for user in wanted:
        bias, x = users.get(user, (0.0, None))
        scored = []
        for item in supported:
            if (user, item) in excluded:
                continue
            item_bias, y = items[item]
            dot = 0.0 if x is None or y is None else x[0] * y[0] + x[1] * y[1]
            scored.append((-(3.0 + bias + item_bias + dot), item))
        if scored:
            out[user] = [(item, -neg) for neg, item in sorted(scored)[:k]]
    return out


def test_top_k_with_exclusions_support_and_large_ties_matches_the_oracle(spark):
    """Both top-k paths (blocked, and ranking ML.RECOMMEND's pairs) against the oracle: user 1's
    12-item tie straddles position k (smallest ids win), user 9 is cold (its ~270 top items tie),
    user 2's exclusions leave 3 candidates (a list of 3), user 3's leave none (no row), user 5
    has no factors; items below the minimum support never appear."""
    from recsys.model.recommend import top_k_for_users

    model, users, items = _constrained_model(spark)
    supported = [i for n, i in enumerate(ITEM_IDS) if n % 9 != 4]   # every ninth item unsupported
    excluded = {(1, ITEM_IDS[0]), (1, ITEM_IDS[6]), (9, ITEM_IDS[1]), (9, ITEM_IDS[15]),
                (4, ITEM_IDS[2])}
    keep_for_2 = {ITEM_IDS[3], ITEM_IDS[20], ITEM_IDS[35]}
    excluded |= {(2, i) for i in ITEM_IDS if i not in keep_for_2}
    excluded |= {(3, i) for i in ITEM_IDS}
    wanted = [1, 2, 3, 4, 5, 9]
    want = _oracle_top_k(users, items, wanted, excluded, supported, K)
    # The fixture does what it says: a tie across position k, a short list, a missing user.
    assert [v for _, v in want[1]] == [want[1][0][1]] * K and len(want[2]) == 3 and 3 not in want
    assert len({v for _, v in _oracle_top_k(users, items, [9], set(), supported, 40)[9][:25]}) == 1

    users_df = spark.createDataFrame([(u,) for u in wanted], "user_id long")
    exclude_df = spark.createDataFrame(sorted(excluded), "user_id long, item_id long")
    support_df = spark.createDataFrame([(i,) for i in supported], "item_id long")

    def as_lists(df):
        return {r.user_id: [(e.item_id, e.predicted_rating) for e in r.recommendations]
                for r in df.collect()}

    blocked = as_lists(top_k_for_users(model, k=K, users=users_df, exclude=exclude_df,
                                       items=support_df))
    ranked = as_lists(top_k(recommend(model, users_df).join(support_df, "item_id"), k=K,
                            exclude=exclude_df))
    for got in (blocked, ranked):
        assert set(got) == set(want)
        for user, expected in want.items():
            assert [i for i, _ in got[user]] == [i for i, _ in expected], user
            assert [v for _, v in got[user]] == pytest.approx([v for _, v in expected],
                                                              abs=1e-12)
