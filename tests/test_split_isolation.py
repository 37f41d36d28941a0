"""DATA_SPLIT_METHOD through the train and evaluate jobs: no evaluation row reaches training.

For CUSTOM, RANDOM and SEQ the held-out rows are found independently (the flag column, the
documented hash, a pandas sort); the NumPy oracle of BigQuery ML's objective trained on the
other rows alone must give the run's every-iteration loss, its eval_loss on the held-out rows,
its factors, and ML.EVALUATE's metrics. A single held-out row fitted would move all of them.
"""

import math

import numpy as np
import pandas as pd
import pytest

from oracles import bqml_explicit_als, random_split_is_eval, regression_metrics
from recsys.config import load_config
from recsys.runner.pipeline import run_evaluate, run_train

pytestmark = pytest.mark.spark

SEED, FRACTION, ITERATIONS = 42, 0.2, 3


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(17)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 36, 700),
                                                      rng.integers(1, 51, 700))})
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    frame["rating"] = rng.integers(1, 11, len(frame)) / 2.0
    frame["ts"] = rng.permutation(len(frame)).astype("int64") * 7 + 1000
    flag = pd.array(rng.random(len(frame)) < 0.2, dtype="boolean")
    flag[rng.choice(len(frame), 9, replace=False)] = pd.NA  # NULL is evaluation data too
    frame["is_eval"] = flag
    path = tmp_path_factory.mktemp("split-src") / "ratings.parquet"
    frame.to_parquet(path)
    return str(path), frame


def held_out(frame, method):
    """Which rows are evaluation rows, by the documented rules (recsys/model/split.py)."""
    if method == "custom":
        return frame.is_eval.fillna(True).astype(bool).to_numpy()
    if method == "random":
        return np.array([random_split_is_eval(u, i, SEED, FRACTION)
                         for u, i in zip(frame.user_id, frame.item_id)])
    k = math.floor(FRACTION * len(frame) + 0.5)  # SEQ: the k largest ts, all distinct here
    return frame.ts.rank(method="first").to_numpy() > len(frame) - k


@pytest.mark.parametrize("method", ["custom", "random", "seq"])
def test_no_eval_row_reaches_training(spark, tmp_path, source, method):
    path, frame = source
    split_col = {"custom": ["model.data_split_col=is_eval"],
                 "seq": ["model.data_split_col=ts"]}.get(method, [])
    cfg = load_config(None, ["source.ratings=unused", f"model.input={path}",
                             f"sink.path={tmp_path}", "model.num_factors=3",
                             f"model.max_iterations={ITERATIONS}", "model.early_stop=false",
                             "model.l2_reg=2.0", f"model.seed={SEED}",
                             f"model.data_split_method={method}",
                             f"model.data_split_eval_fraction={FRACTION}", *split_col])
    report = run_train(spark, cfg)
    run_evaluate(spark, cfg)
    assert f"split {method.upper()}" in report.render()
    is_eval = held_out(frame, method)
    assert 0.1 < is_eval.mean() < 0.3
    train, held = frame[~is_eval], frame[is_eval]
    want = bqml_explicit_als(train.user_id.to_numpy(), train.item_id.to_numpy(),
                             train.rating.to_numpy(), rank=3, l2_reg=2.0, intercept_l2_reg=2.0,
                             iterations=ITERATIONS, seed=SEED,
                             eval_rows=list(zip(held.user_id, held.item_id, held.rating)))
    wh = tmp_path / "bqml_tutorial"
    info = pd.read_parquet(wh / "training_info")
    assert info.loss.tolist() == pytest.approx([w["loss"] for w in want], rel=1e-8)
    assert info.eval_loss.tolist() == pytest.approx([w["eval_loss"] for w in want], rel=1e-8)

    last = want[-1]
    weights = pd.read_parquet(wh / "weights")
    for side, key in (("user_id", "users"), ("item_id", "items")):
        rows = weights[weights.processed_input == side]
        assert sorted(int(f) for f in rows.feature) == sorted(last[key])  # training ids only
        for row in rows.itertuples():
            factors, intercept = last[key][int(row.feature)]
            assert [w["weight"] for w in row.factor_weights] == pytest.approx(factors, abs=1e-8)
            assert row.intercept == pytest.approx(intercept, abs=1e-8)

    def predict(u, i):
        value = last["mu"] + last["users"].get(u, (None, 0.0))[1] + \
            last["items"].get(i, (None, 0.0))[1]
        if u in last["users"] and i in last["items"]:
            value += last["users"][u][0] @ last["items"][i][0]
        return value

    expected = regression_metrics(held.rating, [predict(u, i) for u, i in
                                                zip(held.user_id, held.item_id)])
    evaluate = pd.read_parquet(wh / "evaluate")
    for name, value in expected.items():
        assert evaluate[name].iloc[0] == pytest.approx(value, rel=1e-8), name
