"""The model: intercepts against numpy, ML.TRAINING_INFO iterates and early stop, ML.WEIGHTS and
ML.GENERATE_EMBEDDING, string ids, and BigQuery ML's L2_REG against Spark's regParam."""

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys.config import ModelConfig
from recsys.model import fit, fit_intercepts
from recsys.recommend import recommend
from recsys.weights import embeddings, weights

pytestmark = pytest.mark.spark


def ridge_intercepts(users, items, ratings, lam):
    """Exact minimiser of sum (r - mu - b_u - b_i)^2 + lam (|b_u|^2 + |b_i|^2), by numpy."""
    uniq_u, ui = np.unique(users, return_inverse=True)
    uniq_i, ii = np.unique(items, return_inverse=True)
    design = np.zeros((len(ratings), len(uniq_u) + len(uniq_i)))
    design[np.arange(len(ratings)), ui] = 1
    design[np.arange(len(ratings)), len(uniq_u) + ii] = 1
    mu = ratings.mean()
    b = np.linalg.solve(design.T @ design + lam * np.eye(design.shape[1]), design.T @ (ratings - mu))
    return mu, dict(zip(uniq_u, b[:len(uniq_u)])), dict(zip(uniq_i, b[len(uniq_u):]))


def test_intercepts_recover_known_biases_on_a_complete_matrix(spark):
    rng = np.random.default_rng(3)
    b_user, b_item = rng.normal(0, 0.5, 6), rng.normal(0, 0.7, 5)
    b_user -= b_user.mean()
    b_item -= b_item.mean()
    rows = [(u, i, float(3.5 + b_user[u] + b_item[i])) for u in range(6) for i in range(5)]
    df = spark.createDataFrame(rows, "user_id long, item_id long, rating double")
    users, items = fit_intercepts(df, global_mean=3.5, l2_reg=1e-9)
    got_u = {r.user_id: r.intercept for r in users.collect()}
    got_i = {r.item_id: r.intercept for r in items.collect()}
    assert [got_u[u] for u in range(6)] == pytest.approx(b_user, abs=1e-6)
    assert [got_i[i] for i in range(5)] == pytest.approx(b_item, abs=1e-6)


def test_intercepts_match_the_ridge_solution_on_sparse_data(spark):
    rng = np.random.default_rng(5)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 15, 120),
                                                      rng.integers(0, 25, 120))})
    users = np.array([p[0] for p in pairs])
    items = np.array([p[1] for p in pairs])
    ratings = np.clip(np.round(3 + rng.normal(0, 1, len(pairs))), 1, 5)
    df = spark.createDataFrame([(int(u), int(i), float(r)) for u, i, r in zip(users, items, ratings)],
                               "user_id long, item_id long, rating double")
    mu, want_u, want_i = ridge_intercepts(users, items, ratings, lam=2.0)
    got_u, got_i = fit_intercepts(df, global_mean=float(mu), l2_reg=2.0, sweeps=60)
    for row in got_u.collect():
        assert row.intercept == pytest.approx(want_u[row.user_id], abs=1e-6)
    for row in got_i.collect():
        assert row.intercept == pytest.approx(want_i[row.item_id], abs=1e-6)


@pytest.fixture(scope="module")
def small_ratings(spark):
    rng = np.random.default_rng(11)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 40, 700),
                                                      rng.integers(1, 60, 700))})
    rows = [(u, i, float(rng.integers(1, 6))) for u, i in pairs]
    return spark.createDataFrame(rows, "user_id long, item_id long, rating double").cache()


def test_every_iteration_reports_the_real_iterates(small_ratings):
    """spark_als: pyspark.ml ALS has no per-iteration hook; every_iteration refits."""
    cfg = ModelConfig(solver="spark_als", num_factors=4, l2_reg=1.0, max_iterations=4,
                      early_stop=False, training_info="every_iteration", seed=3)
    model = fit(small_ratings, cfg)
    info = model.training_info
    assert [row["iteration"] for row in info] == [0, 1, 2, 3]
    assert all(row["eval_loss"] is None for row in info)
    # Iterate k is the same model as a separate 'final' fit with max_iterations = k + 1.
    for k in (0, 2):
        single = fit(small_ratings, ModelConfig(solver="spark_als", num_factors=4, l2_reg=1.0,
                                                max_iterations=k + 1, early_stop=False, seed=3))
        assert single.training_info[-1]["loss"] == pytest.approx(info[k]["loss"], rel=1e-9)
    assert info[-1]["loss"] < info[0]["loss"]


@pytest.mark.parametrize("solver, training_info", [("spark_als", "every_iteration"),
                                                   ("bigquery_ml", "final")])
def test_early_stop_uses_min_rel_progress(small_ratings, spark, solver, training_info):
    eval_rows = small_ratings.limit(30)
    cfg = ModelConfig(solver=solver, num_factors=4, l2_reg=1.0, max_iterations=10,
                      early_stop=True, min_rel_progress=0.05, training_info=training_info, seed=3)
    info = fit(small_ratings, cfg, eval_rows).training_info
    losses = [row["loss"] for row in info]
    progress = [(a - b) / a for a, b in zip(losses, losses[1:])]
    # Stops at the first iteration whose relative improvement is below the threshold.
    assert progress[-1] < 0.05 and all(p >= 0.05 for p in progress[:-1])
    assert len(info) < 10
    assert all(row["eval_loss"] is not None for row in info)


def test_weights_schema_and_predictions_rebuilt_from_them(spark, small_ratings):
    cfg = ModelConfig(num_factors=3, l2_reg=1.0, max_iterations=5, seed=1)
    model = fit(small_ratings, cfg)
    table = weights(spark, model)
    assert table.schema.simpleString() == (
        "struct<processed_input:string,feature:string,"
        "factor_weights:array<struct<factor:bigint,weight:double>>,intercept:double>")
    rows = table.collect()
    glob = [r for r in rows if r.feature == "global__intercept__"]
    assert len(glob) == 1 and glob[0].processed_input is None and glob[0].factor_weights is None
    assert glob[0].intercept == pytest.approx(np.mean([r.rating for r in small_ratings.collect()]))
    vec = {(r.processed_input, r.feature): (r.intercept, [w.weight for w in r.factor_weights])
           for r in rows if r.processed_input}
    assert {r.processed_input for r in rows if r.processed_input} == {"user_id", "item_id"}
    assert all([w.factor for w in r.factor_weights] == [1, 2, 3] for r in rows if r.processed_input)
    # Every prediction is global + intercepts + dot product of the weights (numpy).
    for r in recommend(model).limit(200).collect():
        bu, xu = vec[("user_id", str(r.user_id))]
        bi, yi = vec[("item_id", str(r.item_id))]
        assert r.predicted_rating == pytest.approx(glob[0].intercept + bu + bi + np.dot(xu, yi))
    emb = {(r.processed_input, r.feature): r.ml_generate_embedding_result
           for r in embeddings(model).collect()}
    assert emb == {key: factors + [icpt] for key, (icpt, factors) in vec.items()}


def test_string_ids_round_trip(spark):
    rows = [(f"user-{u}", f"film-é{i}", float(1 + (u * i) % 5)) for u in range(8) for i in range(6)
            if (u + i) % 3]
    df = spark.createDataFrame(rows, "user_id string, item_id string, rating double")
    model = fit(df, ModelConfig(num_factors=2, l2_reg=0.5, max_iterations=5))
    recs = recommend(model)
    assert recs.schema["user_id"].dataType.simpleString() == "string"
    assert {r.user_id for r in recs.collect()} == {f"user-{u}" for u in range(8)}
    pairs = spark.createDataFrame([("user-1", "film-é2")], "user_id string, item_id string")
    assert recommend(model, pairs).count() == 1


def test_spark_als_implicit_users_solve_the_weighted_normal_equations(spark, small_ratings):
    """spark_als implicit: pyspark.ml ALS's last half-step solves the users given the items, so
    every user's factors are (to float32 rounding) the numpy solution of Hu, Koren & Volinsky's
    normal equations (Y^T C_u Y + regParam n_u I) x_u = Y^T C_u p_u with c = 1 + alpha r on the
    rated items, 1 elsewhere, and regParam scaled by the user's rating count (ALS-WR). Neither
    the explicit equations nor another alpha come within 1e-5 of them."""
    alpha, reg = 3.0, 0.1
    model = fit(small_ratings, ModelConfig(solver="spark_als", feedback_type="implicit",
                                           num_factors=3, reg_param=reg, wals_alpha=alpha,
                                           max_iterations=4, seed=5))
    assert model.global_intercept == 0.0
    assert {r.intercept for r in model.users.collect()} == {0.0}
    assert {r.intercept for r in model.items.collect()} == {0.0}
    items = {r.item_id: np.array(r.factors) for r in model.items.collect()}
    item_ids = sorted(items)
    y = np.array([items[i] for i in item_ids])
    rated = {}
    for r in small_ratings.collect():
        rated.setdefault(r.user_id, {})[r.item_id] = r.rating
    worst, scale = 0.0, 0.0
    for row in model.users.collect():
        mine = rated[row.user_id]
        c = np.array([1 + alpha * mine[i] if i in mine else 1.0 for i in item_ids])
        p = np.array([1.0 if i in mine else 0.0 for i in item_ids])
        want = np.linalg.solve((y * c[:, None]).T @ y + reg * len(mine) * np.eye(3),
                               y.T @ (c * p))
        worst = max(worst, np.abs(np.array(row.factors) - want).max())
        scale = max(scale, np.abs(want).max())
    assert scale > 0.05 and worst < 1e-5 * scale
    # The implicit training loss: mean (1 - x_u . y_i)^2 over the rated pairs.
    users = {r.user_id: np.array(r.factors) for r in model.users.collect()}
    loss = np.mean([(1 - users[u] @ items[i]) ** 2 for u, mine in rated.items() for i in mine])
    assert model.training_info[-1]["loss"] == pytest.approx(loss, rel=1e-6)
    assert recommend(model).columns == ["predicted_rating_confidence", "user_id", "item_id"]


def test_l2_reg_literal_vs_mapped_on_movielens_sample(spark):
    """BigQuery ML's L2_REG=9.83 taken literally as regParam vs recsys's mapping (README table).

    Both models have the same intercepts (ridge 9.83); only the factors' regParam differs.
    Literally, 9.83 * n_u crushes every factor to zero, leaving the intercept-only model.
    """
    import os

    from conftest import SAMPLE

    ratings = (spark.read.option("header", True).csv(os.path.join(SAMPLE, "ratings.csv"))
               .select(F.col("userId").cast("long").alias("user_id"),
                       F.col("movieId").cast("long").alias("item_id"),
                       F.col("rating").cast("double").alias("rating"))).cache()
    label = np.array([r.rating for r in ratings.select("rating").collect()])
    results = {}
    for name, cfg in {
        "literal": ModelConfig(solver="spark_als", num_factors=34, l2_reg=9.83, reg_param=9.83,
                               max_iterations=10),
        "mapped": ModelConfig(solver="spark_als", num_factors=34, l2_reg=9.83, max_iterations=10),
    }.items():
        model = fit(ratings, cfg)
        mse = model.training_info[-1]["loss"]
        results[name] = (model.options["spark_reg_param"], mse, 1 - mse / np.var(label))
        if name == "literal":
            users, items = fit_intercepts(ratings, global_mean=float(label.mean()), l2_reg=9.83)
            only = (ratings.join(users.withColumnRenamed("intercept", "bu"), "user_id")
                    .join(items.withColumnRenamed("intercept", "bi"), "item_id")
                    .select(F.avg(F.pow(F.col("rating") - float(label.mean()) - F.col("bu")
                                        - F.col("bi"), 2))).head()[0])
            assert mse == pytest.approx(only, rel=1e-6)   # the factors add nothing
    print("regParam, training MSE, R2:", results)
    assert results["mapped"][0] == pytest.approx(9.83 * 671 / 100004)  # per_user
    assert results["mapped"][1] < results["literal"][1]
