"""Warm start (model.warm_start): a fit that starts from a saved model's users. Every
iteration's loss and the final factors equal the NumPy oracles (tests/oracles.py) started from
the saved users' factors and intercepts, with the documented seeded start for users the saved
model lacks; explicit and implicit feedback; mismatches fail with one line; the train job
resolves a model name of the sink; and on the whole shipped sample a warm start from
yesterday's model (the earliest 90% of the ratings) reaches the cold fit's loss in fewer
iterations."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE
from oracles import bqml_explicit_als, random_ratings, wals_dense
from recsys.config import ModelConfig, load_config
from recsys.errors import ConfigError, InputError
from recsys.model import fit, load, save

pytestmark = pytest.mark.spark

RANK = 3


@pytest.fixture(scope="module")
def frames():
    """(yesterday, today): today adds ratings of known users and 9 new users (41..49)."""
    rng = np.random.default_rng(8)
    today = random_ratings(rng, 900, 50, 70)
    yesterday = today[(today.user_id <= 40) & (rng.random(len(today)) < 0.8)]
    return yesterday.reset_index(drop=True), today


def _saved(spark, tmp_path, model):
    """The model as the train job leaves it: saved, then loaded back."""
    path = str(tmp_path / "saved")
    save(model, path)
    return load(spark, path)


def test_explicit_warm_start_is_the_oracle_started_from_the_saved_users(spark, tmp_path,
                                                                        frames):
    yesterday, today = frames
    cfg = ModelConfig(num_factors=RANK, l2_reg=2.0, max_iterations=3, early_stop=False,
                      seed=4)
    saved = _saved(spark, tmp_path, fit(spark.createDataFrame(yesterday), cfg))
    start = {r.user_id: (np.array(r.factors), r.intercept) for r in saved.users.collect()}
    model = fit(spark.createDataFrame(today), cfg, warm_start=saved)
    want = bqml_explicit_als(today.user_id.to_numpy(), today.item_id.to_numpy(),
                             today.rating.to_numpy(), rank=RANK, l2_reg=2.0,
                             intercept_l2_reg=2.0, iterations=3, seed=4, start_users=start)
    assert [r["loss"] for r in model.training_info] == pytest.approx(
        [w["loss"] for w in want], rel=1e-9)
    for r in model.users.collect():
        x, b = want[-1]["users"][r.user_id]
        assert r.factors == pytest.approx(x, abs=1e-8) and r.intercept == pytest.approx(b, abs=1e-8)
    assert model.options["warm_start_users"] == len(start) == yesterday.user_id.nunique()
    # The seeded start would have given other losses: the warm rows did reach the solver.
    cold = fit(spark.createDataFrame(today), cfg)
    assert cold.training_info[0]["loss"] != pytest.approx(model.training_info[0]["loss"],
                                                          rel=1e-6)


def test_implicit_warm_start_is_the_dense_wals_oracle_started_from_the_saved_users(
        spark, tmp_path, frames):
    yesterday, today = frames
    cfg = ModelConfig(num_factors=RANK, l2_reg=2.0, feedback_type="implicit", wals_alpha=5.0,
                      max_iterations=2, early_stop=False)
    saved = _saved(spark, tmp_path, fit(spark.createDataFrame(yesterday), cfg))
    start = {r.user_id: np.array(r.factors) for r in saved.users.collect()}
    model = fit(spark.createDataFrame(today), cfg, warm_start=saved)
    want = wals_dense(today.user_id.to_numpy(), today.item_id.to_numpy(),
                      today.rating.to_numpy(), rank=RANK, l2_reg=2.0, alpha=5.0, iterations=2,
                      seed=42, start_users=start)
    assert [r["loss"] for r in model.training_info] == pytest.approx(
        [w["loss"] for w in want], rel=1e-8)
    for r in model.users.collect():
        assert r.factors == pytest.approx(want[-1]["users"][r.user_id], abs=1e-8)


def test_warm_start_mismatches_fail_with_one_line(spark, frames):
    yesterday, today = frames
    saved = fit(spark.createDataFrame(yesterday), ModelConfig(num_factors=RANK, max_iterations=1))
    with pytest.raises(ConfigError, match="^model.warm_start: the saved model has 3 factors and "
                                          "explicit feedback; this fit has 4 and explicit$"):
        fit(spark.createDataFrame(today), ModelConfig(num_factors=4, max_iterations=1),
            warm_start=saved)
    text_ids = spark.createDataFrame(today.astype({"user_id": str}))
    with pytest.raises(InputError, match="^model.warm_start: column 'user_id' is bigint but "
                                         "the index has string"):
        fit(text_ids, ModelConfig(num_factors=RANK, max_iterations=1), warm_start=saved)
    with pytest.raises(ConfigError, match="model.warm_start needs model.solver bigquery_ml"):
        load_config(None, ["source.ratings=x", "model.solver=spark_als",
                           "model.warm_start=mf_explicit"])


def test_train_job_warm_starts_from_a_model_of_its_sink(spark, tmp_path, frames):
    """model.warm_start as a model name: the sink's current version of that model."""
    from recsys.runner.pipeline import run_train

    _, today = frames
    path = tmp_path / "ratings.parquet"
    today.to_parquet(path)
    sets = ["source.ratings=unused", f"model.input={path}", f"sink.path={tmp_path}",
            f"model.num_factors={RANK}", "model.max_iterations=3"]
    run_train(spark, load_config(None, sets))
    report = run_train(spark, load_config(None, sets + ["model.warm_start=mf_explicit"]))
    users = today.user_id.nunique()
    assert f"warm start: {users:,} of {users:,} users from mf_explicit" in report.render()


@pytest.mark.e2e
def test_warm_start_reaches_the_cold_loss_in_fewer_iterations_on_the_sample(spark):
    """The whole sample, the tutorial's options and EARLY_STOP: yesterday's model is fitted on
    the earliest 90% of the ratings (by timestamp); today's fit on all of them, cold (seeded)
    and warm (from yesterday's users). The warm fit stops after fewer iterations, at a loss no
    worse than the cold fit's (figures: docs/solvers.md, benchmarks/warm_start.py)."""
    ratings = pd.read_csv(os.path.join(SAMPLE, "ratings.csv")).rename(
        columns={"userId": "user_id", "movieId": "item_id"})[
        ["user_id", "item_id", "rating", "timestamp"]]
    cut = ratings.timestamp.quantile(0.9)
    cfg = ModelConfig(num_factors=34, l2_reg=9.83, max_iterations=20)
    columns = ["user_id", "item_id", "rating"]
    yesterday = fit(spark.createDataFrame(ratings[ratings.timestamp <= cut][columns]), cfg)
    today = spark.createDataFrame(ratings[columns]).cache()
    cold = fit(today, cfg).training_info
    warm = fit(today, cfg, warm_start=yesterday).training_info
    assert len(warm) < len(cold)
    assert warm[-1]["loss"] <= cold[-1]["loss"] * (1 + 1e-3)
