"""The compare job: BigQuery ML's exports (in its exact formats) against a recsys run, every
number checked against pandas/numpy oracles computed here from the fixture rows."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bq_writers as bw
from conftest import REPO
from recsys.config import load_config
from recsys.errors import ConfigError, InputError

pytestmark = pytest.mark.spark

# The tutorial's published rows (../shared/docs/bqml-reference.md).
TUTORIAL_EVALUATE = {"mean_absolute_error": 0.48494, "mean_squared_error": 0.39434,
                     "mean_squared_log_error": 0.025438, "median_absolute_error": 0.39017,
                     "r2_score": 0.68400, "explained_variance": 0.68400}
TUTORIAL_LOSS = {9: 0.4038, 10: 0.3979, 11: 0.3943}
RECSYS_EVALUATE = {"mean_absolute_error": 0.5012, "mean_squared_error": 0.4101,
                   "mean_squared_log_error": 0.0263, "median_absolute_error": 0.4033,
                   "r2_score": 0.6711, "explained_variance": 0.6712}
K = 5


# --- oracles -----------------------------------------------------------------------------------

def average_ranks(x):
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / np.sqrt((xc ** 2).sum() * (yc ** 2).sum()))


def spearman(x, y):
    return pearson(average_ranks(x), average_ranks(y))


def top_lists(frame, key="item_id", k=K):
    ordered = frame.sort_values(["user_id", "predicted_rating", "item_id"],
                                ascending=[True, False, True])
    return {u: g[key].head(k).tolist() for u, g in ordered.groupby("user_id")}


# --- writers of BigQuery ML's export formats (sources of each fact in tests/bq_writers.py) ----

def write_bq_json(path, rows):
    bw.write_json(str(path), rows)


def write_bq_avro(path, fields, rows):
    bw.write_avro(str(path), [(n, bw.avro_type({"long": "INT64", "double": "FLOAT64",
                                                "string": "STRING"}[t])) for n, t in fields],
                  rows)


def write_table(root, name, frame, schema=None):
    folder = os.path.join(root, "bqml_tutorial", name)
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False),
                   os.path.join(folder, "part-00000.parquet"))


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A recsys run (sink tables, INT64 ids) and BigQuery ML's exports of the same model shape.

    recsys: users 1..8 x items 1..12. BigQuery ML's model: users 1..8 and 99, items 1..12 and 50,
    predictions = recsys + noise rounded to 0.1 (ties). Its ML.RECOMMEND export is partial
    (users 1..6 and 99, user ids as STRING); its top-5 table is the tutorial's query verbatim
    over the whole model (column ``f0_``, titles only). Movie 0 is a remake sharing movie 4's
    title (an ambiguous title).
    """
    tmp = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(7)
    users, items = np.arange(1, 9), np.arange(1, 13)
    movies = pd.DataFrame({"movie_id": np.arange(0, 51, dtype="int64"),
                           "movie_title": [f"Movie {i}, The ({1950 + i})" for i in range(0, 51)],
                           "genre": ["Drama|Comedy"] * 51})
    movies.loc[0, "movie_title"] = movies.loc[4, "movie_title"]
    rec = pd.DataFrame([(u, i) for u in users for i in items], columns=["user_id", "item_id"])
    rec["predicted_rating"] = 3 + rng.normal(0, 1, len(rec))
    rec = rec[["predicted_rating", "user_id", "item_id"]].astype(
        {"user_id": "int64", "item_id": "int64"})
    ratings = pd.DataFrame({"user_id": rng.integers(1, 9, 60).astype("int64"),
                            "item_id": rng.integers(1, 13, 60).astype("int64")}).drop_duplicates()
    ratings["rating"] = rng.integers(1, 6, len(ratings)).astype(float)

    bq_full = rec.copy()
    bq_full["predicted_rating"] = np.round(bq_full.predicted_rating
                                           + rng.normal(0, 0.3, len(bq_full)), 1)
    extra = pd.DataFrame({"predicted_rating": [4.0, 3.5, 2.0, 9.94],
                          "user_id": [99, 99, 1, 2], "item_id": [1, 2, 50, 50]})
    bq_full = pd.concat([bq_full, extra], ignore_index=True)
    bq = bq_full[(bq_full.user_id <= 6) | (bq_full.user_id == 99)].reset_index(drop=True)

    wh = str(tmp / "wh")
    write_table(wh, "recommend", rec)
    write_table(wh, "ratings", ratings)
    write_table(wh, "movies", movies)
    write_table(wh, "evaluate", pd.DataFrame([RECSYS_EVALUATE]))
    recsys_loss = {it: 0.9 - 0.04 * it for it in range(12)}
    write_table(wh, "training_info", pd.DataFrame({
        "training_run": 0, "iteration": list(recsys_loss), "loss": list(recsys_loss.values()),
        "eval_loss": None, "learning_rate": None, "duration_ms": 1000}).astype(
            {"training_run": "int64", "iteration": "int64", "eval_loss": "float64",
             "learning_rate": "float64", "duration_ms": "int64"}))
    titles = movies.set_index("movie_id").movie_title
    top_r = top_lists(rec)
    write_table(wh, "recommend_top5", pd.DataFrame({
        "user_id": list(top_r),
        "recommendations": [[{"item_id": i, "movie_title": titles[i], "genre": "Drama|Comedy",
                              "predicted_rating": float(rec[(rec.user_id == u)
                                                            & (rec.item_id == i)]
                                                        .predicted_rating.iloc[0])}
                             for i in lst] for u, lst in top_r.items()]}))
    ints = {"user": {int(u): 3.0 + 0.1 * u for u in users},
            "item": {int(i): -0.5 + 0.05 * i for i in items}}
    write_table(wh, "weights", pd.DataFrame(
        [("user_id", str(u), [{"factor": 1, "weight": 0.1}, {"factor": 2, "weight": 0.2}], b)
         for u, b in ints["user"].items()]
        + [("item_id", str(i), [{"factor": 1, "weight": 0.3}, {"factor": 2, "weight": 0.4}], b)
           for i, b in ints["item"].items()]
        + [(None, "global__intercept__", None, 3.5)],
        columns=["processed_input", "feature", "factor_weights", "intercept"]))

    # BigQuery ML's exports.
    ex = tmp / "bqml"
    ex.mkdir()
    pd.DataFrame([TUTORIAL_EVALUATE]).to_csv(ex / "evaluate.csv", index=False)
    write_bq_json(ex / "training_info.json", [
        {"training_run": 0, "iteration": it, "loss": loss, "eval_loss": None,
         "learning_rate": None, "duration_ms": 31000 + it} for it, loss in TUTORIAL_LOSS.items()])
    bq_str = bq.assign(user_id=bq.user_id.astype(str))  # a STRING user column
    pq.write_table(pa.Table.from_pandas(bq_str, preserve_index=False), ex / "recommend.parquet")
    half = len(bq) // 2  # a sharded export: recommend-*.avro -> ...000, ...001
    for path, part in zip(bw.shard_names(str(ex / "recommend"), "avro", 2),
                          (bq[:half], bq[half:])):
        write_bq_avro(path, [("predicted_rating", "double"), ("user_id", "long"),
                             ("item_id", "long")], part.to_dict("records"))
    # The tutorial's top-5 statement verbatim, over the whole model:
    #   SELECT user_id, ARRAY_AGG(STRUCT(movie_title, genre, predicted_rating)
    #                             ORDER BY predicted_rating DESC LIMIT 5)
    #   FROM (SELECT * FROM bqml_tutorial.recommend JOIN bqml_tutorial.movies
    #         ON item_id = movie_id) GROUP BY user_id
    # The ARRAY_AGG has no alias, so BigQuery names the column f0_ (tests/bq_writers.py).
    bq_titled = bq_full.merge(movies, left_on="item_id", right_on="movie_id")
    top_b = top_lists(bq_titled)
    top5_rows = [
        {"user_id": int(u), "f0_": [
            {"movie_title": titles[i], "genre": "Drama|Comedy",
             "predicted_rating": float(bq_titled[(bq_titled.user_id == u)
                                                 & (bq_titled.item_id == i)]
                                       .predicted_rating.iloc[0])} for i in lst]}
        for u, lst in top_b.items()]
    write_bq_json(ex / "top5.json", top5_rows)
    # The same table exported to AVRO: f0_ is REPEATED RECORD -> an Avro array of records.
    entry = bw.avro_type("RECORD", "REQUIRED", name="f0_", fields=[
        ("movie_title", bw.avro_type("STRING")), ("genre", bw.avro_type("STRING")),
        ("predicted_rating", bw.avro_type("FLOAT64"))])
    bw.write_avro(str(ex / "top5-000000000000.avro"),
                  [("user_id", bw.avro_type("INT64")), ("f0_", {"type": "array", "items": entry})],
                  top5_rows)
    b_ints = {"user": {u: b + 0.02 * (u % 3) for u, b in ints["user"].items() if u <= 6},
              "item": {i: b - 0.01 * i for i, b in ints["item"].items()}}
    b_ints["item"][50] = 1.0
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(
        [("user_id", str(u), [{"factor": f, "weight": 0.5} for f in range(1, 4)], b)
         for u, b in b_ints["user"].items()]
        + [("item_id", str(i), [{"factor": f, "weight": 0.5} for f in range(1, 4)], b)
           for i, b in b_ints["item"].items()]
        + [(None, "global__intercept__", None, 3.58)],
        columns=["processed_input", "feature", "factor_weights", "intercept"]),
        preserve_index=False), ex / "weights.parquet")
    return dict(tmp=tmp, wh=wh, ex=ex, rec=rec, bq=bq, bq_full=bq_full, ratings=ratings,
                movies=movies, recsys_loss=recsys_loss, ints=ints, b_ints=b_ints, top_r=top_r,
                top_b=top_b, top5_rows=top5_rows)


def compare_cfg(world, *sets):
    ex = world["ex"]
    return load_config(None, [
        f"sink.path={world['wh']}",
        f"compare.output={world['tmp'] / 'report'}",
        f"compare.bqml.evaluate.path={ex / 'evaluate.csv'}",
        f"compare.bqml.training_info.path={ex / 'training_info.json'}",
        f"compare.bqml.recommend.path={ex / 'recommend.parquet'}",
        f"compare.bqml.top5.path={ex / 'top5.json'}",
        f"compare.bqml.weights.path={ex / 'weights.parquet'}", *sets], job="compare")


def read(world, name):
    return pd.read_parquet(os.path.join(world["wh"], "bqml_tutorial", name))


@pytest.fixture(scope="module")
def compared(spark, world):
    from recsys.compare import run_compare

    report = run_compare(spark, compare_cfg(world))
    return report, {name: read(world, name) for name in (
        "compare_metrics", "compare_training", "compare_predictions", "compare_topk",
        "compare_topk_summary", "compare_intercepts", "compare_counts")}


# --- tests -------------------------------------------------------------------------------------

def test_metrics_side_by_side(compared):
    _, t = compared
    m = t["compare_metrics"].set_index("metric")
    assert list(m.index) == list(TUTORIAL_EVALUATE)
    for name, value in TUTORIAL_EVALUATE.items():
        assert m.loc[name, "bqml"] == pytest.approx(value, abs=1e-12)
        assert m.loc[name, "recsys"] == pytest.approx(RECSYS_EVALUATE[name], abs=1e-12)
        assert m.loc[name, "difference"] == pytest.approx(RECSYS_EVALUATE[name] - value, abs=1e-12)


def test_training_loss_curves(compared, world):
    _, t = compared
    tr = t["compare_training"].sort_values("iteration")
    assert tr.iteration.tolist() == list(range(12))
    for row in tr.itertuples():
        assert row.recsys_loss == pytest.approx(world["recsys_loss"][row.iteration])
        if row.iteration in TUTORIAL_LOSS:
            assert row.bqml_loss == pytest.approx(TUTORIAL_LOSS[row.iteration])
        else:
            assert pd.isna(row.bqml_loss)


def test_predictions_on_common_pairs(compared, world):
    _, t = compared
    bq, rec = world["bq"], world["rec"]
    both = bq.merge(rec, on=["user_id", "item_id"], suffixes=("_b", "_r"))
    diff = both.predicted_rating_r - both.predicted_rating_b
    p = t["compare_predictions"].iloc[0]
    assert (p.pairs_bqml, p.pairs_recsys, p.pairs_compared) == (len(bq), len(rec), len(both))
    assert p.pairs_compared == 6 * 12  # users 1..6 x items 1..12
    assert (p.pairs_bqml_only, p.pairs_recsys_only) == (4, 2 * 12)
    assert p.rmse == pytest.approx(np.sqrt(np.mean(diff ** 2)), rel=1e-12)
    assert p.mean_abs_difference == pytest.approx(np.mean(np.abs(diff)), rel=1e-12)
    assert p.mean_difference == pytest.approx(np.mean(diff), rel=1e-12)
    assert p.pearson == pytest.approx(pearson(both.predicted_rating_b, both.predicted_rating_r),
                                      rel=1e-9)
    assert len(np.unique(both.predicted_rating_b)) < len(both)  # ties on the BigQuery ML side
    assert p.spearman == pytest.approx(spearman(both.predicted_rating_b,
                                                both.predicted_rating_r), rel=1e-9)


def test_counts_of_compared_and_uncompared(compared):
    _, t = compared
    c = t["compare_counts"].set_index("what")
    assert c.loc["recommend users"].tolist() == [7, 8, 6, 1, 2]  # 99 only bqml; 7, 8 only recsys
    assert c.loc["recommend items"].tolist() == [13, 12, 12, 1, 0]  # item 50 only bqml
    assert c.loc["top-k users"].tolist() == [9, 8, 8, 1, 0]  # 99 has no recsys list
    assert c.loc["weights users"].tolist() == [6, 8, 6, 0, 2]
    assert c.loc["weights items"].tolist() == [13, 12, 12, 1, 0]
    assert c.loc["training iterations"][["bqml", "recsys", "compared"]].tolist() == [3, 12, 3]


def resolved_bqml_lists(world):
    """Oracle: BigQuery ML's title lists -> ids through the movies table (a title of several
    movies -> the one in recsys's list for that user, else the smallest id)."""
    movies, top_r = world["movies"], world["top_r"]
    ids_of = movies.groupby("movie_title").movie_id.apply(sorted).to_dict()
    titles = movies.set_index("movie_id").movie_title
    out = {}
    for u, lst in world["top_b"].items():
        picks = []
        for i in lst:
            cands = ids_of[titles[i]]
            inside = [c for c in cands if c in top_r.get(u, [])]
            picks.append(inside[0] if inside else cands[0])
        out[u] = picks
    return out


def test_topk_covers_every_user_of_the_top5_table(compared, world):
    """The partial ML.RECOMMEND export (users 1..6, 99) does not limit the top-k comparison:
    every user of the tutorial's top-5 table (users 1..8, 99) is compared."""
    _, t = compared
    want_b, want_r = resolved_bqml_lists(world), world["top_r"]
    assert world["movies"].movie_title[0] == world["movies"].movie_title[4]  # a remake
    # The ambiguous title is in play: listed by BigQuery ML where recsys's list has movie 4.
    assert any(4 in world["top_b"][u] and 4 in world["top_r"].get(u, []) for u in want_b)
    top = t["compare_topk"].set_index("user")
    assert sorted(top.index) == sorted(str(u) for u in want_b) == sorted(
        [str(u) for u in range(1, 9)] + ["99"])
    overlaps, jaccards = [], []
    for u, a in want_b.items():
        b = want_r.get(u, [])
        row = top.loc[str(u)]
        assert list(row.bqml_items) == [str(i) for i in a]
        if u in want_r:
            assert list(row.recsys_items) == [str(i) for i in b]
        else:
            assert row.recsys_items is None
        inter = len(set(a) & set(b))
        assert row.overlap == inter and row.overlap_at_k == pytest.approx(inter / K)
        assert row.jaccard == pytest.approx(inter / len(set(a) | set(b)))
        assert row.same_set == (set(a) == set(b)) and row.same_order == (a == b)
        overlaps.append(inter / K)
        jaccards.append(inter / len(set(a) | set(b)))
    s = t["compare_topk_summary"].iloc[0]
    assert s.matched_by == "item" and s.users_compared == 9
    assert (s.users_bqml_only, s.users_recsys_only) == (1, 0)
    assert s.mean_overlap_at_k == pytest.approx(np.mean(overlaps))
    assert s.mean_jaccard == pytest.approx(np.mean(jaccards))
    titles = world["movies"].set_index("movie_id").movie_title
    listed = {titles[i] for lst in world["top_b"].values() for i in lst}
    ambiguous = world["movies"].movie_title.value_counts()
    assert s.ambiguous_titles == sum(ambiguous[x] > 1 for x in listed) == 1
    assert s.unknown_titles == 0
    counts = world["ratings"].groupby("item_id").size()
    assert s.catalogue_size == len(counts)
    for side, lists in (("bqml", want_b), ("recsys", want_r)):
        recs = [i for u in want_b for i in lists.get(u, [])]
        pops = [counts.get(i, 0) for i in recs]
        assert s[f"{side}_distinct_items"] == len(set(recs))
        assert s[f"{side}_coverage"] == pytest.approx(len(set(recs)) / len(counts))
        assert s[f"{side}_mean_rating_count"] == pytest.approx(np.mean(pops))
        assert s[f"{side}_median_rating_count"] == pytest.approx(np.median(pops))


def test_intercepts_side_by_side(compared, world):
    report, t = compared
    ic = t["compare_intercepts"]
    glob = ic[ic.processed_input.isna()].iloc[0]
    assert (glob.bqml, glob.recsys) == (pytest.approx(3.58), pytest.approx(3.5))
    items = ic[ic.processed_input == "item_id"].set_index("feature")
    assert len(items) == 12
    for i, b in world["b_ints"]["item"].items():
        if i in world["ints"]["item"]:
            assert items.loc[str(i), "difference"] == pytest.approx(world["ints"]["item"][i] - b)
    assert "rotation" in open(world["tmp"] / "report" / "report.md").read()
    assert "global intercept bqml 3.58, recsys 3.5" in report.render()


def test_report_markdown_and_svgs(compared, world):
    _, t = compared
    folder = world["tmp"] / "report"
    md = (folder / "report.md").read_text()
    for svg in ("loss.svg", "predictions.svg", "overlap.svg", "intercepts_user.svg",
                "intercepts_item.svg"):
        assert f"]({svg})" in md
        text = (folder / svg).read_text()
        assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert "| mean_squared_error | 0.39434 | 0.4101 |" in md
    p = t["compare_predictions"].iloc[0]
    assert f"{p.spearman:.6g}" in md and f"{p.rmse:.6g}" in md
    assert "0.4038" in (folder / "loss.svg").read_text()
    overlap_svg = (folder / "overlap.svg").read_text()
    dist = t["compare_topk"].overlap.value_counts()
    assert all(f">{n}</text>" in overlap_svg for n in dist.values)
    assert "`user_id` is STRING" in md and "`user_id` is INT64" in md


def test_svgs_are_deterministic(world):
    from recsys.compare import svg

    one = svg.line_chart([("a", [9, 10, 11], [0.4038, 0.3979, 0.3943])], title="t",
                         xlabel="x", ylabel="y")
    assert one == svg.line_chart([("a", [9, 10, 11], [0.4038, 0.3979, 0.3943])], title="t",
                                 xlabel="x", ylabel="y")
    assert one.count("<circle") == 3


def test_csv_exports_and_int_vs_string_ids(spark, world, tmp_path):
    """CSV (all text, quoted titles with commas), ids INT64 on one side, STRING on the other."""
    from recsys import compare as cmp

    bq = world["bq"]
    bq.to_csv(tmp_path / "recommend.csv", index=False)
    b = cmp.predictions_frame(cmp.read_files(spark, str(tmp_path / "recommend.csv"), "csv", "k"),
                              user_col="user_id", item_col="item_id",
                              pred_col="predicted_rating", key="k")
    r = cmp.predictions_frame(spark.read.parquet(os.path.join(world["wh"], "bqml_tutorial",
                                                              "recommend")),
                              user_col="user_id", item_col="item_id",
                              pred_col="predicted_rating", key="k")
    assert dict(b.dtypes)["user"] == "string"
    row = cmp.compare_predictions(spark, b, r).head()
    assert row.pairs_compared == 72 and row.pairs_bqml_only == 4
    # A flat top-5 in CSV (UNNEST-ed, titles quoted), matched by title.
    flat = bq.merge(world["movies"], left_on="item_id", right_on="movie_id")
    flat[["user_id", "movie_title", "genre", "predicted_rating"]].to_csv(
        tmp_path / "top5.csv", index=False)
    top_b = cmp.topk_frame(cmp.read_files(spark, str(tmp_path / "top5.csv"), "csv", "k"),
                           user_col="user_id", item_col="item_id",
                           pred_col="predicted_rating", key="k")
    top_r = cmp.topk_frame(spark.read.parquet(os.path.join(world["wh"], "bqml_tutorial",
                                                           "recommend_top5")),
                           user_col="user_id", item_col="item_id",
                           pred_col="predicted_rating", key="k")
    per_user = cmp.compare_topk(top_b, top_r, K, by="title").toPandas().set_index("user")
    titles = world["movies"].set_index("movie_id").movie_title
    for u in range(1, 7):
        a = [titles[i] for i in world["top_b"][u]]
        r_list = [titles[i] for i in world["top_r"][u]]
        # Ties in the flat table have no item id to break them: compare as sets.
        assert sorted(per_user.loc[str(u), "bqml_items"]) == sorted(a)
        assert per_user.loc[str(u), "overlap"] == len(set(a) & set(r_list))


def test_titles_resolve_to_text_ids_under_ansi(spark):
    """A titles-only top-k list mapped through a movies table whose ids are text (product codes
    such as 'B0001'): a title shared by several movies counts as the smallest id, integers by
    value before text. A plain cast to BIGINT raised CAST_INVALID_INPUT under ANSI mode."""
    from recsys.compare.frames import resolve_titles, title_index

    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    movies = spark.createDataFrame([("B0002", "Dup"), ("B0001", "Dup"), ("10", "Dup"),
                                    ("9", "Dup"), ("B0003", "One"), ("B0004", "Two")],
                                   "movie_id string, movie_title string")
    schema = "user string, rank long, item string, title string, prediction double"
    top = spark.createDataFrame([("u1", 1, None, "Dup", 4.0), ("u1", 2, None, "One", 3.0),
                                 ("u2", 1, None, "Dup", 2.0), ("u2", 2, None, "Gone", 1.0)],
                                schema)
    other = spark.createDataFrame([("u2", 1, "B0001", "Dup", 5.0)], schema)
    got = resolve_titles(top, title_index(movies), other).orderBy("user", "rank").collect()
    assert [(r.user, r.item, r.title_ids) for r in got] == [
        ("u1", "9", 4), ("u1", "B0003", 1), ("u2", "B0001", 4), ("u2", "title:Gone", 0)]


def test_tutorial_top5_as_json_and_parquet_reads_the_same(spark, world, tmp_path):
    """The tutorial's top-5 table (f0_ ARRAY<STRUCT<movie_title, genre, predicted_rating>>) as
    bq extract writes it to NEWLINE_DELIMITED_JSON (user_id INT64 as a string) and PARQUET:
    both give the fixture's lists, in order, with their predictions."""
    from recsys import compare as cmp

    rows = world["top5_rows"]
    struct = pa.struct([("movie_title", pa.string()), ("genre", pa.string()),
                        ("predicted_rating", pa.float64())])
    pq.write_table(pa.table({"user_id": pa.array([r["user_id"] for r in rows], pa.int64()),
                             "f0_": pa.array([r["f0_"] for r in rows], pa.list_(struct))}),
                   tmp_path / "top5-000000000000.parquet")
    first = (world["ex"] / "top5.json").read_text().splitlines()[0]
    assert first.startswith('{"user_id":"') and '"f0_":[{"movie_title":' in first
    want = {(str(r["user_id"]), n + 1): (x["movie_title"], x["predicted_rating"])
            for r in rows for n, x in enumerate(r["f0_"])}
    for path, fmt in ((world["ex"] / "top5.json", "json"),
                      (tmp_path / "top5-*.parquet", "parquet")):
        top = cmp.topk_frame(cmp.read_files(spark, str(path), fmt, "k"), user_col="user_id",
                             item_col="item_id", pred_col="predicted_rating", key="k", fmt=fmt)
        got = {(r.user, r.rank): (r.title, r.prediction) for r in top.collect()}
        assert got.keys() == want.keys()
        for key, (title, pred) in want.items():
            assert got[key][0] == title and got[key][1] == pytest.approx(pred, abs=1e-12)


def test_recommend_with_an_input_table_sharded_csv(spark, world, tmp_path):
    """ML.RECOMMEND(MODEL m, (SELECT user_id, item_id, rating FROM ...)): one prediction per
    input pair, the input's other columns passed through (bqml-reference.md), exported with
    a wildcard URI to CSV shards recommend-000000000000.csv, -000000000001.csv."""
    from recsys import compare as cmp

    pairs = world["bq"].sample(frac=0.5, random_state=3).reset_index(drop=True)
    pairs = pairs.assign(rating=np.round(pairs.predicted_rating.clip(0.5, 5)), note="a, \"b\"")
    header = ["predicted_rating", "user_id", "item_id", "rating", "note"]
    half = len(pairs) // 2
    for path, part in zip(bw.shard_names(str(tmp_path / "recommend"), "csv", 2),
                          (pairs[:half], pairs[half:])):
        bw.write_csv(path, header, part[header].itertuples(index=False))
    frame = cmp.predictions_frame(
        cmp.read_files(spark, str(tmp_path / "recommend-*.csv"), "csv", "k"),
        user_col="user_id", item_col="item_id", pred_col="predicted_rating", key="k")
    rec = world["rec"]
    r = cmp.predictions_frame(spark.createDataFrame(rec), user_col="user_id",
                              item_col="item_id", pred_col="predicted_rating", key="k")
    row = cmp.compare_predictions(spark, frame, r).head()
    both = pairs.merge(rec, on=["user_id", "item_id"], suffixes=("_b", "_r"))
    assert row.pairs_bqml == len(pairs) and row.pairs_compared == len(both)
    assert row.rmse == pytest.approx(np.sqrt(np.mean(
        (both.predicted_rating_r - both.predicted_rating_b) ** 2)), rel=1e-12)


def test_nested_top5_as_csv_is_refused_with_a_hint(spark, tmp_path):
    from recsys import compare as cmp

    (tmp_path / "t.csv").write_text('user_id,f0_\n1,"[{...}]"\n')
    df = cmp.read_files(spark, str(tmp_path / "t.csv"), "csv", "compare.bqml.top5")
    with pytest.raises(InputError, match="'f0_' is STRING, not ARRAY<STRUCT>: bq extract "
                                         "cannot write nested columns to CSV"):
        cmp.topk_frame(df, user_col="user_id", item_col="item_id", pred_col="predicted_rating",
                       key="compare.bqml.top5", fmt="csv")


def test_json_top5_without_a_list_names_the_list_not_csv(spark, tmp_path):
    """A JSON top-5 table without any list column: the error says what is missing and does
    not talk about CSV (the file was JSON)."""
    from recsys import compare as cmp

    write_bq_json(tmp_path / "t.json", [{"user_id": 1, "note": "x"}])
    df = cmp.read_files(spark, str(tmp_path / "t.json"), "json", "compare.bqml.top5")
    with pytest.raises(InputError) as err:
        cmp.topk_frame(df, user_col="user_id", item_col="item_id", pred_col="predicted_rating",
                       key="compare.bqml.top5", fmt="json")
    text = str(err.value)
    assert "f0_" in text and "columns: note, user_id" in text and "CSV" not in text
    assert "\n" not in text


def test_missing_export_is_one_line(spark, world, tmp_path):
    from recsys.compare import run_compare

    cfg = compare_cfg(world, f"compare.bqml.recommend.path={tmp_path / 'nope-*.avro'}",
                      f"compare.output={tmp_path / 'r'}")
    with pytest.raises(InputError, match=r"compare.bqml.recommend: no file matches .*nope-\*"):
        run_compare(spark, cfg)


@pytest.mark.parametrize("sets, message", [
    (["compare.bqml.evaluate.path=a.csv", "compare.bqml.evaluate.table=d.t"],
     "compare.bqml.evaluate needs exactly one of 'path' (files) or 'table'"),
    (["compare.bqml.recommend.path=exports/recommend-*"],
     "compare.bqml.recommend.format is needed"),
    (["compare.bqml.recommend.path=x.avro", "compare.bqml.recommend.format=orc"],
     "compare.bqml.recommend.format must be one of csv, json, parquet, avro"),
    (["compare.top_k=0"], "compare.top_k must be >= 1"),
    (["compare.bqml.top_5.path=x.json"], "did you mean 'compare.bqml.top5'"),
])
def test_config_errors(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*").replace(".", r"\.")):
        load_config(None, ["source.ratings=x", *sets])


def test_compare_needs_no_source_but_something_to_compare():
    cfg = load_config(None, ["compare.bqml.evaluate.path=e.csv"], job="compare")
    assert cfg.source.ratings is None and cfg.compare.bqml.evaluate.path == "e.csv"
    with pytest.raises(ConfigError, match="source.ratings is required"):
        load_config(None, ["compare.bqml.evaluate.path=e.csv"], job="pipeline")
    with pytest.raises(ConfigError, match=r"compare: nothing to compare: set at least one "
                                          r"compare\.bqml\.\* table"):
        load_config(None, [], job="compare")


@pytest.mark.parametrize("sets, message", [
    (["compare.output=gs://bucket/report"], "compare.output must be a local folder"),
    (["compare.tolerances.prediction_rmse=-1"], "compare.tolerances.prediction_rmse must be >= 0"),
    (["compare.tolerances.mean_overlap_at_k=1.5"],
     "compare.tolerances.mean_overlap_at_k must be within 0..1"),
    (["compare.tolerances.prediction_rmsee=0.1"],
     "did you mean 'compare.tolerances.prediction_rmse'"),
    (["compare.fail_on_mismatch=maybe"], "compare.fail_on_mismatch' must be true or false"),
])
def test_compare_config_errors_at_load(sets, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, ["compare.bqml.evaluate.path=e.csv", *sets], job="compare")


def test_gs_output_refused_before_anything_is_written(world, tmp_path):
    """The issue's case: a gs:// compare.output was refused only after every compare_* table
    was written. Now the CLI stops at the config (exit 2) and writes nothing."""
    sink = tmp_path / "wh"
    proc = subprocess.run(
        [sys.executable, "jobs/compare.py", "--config", "conf/compare.yaml",
         "--set", f"sink.path={sink}", "--set", "compare.output=gs://bucket/report",
         "--set", f"compare.bqml.evaluate.path={world['ex'] / 'evaluate.csv'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "recsys compare: error: compare.output must be a local folder (the report is written "
        "with local file IO), got 'gs://bucket/report'"]
    assert not sink.exists()


def test_bad_input_fails_before_any_table_is_written(spark, world, tmp_path):
    """An input error in the last compared output (ML.WEIGHTS) is raised before the first
    compare_* table (ML.EVALUATE's) is written."""
    from recsys.compare import run_compare

    (tmp_path / "weights.json").write_text('{"feature":"1","intercept":0.5}\n')
    recsys = [f"compare.recsys.{name}.path={os.path.join(world['wh'], 'bqml_tutorial', t)}"
              for name, t in (("evaluate", "evaluate"), ("training_info", "training_info"),
                              ("recommend", "recommend"), ("top5", "recommend_top5"),
                              ("weights", "weights"))]
    cfg = compare_cfg(world, f"sink.path={tmp_path / 'wh'}", f"compare.output={tmp_path / 'r'}",
                      f"compare.bqml.weights.path={tmp_path / 'weights.json'}",
                      *[x + "" for x in recsys], *[f"compare.recsys.{n}.format=parquet"
                                                   for n in ("evaluate", "training_info",
                                                             "recommend", "top5", "weights")])
    with pytest.raises(InputError, match=r"compare\.bqml\.weights: missing column\(s\) "
                                         r"processed_input"):
        run_compare(spark, cfg)
    assert not (tmp_path / "wh").exists() and not (tmp_path / "r").exists()


def test_verdict_rules():
    from recsys.compare import verdict
    from recsys.config import CompareTolerances

    tol = CompareTolerances(metric_relative_difference=0.01, prediction_rmse=0.1,
                            prediction_correlation=0.98, mean_overlap_at_k=0.5)
    ok = {"metrics": {"mean_squared_error": (0.40, 0.402), "r2_score": (0.70, 0.699)},
          "prediction_rmse": 0.1, "prediction_correlation": 0.98, "mean_overlap_at_k": 0.5}
    v = verdict.judge(tol, ok, 5)
    assert v.status == verdict.PASS  # bounds are inclusive
    assert v.criteria[0].figure == pytest.approx(0.002 / 0.40)
    assert v.criteria[0].detail == "worst: mean_squared_error"
    assert verdict.judge(tol, {**ok, "prediction_rmse": 0.1001}, 5).status == verdict.FAIL
    assert verdict.judge(tol, {**ok, "mean_overlap_at_k": 0.49}, 5).status == verdict.FAIL
    missing = verdict.judge(tol, {k: v for k, v in ok.items() if k != "metrics"}, 5)
    assert missing.status == verdict.INCOMPLETE and missing.criteria[0].passed is None


def test_report_opens_with_the_verdict_and_its_figures(compared, world):
    _, t = compared
    rel = max(abs(RECSYS_EVALUATE[k] - v) / v for k, v in TUTORIAL_EVALUATE.items())
    bq, rec = world["bq"], world["rec"]
    both = bq.merge(rec, on=["user_id", "item_id"], suffixes=("_b", "_r"))
    rmse = np.sqrt(np.mean((both.predicted_rating_r - both.predicted_rating_b) ** 2))
    want_b, want_r = resolved_bqml_lists(world), world["top_r"]
    overlap = np.mean([len(set(a) & set(want_r.get(u, []))) / K for u, a in want_b.items()])
    v = t["compare_verdict"] if "compare_verdict" in t else read(world, "compare_verdict")
    v = v.set_index("criterion")
    figures = v.figure.tolist()
    assert figures[0] == pytest.approx(rel, rel=1e-9)
    assert figures[1] == pytest.approx(rmse, rel=1e-9)
    assert figures[2] == pytest.approx(pearson(both.predicted_rating_b, both.predicted_rating_r),
                                       rel=1e-9)
    assert figures[3] == pytest.approx(overlap, rel=1e-9)
    assert v.tolerance.tolist() == [0.01, 0.10, 0.98, 0.5]
    want = [rel <= 0.01, rmse <= 0.10, figures[2] >= 0.98, overlap >= 0.5]
    assert v.passed.tolist() == want and not all(want)
    md = (world["tmp"] / "report" / "report.md").read_text().splitlines()
    assert md[0] == "# recsys against BigQuery ML"
    assert md[2].startswith("**Verdict: FAIL** — the recsys run does NOT reproduce BigQuery ML")
    assert f"| {rpt_fmt(rmse)} | <= 0.1 |" in "\n".join(md[:12])


def rpt_fmt(x):
    from recsys.compare.text import fmt

    return fmt(float(x))


def test_session_conf_adds_avro_and_connector_only_for_compare():
    from recsys.runner.cli import session_conf
    from recsys.compare import avro_conf

    cfg = load_config(None, ["source.ratings=x", "compare.bqml.recommend.path=r-*.avro",
                             "compare.bqml.top5.table=bqml_tutorial.top5",
                             "bigquery.connector=com.example:bq:1"])
    import pyspark
    packages = session_conf(cfg, "compare")["spark.jars.packages"].split(",")
    assert packages == ["com.example:bq:1", avro_conf("auto", pyspark.__version__)]
    assert session_conf(cfg, "pipeline") == {}
    assert avro_conf("auto", "3.5.8", jar_dirs=()) == "org.apache.spark:spark-avro_2.12:3.5.8"
    assert avro_conf("provided", "4.0.1") is None


@pytest.mark.e2e
def test_compare_job_end_to_end_with_avro(world, tmp_path):
    """jobs/compare.py as a command: Avro recommend (spark-avro added by the CLI), NDJSON top 5
    and training info, CSV evaluate, Parquet weights."""
    ex = world["ex"]
    conf = tmp_path / "compare.yaml"
    conf.write_text(json.dumps({
        "source": {"ratings": "unused"},
        "sink": {"path": str(tmp_path / "wh")},
        "spark": {"master": "local[1]", "conf": {"spark.ui.enabled": "false",
                                                 "spark.sql.shuffle.partitions": "2"}},
        "compare": {"output": str(tmp_path / "out"), "top_k": 5, "bins": 10,
                    "recsys": {name: {"path": os.path.join(world["wh"], "bqml_tutorial", table),
                                      "format": "parquet"}
                               for name, table in (("evaluate", "evaluate"),
                                                   ("training_info", "training_info"),
                                                   ("recommend", "recommend"),
                                                   ("top5", "recommend_top5"),
                                                   ("weights", "weights"))},
                    "ratings": {"path": os.path.join(world["wh"], "bqml_tutorial", "ratings"),
                                "format": "parquet"},
                    "movies": {"path": os.path.join(world["wh"], "bqml_tutorial", "movies"),
                               "format": "parquet"},
                    "bqml": {"evaluate": {"path": str(ex / "evaluate.csv")},
                             "training_info": {"path": str(ex / "training_info.json")},
                             "recommend": {"path": str(ex / "recommend-*.avro"),
                                           "format": "avro"},
                             "top5": {"path": str(ex / "top5-*.avro")},
                             "weights": {"path": str(ex / "weights.parquet")}}}}))
    proc = subprocess.run([sys.executable, "jobs/compare.py", "--config", str(conf),
                           "--set", "compare.fail_on_mismatch=true"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    # The fixture's recsys side is out of tolerance: with fail_on_mismatch the job exits 4
    # after writing every table and the report (a CI gate).
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "verdict    FAIL:" in proc.stdout
    assert (tmp_path / "out" / "report.html").read_text().count("<svg") == 5
    assert "recsys compare: done in" in proc.stdout
    md = (tmp_path / "out" / "report.md").read_text()
    bq, rec = world["bq"], world["rec"]
    both = bq.merge(rec, on=["user_id", "item_id"], suffixes=("_b", "_r"))
    rmse = np.sqrt(np.mean((both.predicted_rating_r - both.predicted_rating_b) ** 2))
    rho = spearman(both.predicted_rating_b, both.predicted_rating_r)
    assert f"| RMSE between the two predictions | {rmse:.6g} |" in md
    assert f"{rho:.6g}" in md
    assert "| mean_absolute_error | 0.48494 | 0.5012 |" in md
    assert "avro `" in md and "INT64" in md
    for svg in ("loss.svg", "predictions.svg", "overlap.svg", "intercepts_item.svg"):
        assert (tmp_path / "out" / svg).read_text().startswith("<svg")
    assert "0.3943" in (tmp_path / "out" / "loss.svg").read_text()
    p = pd.read_parquet(tmp_path / "wh" / "bqml_tutorial" / "compare_predictions").iloc[0]
    assert p.rmse == pytest.approx(rmse, rel=1e-12) and p.pairs_compared == 72
    # The top-5 table came from Avro (f0_ as an array of records): same lists as the oracle.
    want_b, want_r = resolved_bqml_lists(world), world["top_r"]
    top = pd.read_parquet(tmp_path / "wh" / "bqml_tutorial" / "compare_topk").set_index("user")
    assert {u: list(top.loc[str(u), "bqml_items"]) for u in want_b} == {
        u: [str(i) for i in a] for u, a in want_b.items()}


# --- report.html in a real headless browser ----------------------------------------------------
# Chromium from Debian's packages: every plot of report.md is inline in the page, laid out with
# a non-zero size, and painted (its area of a screenshot is not blank and shows the plot
# colour). Outside CI the test skips when Chromium is missing; with CI=true it fails
# (.ci/run installs Chromium).

PROBE = """<pre id="probe"></pre><script>
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('figure[data-plot]')].map(f => {
    const svg = f.querySelector('svg');
    const r = svg ? svg.getBoundingClientRect() : {x: 0, y: 0, width: 0, height: 0};
    const drawn = svg ? [...svg.querySelectorAll('rect,line,polyline,circle,text')]
      .filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length : 0;
    return {name: f.dataset.plot, x: r.x, y: r.y, width: r.width, height: r.height, drawn};
  });
  document.getElementById('probe').textContent = JSON.stringify(
    {plots, height: document.documentElement.scrollHeight,
     missing: document.querySelectorAll('.missing').length});
});
</script>"""
PLOT_BLUE = (0x1F, 0x77, 0xB4)
WIDTH = 1100


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": required in CI")
        pytest.skip(message)
    return found


def run_chromium(binary, *args):
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-dev-shm-usage", "--force-device-scale-factor=1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_every_plot_renders_in_headless_chromium(compared, world, tmp_path):
    from PIL import Image

    binary = chromium()
    folder = world["tmp"] / "report"
    page = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    wanted = re.findall(r"!\[[^\]]*\]\(([^)]+\.svg)\)", md)
    assert len(wanted) == 5 and "<img" not in page and "src=" not in page  # all inline
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = run_chromium(binary, f"--window-size={WIDTH},1000", "--virtual-time-budget=5000",
                       "--dump-dom", probe_page.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), dom[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["missing"] == 0
    assert [p["name"] for p in probe["plots"]] == wanted
    for plot in probe["plots"]:
        assert plot["width"] >= 600 and plot["height"] >= 350, plot
        assert plot["drawn"] >= 10, plot  # axes, ticks, labels and the data marks

    shot = tmp_path / "report.png"
    run_chromium(binary, f"--window-size={WIDTH},{int(probe['height']) + 50}",
                 f"--screenshot={shot}", (folder / "report.html").as_uri())
    image = Image.open(shot).convert("RGB")
    for plot in probe["plots"]:
        box = tuple(int(round(v)) for v in (plot["x"], plot["y"], plot["x"] + plot["width"],
                                            plot["y"] + plot["height"]))
        data = image.crop(box).tobytes()
        pixels = [tuple(data[i:i + 3]) for i in range(0, len(data), 3)]
        ink = sum(1 for p in pixels if sum(p) < 3 * 235) / len(pixels)
        blue = sum(1 for p in pixels if all(abs(a - b) <= 40 for a, b in zip(p, PLOT_BLUE)))
        assert ink > 0.01, (plot["name"], ink)  # not a blank area
        assert blue > 20, (plot["name"], blue)  # the data (bars, cells, lines) painted
    if os.environ.get("RECSYS_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["RECSYS_KEEP_SCREENSHOT"])
