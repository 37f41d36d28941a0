"""The model: intercepts against numpy, ML.TRAINING_INFO iterates and early stop in every
training-info mode, ML.WEIGHTS and ML.GENERATE_EMBEDDING, implicit spark_als, string ids, and
BigQuery ML's L2_REG against Spark's regParam. No expectation calls recsys: the references are
NumPy oracles (tests/oracles.py) and, for spark_als's random start, pyspark.ml ALS fitted here
directly on residuals computed in NumPy."""

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from oracles import (SPARK_ALS_INTERCEPT_SWEEPS, bqml_explicit_als, intercept_sweeps,
                     spark_als_reference)
from recsys.config import ModelConfig
from recsys.model import fit, fit_intercepts
from recsys.model.recommend import recommend
from recsys.model.weights import embeddings, weights

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
    # 20 sweeps (each two checkpointed Spark jobs): on this data Gauss-Seidel is then within
    # 8.5e-8 of the ridge solution (NumPy, oracles.intercept_sweeps), 12x inside the 1e-6
    # asserted (15 sweeps: 1.8e-6, outside it; 30: 1.9e-10, and 52 s in the marked tier).
    got_u, got_i = fit_intercepts(df, global_mean=float(mu), l2_reg=2.0, sweeps=20)
    for row in got_u.collect():
        assert row.intercept == pytest.approx(want_u[row.user_id], abs=1e-6)
    for row in got_i.collect():
        assert row.intercept == pytest.approx(want_i[row.item_id], abs=1e-6)


@pytest.fixture(scope="module")
def small_frame():
    rng = np.random.default_rng(11)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 40, 700),
                                                      rng.integers(1, 60, 700))})
    return pd.DataFrame([(u, i, float(rng.integers(1, 6))) for u, i in pairs],
                        columns=["user_id", "item_id", "rating"])


@pytest.fixture(scope="module")
def small_ratings(spark, small_frame):
    return spark.createDataFrame(small_frame).cache()


def spark_als_reference_loss(spark, frame, **options):
    """ML.TRAINING_INFO's loss (training MSE) of the reference spark_als model
    (oracles.spark_als_reference), computed in NumPy."""
    predict = spark_als_reference(spark, frame, **options)
    pred = [predict(u, i) for u, i in zip(frame.user_id.tolist(), frame.item_id.tolist())]
    return float(np.mean((frame.rating.to_numpy() - np.array(pred)) ** 2))


def stop_length(losses, threshold):
    """Rows BigQuery ML's EARLY_STOP keeps: up to the first iteration whose relative
    improvement over the previous one is below ``threshold``."""
    for n in range(1, len(losses)):
        if (losses[n - 1] - losses[n]) / losses[n - 1] < threshold:
            return n + 1
    return len(losses)


def test_early_stop_bigquery_ml(small_frame, small_ratings):
    """bigquery_ml (training_info final, one row per iteration run): the rows are the oracle's
    iterations up to the first relative improvement below MIN_REL_PROGRESS."""
    held = small_frame.iloc[::23]
    cfg = ModelConfig(num_factors=4, l2_reg=1.0, max_iterations=10, early_stop=True,
                      min_rel_progress=0.05, seed=3)
    info = fit(small_ratings, cfg, small_ratings.sparkSession.createDataFrame(held)).training_info
    want = bqml_explicit_als(small_frame.user_id.to_numpy(), small_frame.item_id.to_numpy(),
                             small_frame.rating.to_numpy(), rank=4, l2_reg=1.0,
                             intercept_l2_reg=1.0, iterations=10, seed=3,
                             eval_rows=list(zip(held.user_id, held.item_id, held.rating)))
    n = stop_length([w["loss"] for w in want], 0.05)
    assert 2 < n < 10  # the stop falls inside the run
    assert [row["loss"] for row in info] == pytest.approx([w["loss"] for w in want[:n]], rel=1e-8)
    assert [row["eval_loss"] for row in info] == pytest.approx(
        [w["eval_loss"] for w in want[:n]], rel=1e-8)


def test_every_iteration_reports_the_real_iterates_and_stops_early(spark, small_frame,
                                                                     small_ratings):
    """spark_als every_iteration: row k is the model after k + 1 ALS iterations, as the
    reference built without recsys gives it (pyspark.ml ALS has no per-iteration hook, so
    recsys refits), and the fits stop after the first iterate whose relative improvement is
    below MIN_REL_PROGRESS."""
    cfg = ModelConfig(solver="spark_als", num_factors=4, l2_reg=1.0, max_iterations=8,
                      early_stop=True, min_rel_progress=0.05, training_info="every_iteration",
                      seed=3)
    info = fit(small_ratings, cfg).training_info
    reg = 1.0 * small_frame.user_id.nunique() / len(small_frame)  # per_user: L2_REG / mean n_u
    want = []
    while len(want) < 8 and stop_length(want, 0.05) == len(want):
        want.append(spark_als_reference_loss(spark, small_frame, rank=4, reg_param=reg,
                                             iterations=len(want) + 1, seed=3, l2_reg=1.0))
    n = stop_length(want, 0.05)
    assert 2 <= n < 8
    assert [row["iteration"] for row in info] == list(range(n))
    assert all(row["eval_loss"] is None for row in info)
    assert [row["loss"] for row in info] == pytest.approx(want[:n], rel=1e-5)
    assert want[0] > want[n - 1] * 1.01  # the iterates differ: each row is its own model


def test_early_stop_cannot_apply_to_spark_als_final(spark, small_frame, small_ratings):
    """spark_als final fits max_iterations at once: one row, iteration max_iterations - 1, the
    reference model of max_iterations iterations, whatever EARLY_STOP says."""
    cfg = ModelConfig(solver="spark_als", num_factors=4, l2_reg=1.0, max_iterations=5,
                      early_stop=True, min_rel_progress=0.5, seed=3)
    info = fit(small_ratings, cfg).training_info
    reg = 1.0 * small_frame.user_id.nunique() / len(small_frame)
    assert [row["iteration"] for row in info] == [4]
    assert info[0]["loss"] == pytest.approx(spark_als_reference_loss(
        spark, small_frame, rank=4, reg_param=reg, iterations=5, seed=3, l2_reg=1.0), rel=1e-5)


@pytest.mark.parametrize("one_task", [True, False], ids=["one task", "range sort"])
def test_weights_and_embeddings_are_the_oracle_model_in_id_order(spark, small_frame,
                                                                  small_ratings, one_task,
                                                                  monkeypatch):
    """ML.WEIGHTS: the schema, the global row, and every user's and item's factors and
    intercept equal the NumPy oracle's; rows ordered users then items by numeric id (not as
    text: 2 before 10), the global row last. ML.GENERATE_EMBEDDING: factors + [intercept];
    the vector-search embedding: the intercepts folded in so that a dot product predicts.
    Both ways of writing the tables: from one task (small models), Spark's range sort."""
    from recsys.model import weights as weights_module

    monkeypatch.setattr(weights_module, "ONE_TASK_ROWS", 10 ** 6 if one_task else 0)
    model = fit(small_ratings, ModelConfig(num_factors=3, l2_reg=1.0, max_iterations=5,
                                           early_stop=False, seed=1))
    table = weights(spark, model)
    assert table.schema.simpleString() == (
        "struct<processed_input:string,feature:string,"
        "factor_weights:array<struct<factor:bigint,weight:double>>,intercept:double>")
    want = bqml_explicit_als(small_frame.user_id.to_numpy(), small_frame.item_id.to_numpy(),
                             small_frame.rating.to_numpy(), rank=3, l2_reg=1.0,
                             intercept_l2_reg=1.0, iterations=5, seed=1)[-1]
    assert table.rdd.getNumPartitions() == 1 or not one_task
    rows = table.collect()
    users, items = sorted(want["users"]), sorted(want["items"])
    assert [(r.processed_input, r.feature) for r in rows] == (
        [("user_id", str(u)) for u in users] + [("item_id", str(i)) for i in items]
        + [(None, "global__intercept__")])
    glob = rows[-1]
    assert glob.factor_weights is None
    assert glob.intercept == pytest.approx(small_frame.rating.mean(), rel=1e-12)
    for r in rows[:-1]:
        factors, intercept = want[r.processed_input.replace("_id", "s")][int(r.feature)]
        assert [w.factor for w in r.factor_weights] == [1, 2, 3]
        assert [w.weight for w in r.factor_weights] == pytest.approx(factors, abs=1e-8)
        assert r.intercept == pytest.approx(intercept, abs=1e-8)
    rows = embeddings(model).collect()
    emb = {(r.processed_input, r.feature): r.ml_generate_embedding_result for r in rows}
    search = {(r.processed_input, r.feature): r.search_embedding for r in rows}
    assert len(emb) == len(users) + len(items)
    mu = small_frame.rating.mean()
    for side, key in (("user_id", "users"), ("item_id", "items")):
        for ident, (factors, intercept) in want[key].items():
            assert emb[(side, str(ident))] == pytest.approx(list(factors) + [intercept],
                                                            abs=1e-8)
            # VECTOR_SEARCH's shape: users [x, 1, mu + b_u], items [y, b_i, 1].
            tail = [1.0, mu + intercept] if side == "user_id" else [intercept, 1.0]
            assert search[(side, str(ident))] == pytest.approx(list(factors) + tail, abs=1e-8)


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
        if name == "literal":  # the factors add nothing: the intercept-only model's MSE
            frame = ratings.toPandas()
            b_u, b_i = intercept_sweeps(frame.user_id, frame.item_id, frame.rating,
                                        mu=label.mean(), l2_reg=9.83,
                                        sweeps=SPARK_ALS_INTERCEPT_SWEEPS)
            only = np.mean((frame.rating - label.mean() - frame.user_id.map(b_u)
                            - frame.item_id.map(b_i)) ** 2)
            assert mse == pytest.approx(only, rel=1e-6)
    print("regParam, training MSE, R2:", results)
    assert results["mapped"][0] == pytest.approx(9.83 * 671 / 100004)  # per_user
    assert results["mapped"][1] < results["literal"][1]


@pytest.mark.parametrize("held_out", [False, True])
def test_the_model_describes_its_training_rows(small_frame, small_ratings, held_out):
    """Rows, distinct users and items, and mean rating of the training rows (pandas), with
    and without evaluation rows whose users and items the training rows lack (bigquery_ml
    counts them while indexing the ids when there are none)."""
    spark = small_ratings.sparkSession
    eval_rows = (spark.createDataFrame(pd.DataFrame(
        {"user_id": [1000, 1], "item_id": [1, 2000], "rating": [3.0, 4.0]}))
        if held_out else None)
    cfg = ModelConfig(num_factors=2, l2_reg=1.0, max_iterations=1, seed=3)
    data = fit(small_ratings, cfg, eval_rows).data
    assert (data["n_rows"], data["n_users"], data["n_items"]) == (
        len(small_frame), small_frame.user_id.nunique(), small_frame.item_id.nunique())
    assert data["mean_rating"] == pytest.approx(small_frame.rating.mean(), rel=1e-12)
