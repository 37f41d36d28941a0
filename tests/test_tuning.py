"""Tuning (NUM_TRIALS) against oracles: each trial's validation split rebuilt from the documented
hash, each trial's objective recomputed by the NumPy model of BigQuery ML's objective
(tests/oracles.py) on that split, the optimal trial chosen from those figures (ties to the
lowest trial id), and the final model of ``run_train`` equal to the oracle trained on every
training row with the optimal options; random search; the one-line errors."""

import itertools

import numpy as np
import pandas as pd
import pytest

from oracles import bqml_explicit_als, random_ratings, random_split_is_eval, spark_als_reference
from recsys.config import ModelConfig, TuningConfig, load_config
from recsys.errors import InputError
from recsys.runner.pipeline import run_train
from recsys.evaluation.tuning import candidates, tune

pytestmark = pytest.mark.spark

SEED, ITERATIONS, FRACTION = 42, 3, 0.25


@pytest.fixture(scope="module")
def frame():
    return random_ratings(np.random.default_rng(31), 520, 31, 41)


@pytest.fixture(scope="module")
def ratings(spark, frame):
    return spark.createDataFrame(frame).cache()


def validation_mask(frame, seed=SEED + 1, fraction=FRACTION):
    """The trials' validation rows: RANDOM with the model seed + 1 (recsys.evaluation.tuning)."""
    return np.array([random_split_is_eval(u, i, seed, fraction)
                     for u, i in zip(frame.user_id, frame.item_id)])


def oracle_objective(fit_rows, valid_rows, *, rank, l2_reg, intercept_l2_reg):
    """MEAN_SQUARED_ERROR on the validation rows of the oracle trained on the fit rows."""
    history = bqml_explicit_als(
        fit_rows.user_id.to_numpy(), fit_rows.item_id.to_numpy(), fit_rows.rating.to_numpy(),
        rank=rank, l2_reg=l2_reg, intercept_l2_reg=intercept_l2_reg, iterations=ITERATIONS,
        seed=SEED, eval_rows=list(zip(valid_rows.user_id, valid_rows.item_id, valid_rows.rating)))
    return history[-1]["eval_loss"]


def model_config(**kw):
    return ModelConfig(max_iterations=ITERATIONS, early_stop=False, seed=SEED, **kw)


def test_grid_trials_are_scored_on_their_validation_rows(spark, frame, ratings):
    """bigquery_ml grid over num_factors x l2_reg x intercept_l2_reg, in that order; every
    objective equals the oracle's; is_optimal marks the oracle's best."""
    tuning = TuningConfig(num_trials=4, num_factors=(2,), l2_reg=(0.5, 20.0),
                          intercept_l2_reg=(0.5, 20.0), validation_fraction=FRACTION)
    best, trials = tune(spark, ratings, model_config(), tuning)
    rows = sorted(trials.collect(), key=lambda r: r.trial_id)
    grid = [(0.5, 0.5), (0.5, 20.0), (20.0, 0.5), (20.0, 20.0)]
    assert [(r.trial_id, r.num_factors, r.l2_reg, r.intercept_l2_reg, r.reg_param)
            for r in rows] == [(n, 2, a, b, None) for n, (a, b) in enumerate(grid)]
    valid = validation_mask(frame)
    assert 0 < valid.sum() < len(frame)
    want = [oracle_objective(frame[~valid], frame[valid], rank=2, l2_reg=a, intercept_l2_reg=b)
            for a, b in grid]
    assert [r.objective for r in rows] == pytest.approx(want, rel=1e-8)
    assert [r.eval_rmse for r in rows] == pytest.approx(np.sqrt(want), rel=1e-8)
    winner = int(np.argmin(want))
    assert len(set(np.round(want, 6))) == 4 and winner != 0  # the choice is not by position
    assert [r.is_optimal for r in rows] == [n == winner for n in range(4)]
    assert (best.num_factors, best.l2_reg, best.intercept_l2_reg) == (2, *grid[winner])


def test_spark_als_trials_train_with_their_reg_param(spark, frame, ratings):
    """spark_als grid over num_factors x l2_reg x reg_param: each objective is the validation
    MSE of the reference spark_als model (oracles.spark_als_reference: NumPy intercepts,
    pyspark.ml ALS called directly) trained on the fit rows with that trial's regParam."""
    tuning = TuningConfig(num_trials=2, num_factors=(2,), l2_reg=(1.0,), reg_param=(0.05, 5.0),
                          validation_fraction=FRACTION)
    best, trials = tune(spark, ratings, ModelConfig(solver="spark_als", max_iterations=ITERATIONS,
                                                    seed=SEED), tuning)
    rows = sorted(trials.collect(), key=lambda r: r.trial_id)
    assert [(r.num_factors, r.l2_reg, r.reg_param, r.intercept_l2_reg) for r in rows] == [
        (2, 1.0, 0.05, None), (2, 1.0, 5.0, None)]
    valid = validation_mask(frame)
    fit_rows, valid_rows = frame[~valid].reset_index(drop=True), frame[valid]
    want = []
    for r in rows:
        predict = spark_als_reference(spark, fit_rows, rank=2, reg_param=r.reg_param,
                                      iterations=ITERATIONS, seed=SEED, l2_reg=1.0)
        pred = np.array([predict(u, i) for u, i in zip(valid_rows.user_id.tolist(),
                                                      valid_rows.item_id.tolist())])
        want.append(float(np.mean((valid_rows.rating.to_numpy() - pred) ** 2)))
    assert [r.objective for r in rows] == pytest.approx(want, rel=1e-5)
    winner = int(np.argmin(want))
    assert [r.is_optimal for r in rows] == [n == winner for n in range(2)]
    assert best.reg_param == rows[winner].reg_param


@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
def test_equal_objectives_go_to_the_lowest_trial_id(spark, ratings, feedback):
    """Two trials of the same options score the same (minimised MSE, maximised MAP): the
    first of them is the optimal one."""
    tuning = TuningConfig(num_trials=2, num_factors=(2, 2), l2_reg=(1.0,), wals_alpha=(2.0,),
                          validation_fraction=FRACTION)
    _, trials = tune(spark, ratings, model_config(feedback_type=feedback), tuning)
    rows = sorted(trials.collect(), key=lambda r: r.trial_id)
    assert rows[0].objective == rows[1].objective and rows[0].objective is not None
    assert [r.is_optimal for r in rows] == [True, False]


def test_random_search_draws_distinct_grid_points_by_seed():
    """algorithm random: num_trials distinct points of the grid, the same for the same seed,
    and over seeds every point of the grid (not the grid's first points)."""
    tuning = TuningConfig(num_trials=3, algorithm="random", num_factors=(2, 4, 8),
                          l2_reg=(1.0, 2.0), intercept_l2_reg=(5.0,))
    grid = set(itertools.product((2, 4, 8), (1.0, 2.0), (5.0,)))
    seen, prefixes = set(), 0
    for seed in range(30):
        drawn = [(c["num_factors"], c["l2_reg"], c["intercept_l2_reg"])
                 for c in candidates(tuning, implicit=False, seed=seed)]
        assert len(drawn) == 3 and len(set(drawn)) == 3 and set(drawn) <= grid
        assert drawn == [(c["num_factors"], c["l2_reg"], c["intercept_l2_reg"])
                         for c in candidates(tuning, implicit=False, seed=seed)]
        seen |= set(drawn)
        prefixes += set(drawn) == {(2, 1.0, 5.0), (2, 2.0, 5.0), (4, 1.0, 5.0)}
    assert seen == grid and prefixes < 30
    # More trials than points: the whole grid, once each.
    every = TuningConfig(num_trials=10, algorithm="random", num_factors=(2, 4), l2_reg=(1.0,))
    assert len(candidates(every, implicit=False, seed=1)) == 2


def write_parquet(tmp_path, frame):
    path = tmp_path / "ratings.parquet"
    frame.to_parquet(path)
    return str(path)


def job_config(tmp_path, path, *sets):
    return load_config(None, ["source.ratings=unused", f"model.input={path}",
                              f"sink.path={tmp_path}", f"model.max_iterations={ITERATIONS}",
                              "model.early_stop=false", f"model.seed={SEED}", *sets])


def test_run_train_fits_the_final_model_with_the_best_trial(spark, tmp_path, frame):
    """run_train with tuning.num_trials 3 (random search over 4 points): the trials table's
    objectives are the oracle's, and the saved model (its weights and loss) is the oracle
    trained on every training row with the options of the oracle's best trial."""
    cfg = job_config(tmp_path, write_parquet(tmp_path, frame), "tuning.num_trials=3",
                     "tuning.algorithm=random", "tuning.num_factors=[2, 3]",
                     "tuning.l2_reg=[0.5, 20.0]", f"tuning.validation_fraction={FRACTION}")
    report = run_train(spark, cfg)
    wh = tmp_path / "bqml_tutorial"
    trials = pd.read_parquet(wh / "trials").sort_values("trial_id")
    assert len(trials) == 3 and len(set(zip(trials.num_factors, trials.l2_reg))) == 3
    valid = validation_mask(frame)
    want = [oracle_objective(frame[~valid], frame[valid], rank=int(r.num_factors),
                             l2_reg=r.l2_reg, intercept_l2_reg=r.l2_reg)
            for r in trials.itertuples()]
    assert trials.objective.tolist() == pytest.approx(want, rel=1e-8)
    best = trials.iloc[int(np.argmin(want))]
    assert trials.is_optimal.tolist() == [t == best.trial_id for t in trials.trial_id]
    assert f"trial {best.trial_id} " in report.render()

    final = bqml_explicit_als(frame.user_id.to_numpy(), frame.item_id.to_numpy(),
                              frame.rating.to_numpy(), rank=int(best.num_factors),
                              l2_reg=best.l2_reg, intercept_l2_reg=best.l2_reg,
                              iterations=ITERATIONS, seed=SEED)[-1]
    info = pd.read_parquet(wh / "training_info")
    assert info.loss.iloc[-1] == pytest.approx(final["loss"], rel=1e-8)
    weights = pd.read_parquet(wh / "weights")
    users = weights[weights.processed_input == "user_id"]
    assert len(users) == frame.user_id.nunique()
    for row in users.itertuples():
        factors, intercept = final["users"][int(row.feature)]
        assert [w["weight"] for w in row.factor_weights] == pytest.approx(factors, abs=1e-8)
        assert row.intercept == pytest.approx(intercept, abs=1e-8)


def test_empty_validation_split_is_one_line(spark, tmp_path, frame):
    cfg = job_config(tmp_path, write_parquet(tmp_path, frame.head(3)), "tuning.num_trials=1",
                     "tuning.num_factors=[2]", "tuning.l2_reg=[1.0]",
                     "tuning.validation_fraction=0.001")
    assert not validation_mask(frame.head(3), fraction=0.001).any()
    with pytest.raises(InputError) as err:
        run_train(spark, cfg)
    assert str(err.value) == ("tuning: the validation split is empty; "
                              "raise tuning.validation_fraction")


def test_no_trial_with_a_score_is_one_line(spark):
    """Implicit trials are scored by mean_average_precision, NULL when no validation rating is
    positive (no relevant item): with no score at all there is no best trial."""
    rows = [(u, i, 0.0) for u in range(1, 16) for i in range(1, 11) if (u + i) % 3]
    zeros = spark.createDataFrame(rows, "user_id long, item_id long, rating double")
    tuning = TuningConfig(num_trials=1, num_factors=(2,), l2_reg=(1.0,), wals_alpha=(1.0,),
                          validation_fraction=0.3)
    with pytest.raises(ValueError) as err:
        tune(spark, zeros, model_config(feedback_type="implicit"), tuning)
    assert str(err.value) == "no tuning trial produced a score"
