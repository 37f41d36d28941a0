"""Fold-in (recommend.fold_in): users unseen at training, solved against the model's fixed
items. Each folded-in user equals NumPy's solve of that user's normal equations under the
model's own objective (explicit: ridge with the intercept as one more unknown; implicit: WALS
over every item, written densely here without the Gram trick), the recommend job ranks them
like training users, bad input fails with one line, and on the whole shipped sample a
folded-in user's top-10 beats the intercept-only answer BigQuery ML gives (held-out NDCG@10,
computed here in NumPy)."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE
from oracles import random_ratings
from recsys.config import ModelConfig, load_config
from recsys.errors import InputError
from recsys.model import fit
from recsys.model.fold_in import fold_in

pytestmark = pytest.mark.spark

RANK = 3


@pytest.fixture(scope="module")
def frame():
    return random_ratings(np.random.default_rng(28), 900, 50, 70)


@pytest.fixture(scope="module")
def new_rows(frame):
    """Ratings of 6 users the model has not seen: users 1000..1004 rate 2 to 9 training items
    each, user 1000 also an item the model lacks (9999), user 1005 only that item."""
    rng = np.random.default_rng(5)
    items = np.unique(frame.item_id)
    rows = []
    for user in range(1000, 1005):
        for item in rng.choice(items, size=int(rng.integers(2, 10)), replace=False):
            rows.append((user, int(item), float(rng.integers(1, 6))))
    rows += [(1000, 9999, 4.0), (1005, 9999, 5.0)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


def _items(model):
    """{item: (factors, intercept)} as the model holds them: the fixed side of the oracle."""
    return {r.item_id: (np.array(r.factors), r.intercept) for r in model.items.collect()}


def explicit_oracle(items, rows, *, mu, l2_reg, intercept_l2_reg):
    """{user: (x, b)}: argmin sum (r - mu - b_i - b - x.y_i)^2 + l2 |x|^2 + il2 b^2 over the
    user's rows on known items, from the normal equations (zero for a user with none)."""
    out = {}
    for user, own in rows.groupby("user_id"):
        own = own[own.item_id.isin(list(items))]
        if own.empty:
            out[user] = (np.zeros(RANK), 0.0)
            continue
        design = np.array([np.append(items[i][0], 1.0) for i in own.item_id])
        target = own.rating.to_numpy() - mu - np.array([items[i][1] for i in own.item_id])
        ridge = np.diag([l2_reg] * RANK + [intercept_l2_reg])
        z = np.linalg.solve(design.T @ design + ridge, design.T @ target)
        out[user] = (z[:RANK], z[RANK])
    return out


def implicit_oracle(items, rows, *, l2_reg, alpha):
    """{user: x}: argmin over x of sum over EVERY model item c (p - x.y)^2 + l2 |x|^2, with
    c = 1 + alpha r, p = 1 on the rated items and c = 1, p = 0 elsewhere (dense)."""
    ids = sorted(items)
    y = np.array([items[i][0] for i in ids])
    out = {}
    for user, own in rows.groupby("user_id"):
        c, p = np.ones(len(ids)), np.zeros(len(ids))
        for item, rating in zip(own.item_id, own.rating):
            if item in items:
                c[ids.index(item)], p[ids.index(item)] = 1.0 + alpha * rating, 1.0
        out[user] = np.linalg.solve((y * c[:, None]).T @ y + l2_reg * np.eye(RANK),
                                    y.T @ (c * p))
    return out


def test_explicit_fold_in_is_the_numpy_solve_of_its_normal_equations(spark, frame, new_rows):
    """Distinct L2_REG and intercept ridge, so that a swap of the two shows."""
    model = fit(spark.createDataFrame(frame), ModelConfig(
        num_factors=RANK, l2_reg=2.0, intercept_l2_reg=0.5, max_iterations=3,
        early_stop=False))
    folded = fold_in(model, spark.createDataFrame(new_rows))
    want = explicit_oracle(_items(model), new_rows, mu=frame.rating.mean(), l2_reg=2.0,
                           intercept_l2_reg=0.5)
    got = {r.user_id: (np.array(r.factors), r.intercept) for r in folded.users.collect()}
    assert sorted(got) == list(range(1000, 1006))
    for user, (x, b) in want.items():
        assert got[user][0] == pytest.approx(x, rel=1e-9, abs=1e-12)
        assert got[user][1] == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert (folded.n_users, folded.n_unknown_items) == (6, 2)
    assert folded.n_rows == len(new_rows) - 2
    # The extended model scores them; the training users and the items are untouched.
    assert folded.model.users.count() == frame.user_id.nunique() + 6
    assert folded.model.items is model.items


def test_implicit_fold_in_is_the_dense_wals_solve(spark, frame, new_rows):
    model = fit(spark.createDataFrame(frame), ModelConfig(
        num_factors=RANK, l2_reg=2.0, feedback_type="implicit", wals_alpha=5.0,
        max_iterations=3, early_stop=False))
    folded = fold_in(model, spark.createDataFrame(new_rows))
    want = implicit_oracle(_items(model), new_rows, l2_reg=2.0, alpha=5.0)
    got = {r.user_id: (np.array(r.factors), r.intercept) for r in folded.users.collect()}
    for user, x in want.items():
        assert got[user][0] == pytest.approx(x, rel=1e-8, abs=1e-12)
        assert got[user][1] == 0.0
    # User 1005 rated only an unknown item: no preference anywhere, so x = 0 exactly.
    assert np.all(got[1005][0] == 0.0)


def test_bad_fold_in_input_fails_with_one_line(spark, frame, new_rows):
    model = fit(spark.createDataFrame(frame), ModelConfig(num_factors=RANK, max_iterations=2))
    first = int(frame.user_id.min())
    known = pd.concat([new_rows, pd.DataFrame([(first, 1, 3.0)], columns=new_rows.columns)])
    with pytest.raises(InputError, match=rf"^recommend.fold_in: 1 of its users are already in "
                                         rf"the model \(the first: {first}\)"):
        fold_in(model, spark.createDataFrame(known))
    nulls = spark.createDataFrame([(2000, 1, None), (2001, None, 4.0)],
                                  "user_id long, item_id long, rating double")
    with pytest.raises(InputError, match="^recommend.fold_in: 2 rows have a NULL"):
        fold_in(model, nulls)
    with pytest.raises(InputError, match="has no column 'rating'"):
        fold_in(model, spark.createDataFrame(new_rows).drop("rating"))
    spark_als = fit(spark.createDataFrame(frame), ModelConfig(num_factors=RANK, solver="spark_als",
                                                              max_iterations=2))
    with pytest.raises(InputError, match="needs a model trained with model.solver bigquery_ml"):
        fold_in(spark_als, spark.createDataFrame(new_rows))


def test_recommend_job_ranks_folded_in_users_like_training_users(spark, tmp_path, frame,
                                                                 new_rows):
    """recommend.fold_in through the train and recommend jobs, already-rated movies left out:
    every folded-in user's top 4 is NumPy's ranking of the oracle's prediction over the items
    the user did not rate (ties by item id); the all-pairs table holds the new users too."""
    from recsys.runner.pipeline import run_recommend, run_train

    train_path, fold_path = tmp_path / "train.parquet", tmp_path / "fold.parquet"
    frame.to_parquet(train_path)
    new_rows.to_parquet(fold_path)
    cfg = load_config(None, ["source.ratings=unused", f"model.input={train_path}",
                             f"sink.path={tmp_path}", f"model.num_factors={RANK}",
                             "model.l2_reg=2.0", "model.max_iterations=3",
                             "model.early_stop=false", f"recommend.fold_in={fold_path}",
                             "recommend.exclude_rated=true", "recommend.top_k=4"])
    run_train(spark, cfg)
    report = run_recommend(spark, cfg)
    assert ("fold-in    6 new users from" in report.render()
            and "(2 rows on items the model does not know left out)" in report.render())
    from recsys.model import load
    from recsys.sinks import LocalWarehouse

    model = load(spark, LocalWarehouse(str(tmp_path), "bqml_tutorial")
                 .model_location(spark, "mf_explicit"))
    items = _items(model)
    users = explicit_oracle(items, new_rows, mu=frame.rating.mean(), l2_reg=2.0,
                            intercept_l2_reg=2.0)
    top = pd.read_parquet(tmp_path / "bqml_tutorial" / "recommend_top5")
    lists = {r.user_id: [e["item_id"] for e in r.recommendations] for r in top.itertuples()}
    ids = np.array(sorted(items))
    for user, (x, b) in users.items():
        scores = np.array([model.global_intercept + b + items[i][1] + x @ items[i][0]
                           for i in ids])
        rated = set(new_rows.item_id[new_rows.user_id == user])
        keep = np.array([i not in rated for i in ids])
        order = np.lexsort((ids[keep], -scores[keep]))[:4]
        assert lists[user] == ids[keep][order].tolist()
    pairs = pd.read_parquet(tmp_path / "bqml_tutorial" / "recommend")
    assert pairs.user_id.nunique() == frame.user_id.nunique() + 6


# --- held out, on the whole shipped sample ----------------------------------------------------

def ndcg_at(ranked, relevant, k):
    """Binary-gain NDCG@k of one list (NumPy)."""
    gains = np.array([1.0 if item in relevant else 0.0 for item in ranked[:k]])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[:min(k, len(relevant))].sum()
    return float((gains * discounts[:len(gains)]).sum() / ideal)


@pytest.mark.e2e
def test_fold_in_beats_the_intercept_only_answer_on_held_out_ratings(spark):
    """The whole sample; every fifth user (user_id % 5 == 0, 134 users) is left out of
    training. Each such user's earlier half of ratings (by time) is folded in, the later half
    is held out: relevant = rated >= 4. Both answers rank every training item the user did not
    fold in; the intercept-only one is what BigQuery ML gives an unseen user (global + item
    intercept). The tutorial's options (34 factors, L2_REG 9.83)."""
    from recsys.model.recommend import top_k_for_users

    ratings = pd.read_csv(os.path.join(SAMPLE, "ratings.csv")).rename(
        columns={"userId": "user_id", "movieId": "item_id"})
    held = ratings.user_id % 5 == 0
    order = ratings[held].sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    position = order.groupby("user_id").cumcount()
    size = order.groupby("user_id").user_id.transform("size")
    early, late = order[position < size // 2], order[position >= size // 2]
    train = spark.createDataFrame(ratings[~held][["user_id", "item_id", "rating"]])
    model = fit(train, ModelConfig(num_factors=34, l2_reg=9.83, max_iterations=20))
    folded = fold_in(model, spark.createDataFrame(early[["user_id", "item_id", "rating"]]))
    assert folded.n_users == held_users(ratings) == 134
    users = spark.createDataFrame(early[["user_id"]].drop_duplicates())
    exclude = spark.createDataFrame(early[["user_id", "item_id"]])

    def lists(m):
        top = top_k_for_users(m, k=10, users=users, exclude=exclude).toPandas()
        return {r.user_id: [e["item_id"] for e in r.recommendations] for r in top.itertuples()}

    relevant = late[late.rating >= 4].groupby("user_id").item_id.apply(set)
    scores = {}
    for name, m in (("fold_in", folded.model), ("intercepts", model)):
        ranked = lists(m)
        scores[name] = np.mean([ndcg_at(ranked[u], rel, 10) for u, rel in relevant.items()])
    assert len(relevant) > 120
    assert scores["fold_in"] > scores["intercepts"] + 0.02, scores


def held_users(ratings):
    return int((ratings.user_id.unique() % 5 == 0).sum())
