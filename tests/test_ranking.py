"""Held-out ranking metrics against a pure-Python oracle and pyspark.ml's RankingEvaluator;
the minimum-support remedy; rating metrics with the cold-start fallback. (Tuning:
tests/test_tuning.py.)"""

import math

import numpy as np
import pytest
from pyspark.ml.evaluation import RankingEvaluator

from recsys.config import ModelConfig
from recsys.model import fit
from recsys.evaluation.ranking import ranking_metrics, recommend_unseen

pytestmark = pytest.mark.spark


def oracle(lists, relevant, k):
    """precision/recall/ndcg/map@k by loops, users with a relevant item only."""
    p, r, n, a = [], [], [], []
    for user, rel in relevant.items():
        if not rel:
            continue
        rec = lists.get(user, [])[:k]
        hits = [1 if item in rel else 0 for item in rec]
        p.append(sum(hits) / k)
        r.append(sum(hits) / len(rel))
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(rel))))
        n.append(dcg / idcg)
        a.append(sum(sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h)
                 / min(k, len(rel)))
    return {"precision_at_k": np.mean(p), "recall_at_k": np.mean(r), "ndcg_at_k": np.mean(n),
            "map_at_k": np.mean(a)}


@pytest.fixture(scope="module")
def case(spark):
    rng = np.random.default_rng(8)
    lists, relevant, top_rows, test_rows = {}, {}, [], []
    for user in range(1, 30):
        items = [int(x) for x in rng.permutation(40)[:12]]
        lists[user] = items
        top_rows += [(user, item, rank + 1) for rank, item in enumerate(items)]
        rel = {int(x) for x in rng.choice(40, size=rng.integers(0, 6), replace=False)}
        relevant[user] = rel
        test_rows += [(user, item, 5.0 if item in rel else 2.0) for item in range(40)
                      if item in rel or rng.random() < 0.05]
    top = spark.createDataFrame(top_rows, "user_id long, item_id long, rank int")
    test = spark.createDataFrame(test_rows, "user_id long, item_id long, rating double")
    train = spark.createDataFrame([(u, i, 3.0) for u in range(1, 30) for i in range(40, 45)]
                                  + [(1, i, 3.0) for i in range(40)],
                                  "user_id long, item_id long, rating double")
    return lists, relevant, top, test, train


@pytest.mark.parametrize("k", [5, 10])
def test_ranking_metrics_match_the_oracle(case, k):
    lists, relevant, top, test, train = case
    got = ranking_metrics(top.where(f"rank <= {k}"), test, train, k=k)
    want = oracle(lists, relevant, k)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    assert got["ranked_users"] == sum(1 for rel in relevant.values() if rel)


@pytest.mark.parametrize("metric, key", [("precisionAtK", "precision_at_k"),
                                         ("recallAtK", "recall_at_k"),
                                         ("ndcgAtK", "ndcg_at_k"),
                                         ("meanAveragePrecisionAtK", "map_at_k")])
def test_ranking_metrics_equal_pyspark_ranking_evaluator(spark, case, metric, key):
    lists, relevant, top, test, train = case
    k = 10
    rows = [([float(x) for x in lists[u][:k]], [float(x) for x in sorted(rel)])
            for u, rel in relevant.items() if rel]
    frame = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    want = RankingEvaluator(metricName=metric, k=k).evaluate(frame)
    got = ranking_metrics(top.where(f"rank <= {k}"), test, train, k=k)[key]
    assert got == pytest.approx(want, rel=1e-9)


def test_coverage_and_popularity(spark):
    top = spark.createDataFrame([(1, 10, 1), (1, 11, 2), (2, 10, 1)],
                                "user_id long, item_id long, rank int")
    train = spark.createDataFrame([(5, 10, 3.0), (6, 10, 3.0), (5, 11, 3.0), (5, 12, 3.0),
                                   (5, 13, 3.0)], "user_id long, item_id long, rating double")
    test = spark.createDataFrame([(1, 10, 5.0)], "user_id long, item_id long, rating double")
    got = ranking_metrics(top, test, train, k=2)
    assert got["coverage"] == pytest.approx(2 / 4)
    assert got["mean_popularity"] == pytest.approx((2 + 1 + 2) / 3)


@pytest.fixture(scope="module")
def ratings(spark):
    rng = np.random.default_rng(12)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 40, 900),
                                                      rng.integers(1, 70, 900))})
    return spark.createDataFrame([(u, i, float(rng.integers(1, 6))) for u, i in pairs],
                                 "user_id long, item_id long, rating double").cache()


def test_recommend_unseen_skips_rated_and_unsupported_items(ratings):
    model = fit(ratings, ModelConfig(num_factors=3, max_iterations=3))
    counts = {r.item_id: r["count"] for r in ratings.groupBy("item_id").count().collect()}
    rated = {(r.user_id, r.item_id) for r in ratings.collect()}
    top = recommend_unseen(model, ratings, ratings.select("user_id"), k=5,
                           min_item_ratings=15).collect()
    assert top and all((r.user_id, r.item_id) not in rated for r in top)
    assert all(counts[r.item_id] >= 15 for r in top)
    ranks = {}
    for r in top:
        ranks.setdefault(r.user_id, []).append((r.rank, -r.score, r.item_id))
    assert all(sorted(v) == sorted(v, key=lambda t: (t[1], t[2])) for v in ranks.values())


def test_rating_metrics_score_every_test_row_with_the_fallback(spark):
    """ranking.rating_metrics: every test row is scored, a cold user by global + item
    intercept, a cold item by global + user intercept, both cold by the global intercept;
    the metrics are NumPy's on those predictions (tests/oracles.py), rmse their root."""
    from oracles import regression_metrics
    from recsys.model import TrainedModel
    from recsys.evaluation.ranking import rating_metrics

    users = {1: (0.5, [1.0, -0.5]), 2: (-0.25, [0.2, 0.4])}
    items = {10: (0.25, [0.5, 1.0]), 20: (-0.5, [2.0, 0.0]), 30: (0.0, [-1.0, 0.5])}
    model = TrainedModel(
        users=spark.createDataFrame([(k, b, f) for k, (b, f) in users.items()],
                                    "user_id long, intercept double, factors array<double>"),
        items=spark.createDataFrame([(k, b, f) for k, (b, f) in items.items()],
                                    "item_id long, intercept double, factors array<double>"),
        global_intercept=3.5, data={}, options={"user_col": "user_id", "item_col": "item_id",
                                                "feedback_type": "explicit", "num_factors": 2})
    test = [(1, 10, 4.0), (1, 20, 5.0), (2, 30, 2.0), (2, 10, 3.5), (7, 20, 4.5), (1, 99, 1.0),
            (8, 98, 3.0), (2, 20, 3.0)]

    def predict(u, i):
        value = 3.5 + users.get(u, (0.0, None))[0] + items.get(i, (0.0, None))[0]
        if u in users and i in items:
            value += float(np.dot(users[u][1], items[i][1]))
        return value

    got = rating_metrics(model, spark.createDataFrame(test, "user_id long, item_id long, "
                                                            "rating double"))
    want = regression_metrics([r for _, _, r in test], [predict(u, i) for u, i, _ in test])
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    assert got["rmse"] == pytest.approx(math.sqrt(want["mean_squared_error"]), rel=1e-12)
    assert got["scored_rows"] == len(test)
