"""The train / evaluate / recommend jobs in-process: implicit feedback, string ids, minimum
support and exclusions, evaluate.input and recommend.input. (Data splits:
tests/test_split_isolation.py; tuning: tests/test_tuning.py.)"""

import numpy as np
import pandas as pd
import pytest

from recsys.config import load_config
from recsys.runner.pipeline import run_evaluate, run_recommend, run_train

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def ratings_parquet(tmp_path_factory):
    rng = np.random.default_rng(21)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 60, 1500),
                                                      rng.integers(1, 80, 1500))})
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    frame["rating"] = rng.integers(1, 6, len(frame)).astype(float)
    frame["is_eval"] = rng.random(len(frame)) < 0.25
    path = tmp_path_factory.mktemp("input") / "ratings.parquet"
    frame.to_parquet(path)
    return str(path), frame


def config(tmp_path, input_path, *sets):
    return load_config(None, ["source.ratings=unused", f"model.input={input_path}",
                              f"sink.path={tmp_path}", "model.num_factors=3",
                              "model.max_iterations=3", *sets])


def read(tmp_path, name):
    return pd.read_parquet(tmp_path / "bqml_tutorial" / name)


@pytest.mark.e2e
def test_implicit_feedback_end_to_end(spark, tmp_path, ratings_parquet):
    """FEEDBACK_TYPE implicit through train, evaluate and recommend (bigquery_ml): every
    iteration's loss and eval_loss, the factors and ML.EVALUATE's four metrics equal the dense
    WALS oracle (tests/oracles.py) and the ranking oracle of tests/test_implicit_metrics.py, fed
    with the oracle's own scores; WALS_ALPHA 5 is the one the oracle uses."""
    from oracles import wals_dense
    from test_implicit_metrics import oracle as implicit_oracle

    path, frame = ratings_parquet
    cfg = config(tmp_path, path, "model.feedback_type=implicit", "model.wals_alpha=5",
                 "model.l2_reg=2.0", "model.early_stop=false",
                 "model.data_split_method=custom", "model.data_split_col=is_eval",
                 "recommend.top_k=3")
    run_train(spark, cfg)
    run_evaluate(spark, cfg)
    run_recommend(spark, cfg)
    train, held = frame[~frame.is_eval], frame[frame.is_eval]
    want = wals_dense(train.user_id.to_numpy(), train.item_id.to_numpy(),
                      train.rating.to_numpy(), rank=3, l2_reg=2.0, alpha=5.0, iterations=3,
                      seed=42, eval_rows=list(zip(held.user_id, held.item_id, held.rating)))
    info = read(tmp_path, "training_info")
    assert info["loss"].tolist() == pytest.approx([w["loss"] for w in want], rel=1e-8)
    assert info["eval_loss"].tolist() == pytest.approx([w["eval_loss"] for w in want], rel=1e-8)
    user_f, item_f = want[-1]["users"], want[-1]["items"]
    weights = read(tmp_path, "weights")
    assert (weights.intercept == 0.0).all()  # WALS has no intercepts
    for row in weights[weights.processed_input == "user_id"].itertuples():
        factors = [w["weight"] for w in row.factor_weights]
        assert factors == pytest.approx(user_f[int(row.feature)], abs=1e-8)

    # ML.EVALUATE on the held-out rows: every held-out user ranks every training item by the
    # oracle's x_u . y_i (0 for a user the model has never seen).
    scores = [(int(u), int(i), float(user_f[u] @ y) if u in user_f else 0.0)
              for u in sorted(set(held.user_id)) for i, y in item_f.items()]
    expected = implicit_oracle(list(zip(held.user_id, held.item_id, held.rating)), scores)
    evaluate = read(tmp_path, "evaluate")
    assert list(evaluate.columns) == list(expected)
    for name, value in expected.items():
        assert evaluate[name].iloc[0] == pytest.approx(value, rel=1e-6), name

    rec = read(tmp_path, "recommend")
    assert list(rec.columns) == ["predicted_rating_confidence", "user_id", "item_id"]
    got = dict(zip(zip(rec.user_id, rec.item_id), rec.predicted_rating_confidence))
    assert len(got) == len(user_f) * len(item_f)
    for (u, i), value in list(got.items())[::37]:
        assert value == pytest.approx(user_f[u] @ item_f[i], abs=1e-8)
    top = read(tmp_path, "recommend_top5")
    for row in top.itertuples():
        ranked = sorted(item_f, key=lambda i: (-(user_f[row.user_id] @ item_f[i]), i))[:3]
        assert [e["item_id"] for e in row.recommendations] == ranked


def test_string_ids_through_the_jobs(spark, tmp_path, ratings_parquet):
    _, frame = ratings_parquet
    named = frame.assign(user_id="u" + frame.user_id.astype(str),
                         item_id="i" + frame.item_id.astype(str))
    path = tmp_path / "named.parquet"
    named.to_parquet(path)
    cfg = config(tmp_path, str(path))
    run_train(spark, cfg)
    run_recommend(spark, cfg)
    rec = read(tmp_path, "recommend")
    assert rec.user_id.map(type).eq(str).all()
    assert set(rec.user_id) == set(named.user_id)
    assert len(rec) == named.user_id.nunique() * named.item_id.nunique()
    weights = read(tmp_path, "weights")
    assert set(weights[weights.processed_input == "item_id"].feature) == set(named.item_id)


def test_minimum_support_and_exclusion_in_the_top_k(spark, tmp_path, ratings_parquet):
    path, frame = ratings_parquet
    cfg = config(tmp_path, path, "recommend.min_item_ratings=20", "recommend.exclude_rated=true")
    run_train(spark, cfg)
    report = run_recommend(spark, cfg)
    counts = frame.groupby("item_id").size()
    rated = set(zip(frame.user_id, frame.item_id))
    top = read(tmp_path, "recommend_top5")
    for row in top.itertuples():
        for entry in row.recommendations:
            assert counts[entry["item_id"]] >= 20
            assert (row.user_id, entry["item_id"]) not in rated
    # The all-pairs table keeps every pair; the support filter applies to the top-k only.
    pairs = frame.user_id.nunique() * frame.item_id.nunique()
    assert len(read(tmp_path, "recommend")) == pairs
    assert f"{pairs:,} (user, item) predictions" in report.render()


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory, ratings_parquet):
    """run_train on the fixture (NO_SPLIT, early stop off) and the oracle's final model."""
    from oracles import bqml_explicit_als

    path, frame = ratings_parquet
    sink = tmp_path_factory.mktemp("trained")
    run_train(spark, config(sink, path, "model.early_stop=false", "model.l2_reg=2.0"))
    last = bqml_explicit_als(frame.user_id.to_numpy(), frame.item_id.to_numpy(),
                             frame.rating.to_numpy(), rank=3, l2_reg=2.0, intercept_l2_reg=2.0,
                             iterations=3, seed=42)[-1]

    def predict(u, i):
        """The oracle's prediction, with BigQuery ML's fallback for an unknown user or item."""
        value = last["mu"] + last["users"].get(u, (None, 0.0))[1] + \
            last["items"].get(i, (None, 0.0))[1]
        if u in last["users"] and i in last["items"]:
            value += last["users"][u][0] @ last["items"][i][0]
        return value

    return sink, path, frame, predict, sorted(last["items"])


def test_evaluate_input_scores_the_given_table(spark, tmp_path, trained):
    """evaluate.input: ML.EVALUATE on another table (here with a user and an item the model has
    never seen, scored by the intercept fallback) equals NumPy's metrics of the oracle's
    predictions on exactly those rows."""
    from oracles import regression_metrics

    sink, path, frame, predict, _ = trained
    table = frame.iloc[::5][["user_id", "item_id", "rating"]]
    table = pd.concat([table, pd.DataFrame({"user_id": [999, 3], "item_id": [4, 9999],
                                            "rating": [4.0, 1.5]})], ignore_index=True)
    table_path = tmp_path / "evaluate_input.parquet"
    table.to_parquet(table_path)
    cfg = config(sink, path, "model.early_stop=false", "model.l2_reg=2.0",
                 f"evaluate.input={table_path}")
    report = run_evaluate(spark, cfg)
    want = regression_metrics(table.rating, [predict(u, i) for u, i in
                                             zip(table.user_id, table.item_id)])
    got = read(sink, "evaluate")
    for name, value in want.items():
        assert got[name].iloc[0] == pytest.approx(value, rel=1e-8), name
    assert f"on {table_path}" in report.render()


def test_recommend_input_of_users_and_of_pairs(spark, tmp_path, trained):
    """recommend.input with only a user column: those users (one unknown) x every training
    item, and their top 5 by (prediction DESC, item ASC); with user and item columns: exactly
    those pairs, other columns passed through, each user's top 5 among its own pairs."""
    sink, path, frame, predict, items = trained
    users = pd.DataFrame({"user_id": [5, 17, 999, 5]})
    users_path = tmp_path / "users.parquet"
    users.to_parquet(users_path)
    run_recommend(spark, config(sink, path, "model.early_stop=false", "model.l2_reg=2.0",
                                f"recommend.input={users_path}"))
    rec = read(sink, "recommend")
    assert sorted(zip(rec.user_id, rec.item_id)) == [(u, i) for u in (5, 17, 999) for i in items]
    for u, i, value in zip(rec.user_id, rec.item_id, rec.predicted_rating):
        assert value == pytest.approx(predict(u, i), abs=1e-8)
    top = {r.user_id: [e["item_id"] for e in r.recommendations]
           for r in read(sink, "recommend_top5").itertuples()}
    assert top == {u: sorted(items, key=lambda i: (-predict(u, i), i))[:5] for u in (5, 17, 999)}

    pairs = pd.DataFrame({"user_id": [5, 5, 5, 17, 17, 999], "item_id": [1, 2, 77, 2, 9999, 2],
                          "tag": list("abcdef")})
    pairs_path = tmp_path / "pairs.parquet"
    pairs.to_parquet(pairs_path)
    run_recommend(spark, config(sink, path, "model.early_stop=false", "model.l2_reg=2.0",
                                f"recommend.input={pairs_path}", "recommend.top_k=2"))
    rec = read(sink, "recommend")
    assert list(rec.columns) == ["predicted_rating", "user_id", "item_id", "tag"]
    got = {r.tag: (r.user_id, r.item_id, r.predicted_rating) for r in rec.itertuples()}
    assert set(got) == set("abcdef")
    for p in pairs.itertuples():
        assert got[p.tag][:2] == (p.user_id, p.item_id)
        assert got[p.tag][2] == pytest.approx(predict(p.user_id, p.item_id), abs=1e-8)
    top = {r.user_id: [e["item_id"] for e in r.recommendations]
           for r in read(sink, "recommend_top5").itertuples()}
    mine = pairs.groupby("user_id").item_id.apply(list).to_dict()
    assert top == {u: sorted(v, key=lambda i: (-predict(u, i), i))[:2] for u, v in mine.items()}


def test_a_failed_model_table_write_fails_the_pipeline_and_publishes_nothing(
        spark, small_source, tmp_path, monkeypatch):
    """The pipeline writes ML.WEIGHTS and its siblings in a thread beside evaluate and
    recommend: when that write fails, the run still fails with that write's error, after the
    stages beside it ended, and no table of the run is published (its manifest says it
    failed, and why)."""
    import glob
    import json
    import os

    from conftest import run_in_process
    from recsys.runner import pipeline

    def failing(spark, trained):
        raise RuntimeError("the weights write failed")

    monkeypatch.setattr(pipeline.weights_stage, "weights", failing)
    with pytest.raises(RuntimeError, match="the weights write failed"):
        run_in_process(spark, [f"source.ratings={small_source / 'ratings.csv'}",
                               f"sink.path={tmp_path}", "model.max_iterations=1"])
    dataset = tmp_path / "bqml_tutorial"
    assert not os.path.exists(dataset / ".current")
    [manifest] = [json.load(open(path)) for path in glob.glob(str(dataset / ".runs" / "*.json"))]
    assert manifest["success"] is False
    assert "the weights write failed" in manifest["error"]
    # The stages beside the failed write went on to the end: the top-5 table was written.
    assert "recommend_top5" in os.listdir(dataset / ".versions")
