"""The embeddings table for vector search: on the whole shipped sample, an exact top-5 by dot
product of the written ``search_embedding`` vectors (NumPy, ties by the smaller item id) is the
written ``recommend_top5`` for every user, with already-rated movies kept (BigQuery ML's
default) and left out (``recommend.exclude_rated``)."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE
from recsys.config import load_config

pytestmark = [pytest.mark.spark, pytest.mark.e2e]


def exact_top_k(users, items, k, excluded=None):
    """{user: [item, ...]}: the k largest dot products of each user's vector with every item's,
    ties by the smaller item id; ``excluded`` {user: set of items} never ranked."""
    item_ids = items.feature.astype("int64").to_numpy()
    vectors = np.stack(items.search_embedding.to_numpy())
    out = {}
    for user, vector in zip(users.feature.astype("int64"), users.search_embedding):
        scores = vectors @ np.asarray(vector)
        keep = np.ones(len(item_ids), bool)
        if excluded is not None:
            keep &= ~np.isin(item_ids, list(excluded.get(user, ())))
        order = np.lexsort((item_ids[keep], -scores[keep]))[:k]
        out[user] = item_ids[keep][order].tolist()
    return out


def test_exact_dot_product_search_over_the_embeddings_is_recommend_top5(spark, tmp_path):
    from recsys.runner.pipeline import run_recommend, run_train

    ratings = pd.read_csv(os.path.join(SAMPLE, "ratings.csv")).rename(
        columns={"userId": "user_id", "movieId": "item_id"})[["user_id", "item_id", "rating"]]
    path = tmp_path / "ratings.parquet"
    ratings.to_parquet(path)
    sets = ["source.ratings=unused", f"model.input={path}", f"sink.path={tmp_path}",
            "model.num_factors=34", "model.l2_reg=9.83", "model.max_iterations=5",
            "recommend.write_all_pairs=false"]
    run_train(spark, load_config(None, sets))
    dataset = tmp_path / "bqml_tutorial"
    emb = pd.read_parquet(dataset / "embeddings")
    users, items = emb[emb.processed_input == "user_id"], emb[emb.processed_input == "item_id"]
    assert len(users) == 671 and len(items) == 9066
    assert {len(v) for v in emb.search_embedding} == {34 + 2}
    rated = ratings.groupby("user_id").item_id.apply(set).to_dict()
    for exclude, excluded in (("false", None), ("true", rated)):
        run_recommend(spark, load_config(None, sets + [f"recommend.exclude_rated={exclude}"]))
        top = pd.read_parquet(dataset / "recommend_top5")
        got = {r.user_id: [e["item_id"] for e in r.recommendations] for r in top.itertuples()}
        want = exact_top_k(users, items, 5, excluded)
        assert len(got) == 671
        assert got == want, exclude
