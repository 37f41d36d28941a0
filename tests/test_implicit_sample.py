"""Implicit feedback on the whole shipped sample (100,004 ratings, 671 users x 9,066 items), the
quick start's config with FEEDBACK_TYPE implicit and every table written (6.1 M all pairs): the
run that once ran out of driver memory after the fit, because its training-time ML.EVALUATE
built a table of every user x item pair. Here it runs in-process in the suite's 2 GB session.

Each table is checked against NumPy from the model's own ``weights`` table: the dense WALS
objective and its normal equations (no Gram trick), the four implicit metrics by a full sort of
every user's 9,066 scores (the recsys code ranks from a BLAS product and counts positions), and the
all-pairs and top-5 tables by a matrix product.
"""

import math
import os

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from recsys.config import load_config
from recsys.runner.pipeline import run_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


@pytest.fixture(scope="module")
def implicit_run(spark, tmp_path_factory):
    sink = tmp_path_factory.mktemp("implicit-sample")
    cwd = os.getcwd()
    os.chdir(REPO)  # conf/local.yaml names the sample by a relative path
    try:
        cfg = load_config("conf/local.yaml", ["model.feedback_type=implicit",
                                              "model.name=mf_implicit", f"sink.path={sink}"])
        report = run_pipeline(spark, cfg)
    finally:
        os.chdir(cwd)
    wh = sink / "bqml_tutorial"
    tables = {name: pd.read_parquet(wh / name) for name in
              ("ratings", "evaluate", "training_info", "weights", "recommend_top5")}
    return cfg, report, tables, wh


def factors(weights, side):
    rows = weights[weights.processed_input == side]
    ids = rows.feature.astype(int).to_numpy()
    matrix = np.array([[w["weight"] for w in f] for f in rows.factor_weights])
    order = np.argsort(ids)
    return ids[order], matrix[order]


@pytest.fixture(scope="module")
def dense(implicit_run):
    """The model as NumPy: ids, X, Y, the preference and confidence matrices, all scores."""
    cfg, _, t, _ = implicit_run
    users, x = factors(t["weights"], "user_id")
    items, y = factors(t["weights"], "item_id")
    ratings = t["ratings"]
    u = np.searchsorted(users, ratings.user_id.to_numpy())
    i = np.searchsorted(items, ratings.item_id.to_numpy())
    rating = np.zeros((len(users), len(items)))
    rating[u, i] = ratings.rating.to_numpy()
    pref = (rating > 0).astype(float)
    conf = 1.0 + cfg.model.wals_alpha * rating
    return users, items, x, y, rating, pref, conf, x @ y.T


def test_the_model_is_bigquery_mls_implicit_model(implicit_run, dense):
    """No intercepts; the last half-step's user factors solve the dense weighted normal
    equations (Y^T C_u Y + L2_REG I) x_u = Y^T C_u p_u; the loss is the data term over all
    pairs divided by their number."""
    cfg, _, t, _ = implicit_run
    users, items, x, y, _, pref, conf, scores = dense
    assert len(users) == 671 and len(items) == 9066
    assert (t["weights"].intercept.fillna(0.0) == 0.0).all()
    rank, l2 = x.shape[1], cfg.model.l2_reg
    assert rank == 34
    worst = 0.0
    for row in range(len(users)):
        c = conf[row]
        lhs = (y * c[:, None]).T @ y + l2 * np.eye(rank)
        worst = max(worst, np.max(np.abs(lhs @ x[row] - y.T @ (c * pref[row]))))
    assert worst < 1e-8
    loss = np.sum(conf * (pref - scores) ** 2) / scores.size
    assert t["training_info"]["loss"].iloc[-1] == pytest.approx(loss, rel=1e-9)


def oracle_metrics(scores, items, rating):
    """The four implicit metrics of ML.EVALUATE (recsys.evaluation.implicit_metrics' module
    docstring) from every user's fully sorted list: score DESC, item id ASC."""
    aps, ndcgs, errors, weighted, total = [], [], 0.0, 0.0, 0.0
    for row in range(scores.shape[0]):
        order = np.lexsort((items, -scores[row]))
        gains = rating[row][order]
        relevant = gains > 0
        errors += np.sum((relevant.astype(float) - scores[row][order]) ** 2)
        if not relevant.any():
            continue
        positions = np.flatnonzero(relevant) + 1
        hits = np.arange(1, len(positions) + 1)
        aps.append(np.sum(hits / positions) / len(positions))
        dcg = np.sum(gains[relevant] / np.log2(positions + 1))
        ideal = np.sort(gains[relevant])[::-1]
        ndcgs.append(dcg / np.sum(ideal / np.log2(np.arange(2, len(ideal) + 2))))
        weighted += np.sum(gains[relevant] * (positions - 1) / (len(items) - 1))
        total += np.sum(gains[relevant])
    return {"mean_average_precision": np.mean(aps), "mean_squared_error": errors / scores.size,
            "normalized_discounted_cumulative_gain": np.mean(ndcgs),
            "average_rank": weighted / total}


def test_evaluate_is_the_numpy_oracle(implicit_run, dense):
    _, report, t, _ = implicit_run
    _, items, _, _, rating, _, _, scores = dense
    want = oracle_metrics(scores, items, rating)
    got = t["evaluate"].iloc[0].to_dict()
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    assert not math.isnan(got["average_rank"]) and got["average_rank"] < 0.5  # better than random
    assert report.metrics == got  # the figures the job printed


def test_recommend_tables_are_the_model_scores(implicit_run, dense):
    _, _, t, wh = implicit_run
    users, items, _, _, _, _, _, scores = dense
    pairs = pd.read_parquet(wh / "recommend")
    assert list(pairs.columns) == ["predicted_rating_confidence", "user_id", "item_id"]
    assert len(pairs) == len(users) * len(items) == 6_083_286
    u = np.searchsorted(users, pairs.user_id.to_numpy())
    i = np.searchsorted(items, pairs.item_id.to_numpy())
    assert (users[u] == pairs.user_id.to_numpy()).all() and (items[i] == pairs.item_id).all()
    assert len(np.unique(u * len(items) + i)) == len(pairs)  # every pair once
    np.testing.assert_allclose(pairs.predicted_rating_confidence, scores[u, i], rtol=0, atol=1e-9)
    top = t["recommend_top5"].set_index("user_id")
    assert len(top) == len(users)
    for row, user in enumerate(users):
        want = items[np.lexsort((items, -scores[row]))[:5]]
        assert [e["item_id"] for e in top.loc[user, "recommendations"]] == want.tolist()
