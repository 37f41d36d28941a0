"""The train / evaluate / recommend jobs in-process: data splits, implicit feedback, string ids."""

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


def test_custom_split_feeds_eval_loss_and_evaluate(spark, tmp_path, ratings_parquet):
    path, frame = ratings_parquet
    cfg = config(tmp_path, path, "model.data_split_method=custom",
                 "model.data_split_col=is_eval", "recommend.write_all_pairs=false")
    report = run_train(spark, cfg)
    run_evaluate(spark, cfg)
    info = read(tmp_path, "training_info")
    assert info["eval_loss"].notna().all()
    assert info["eval_loss"].iloc[-1] != pytest.approx(info["loss"].iloc[-1])
    evaluate = read(tmp_path, "evaluate")
    # ML.EVALUATE without input = the training-time metrics, on the split's eval rows.
    assert evaluate["mean_squared_error"].iloc[0] == pytest.approx(info["eval_loss"].iloc[-1])
    weights = read(tmp_path, "weights")
    n_train_users = frame[~frame.is_eval].user_id.nunique()
    assert (weights.processed_input == "user_id").sum() == n_train_users
    assert "split CUSTOM" in report.render()


def test_implicit_feedback_end_to_end(spark, tmp_path, ratings_parquet):
    path, frame = ratings_parquet
    cfg = config(tmp_path, path, "model.feedback_type=implicit", "model.wals_alpha=5",
                 "model.data_split_method=random", "recommend.top_k=3")
    run_train(spark, cfg)
    run_evaluate(spark, cfg)
    run_recommend(spark, cfg)
    evaluate = read(tmp_path, "evaluate")
    assert list(evaluate.columns) == ["mean_average_precision", "mean_squared_error",
                                      "normalized_discounted_cumulative_gain", "average_rank"]
    assert 0 <= evaluate["average_rank"].iloc[0] <= 1
    rec = read(tmp_path, "recommend")
    assert list(rec.columns) == ["predicted_rating_confidence", "user_id", "item_id"]
    top = read(tmp_path, "recommend_top5")
    first = top.iloc[0]["recommendations"]
    assert len(first) == 3
    assert [e["predicted_rating_confidence"] for e in first] == sorted(
        [e["predicted_rating_confidence"] for e in first], reverse=True)


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
