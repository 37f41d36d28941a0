"""recsys's BigQuery source and sink through the real connector and the local emulator: every
output table written, its schema (the nested columns included), row counts and values checked
with google-cloud-bigquery against the same emulator, independently of the connector."""

import numpy as np
import pandas as pd
import pytest

from recsys.config import load_config
from recsys.runner.pipeline import run_evaluate, run_ingest, run_pipeline, run_recommend, run_train

TOKEN_ENV = "RECSYS_TEST_BQ_TOKEN"
DATASET = "recsys_it"
# ML.TRAINING_INFO has one row per iteration; early stop is off so the count is this number.
ITERATIONS = 3


@pytest.fixture(scope="module")
def source_files(tmp_path_factory):
    """A small ml-latest-format sample: 25 users x 30 movies, one bad line (rating 7)."""
    rng = np.random.default_rng(4)
    tmp = tmp_path_factory.mktemp("bq-src")
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 26, 400),
                                                      rng.integers(1, 31, 400))})
    ratings = pd.DataFrame(pairs, columns=["userId", "movieId"])
    ratings["rating"] = rng.integers(1, 11, len(ratings)) / 2.0
    ratings["timestamp"] = 1_000_000_000 + np.arange(len(ratings))
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{r.userId},{r.movieId},{r.rating},{r.timestamp}" for r in ratings.itertuples()]
    lines.insert(5, "3,4,7.0,1000000999")
    (tmp / "ratings.csv").write_text("\r\n".join(lines) + "\r\n")
    movies = pd.DataFrame({"movieId": range(1, 31),
                           "title": [f'"Film {i}, The ({1950 + i})"' for i in range(1, 31)],
                           "genres": ["Drama|Comedy"] * 30})
    (tmp / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(
        f"{m.movieId},{m.title},{m.genres}" for m in movies.itertuples()) + "\n")
    return tmp, ratings


def config(bq_emulator, tmp_path, *sets):
    return load_config(None, [
        "source.format=ml-latest", "sink.type=bigquery", f"sink.dataset={DATASET}",
        f"sink.path={tmp_path / 'models'}", f"bigquery.project={bq_emulator.project}",
        f"bigquery.http_endpoint={bq_emulator.rest_endpoint}",
        f"bigquery.storage_grpc_endpoint={bq_emulator.grpc_endpoint}",
        f"bigquery.access_token_env={TOKEN_ENV}", "bigquery.connector=provided",
        "model.num_factors=3", f"model.max_iterations={ITERATIONS}", "model.early_stop=false",
        *sets])


@pytest.fixture(scope="module")
def pipeline_run(bq_spark, bq_emulator, source_files, tmp_path_factory):
    tmp, ratings = source_files
    import os

    os.environ[TOKEN_ENV] = "emulator-does-not-check"
    cfg = config(bq_emulator, tmp_path_factory.mktemp("bq-run"),
                 f"source.ratings={tmp / 'ratings.csv'}", f"source.movies={tmp / 'movies.csv'}",
                 "ingest.max_reject_fraction=0.05")
    report = run_pipeline(bq_spark, cfg)
    return cfg, report, ratings


def table(bq_emulator, name):
    client = bq_emulator.client()
    return client.get_table(f"{bq_emulator.project}.{DATASET}.{name}"), client


def rows(bq_emulator, name):
    tbl, client = table(bq_emulator, name)
    return [dict(r.items()) for r in client.list_rows(tbl)]


def test_every_table_is_written(pipeline_run, bq_emulator):
    _, _, ratings = pipeline_run
    n_users, n_items = ratings.userId.nunique(), ratings.movieId.nunique()
    expected = {"ratings": len(ratings), "movies": 30, "ratings_rejected": 1,
                "movies_rejected": 0, "evaluate": 1, "recommend": n_users * n_items,
                "recommend_top5": n_users, "training_info": ITERATIONS,
                "weights": n_users + n_items + 1, "embeddings": n_users + n_items}
    got = {name: len(rows(bq_emulator, name)) for name in expected}
    assert got == expected


def test_nested_columns_are_repeated_records(pipeline_run, bq_emulator):
    tbl, _ = table(bq_emulator, "recommend_top5")
    rec = {f.name: f for f in tbl.schema}["recommendations"]
    assert (rec.mode, rec.field_type) == ("REPEATED", "RECORD")
    assert [(f.name, f.field_type) for f in rec.fields] == [
        ("item_id", "INTEGER"), ("movie_title", "STRING"), ("genre", "STRING"),
        ("predicted_rating", "FLOAT")]
    weights, _ = table(bq_emulator, "weights")
    fw = {f.name: f for f in weights.schema}["factor_weights"]
    assert (fw.mode, fw.field_type) == ("REPEATED", "RECORD")
    assert [(f.name, f.field_type) for f in fw.fields] == [("factor", "INTEGER"),
                                                           ("weight", "FLOAT")]


def test_embeddings_have_the_shape_vector_search_takes(pipeline_run, bq_emulator):
    """VECTOR_SEARCH takes ARRAY<FLOAT64> (REPEATED FLOAT), one length, no NULL element."""
    tbl, _ = table(bq_emulator, "embeddings")
    column = {f.name: f for f in tbl.schema}["search_embedding"]
    assert (column.mode, column.field_type) == ("REPEATED", "FLOAT")
    vectors = [r["search_embedding"] for r in rows(bq_emulator, "embeddings")]
    assert len({len(v) for v in vectors}) == 1
    assert all(value is not None for v in vectors for value in v)


def test_values_match_the_source(pipeline_run, bq_emulator):
    _, _, ratings = pipeline_run
    got = pd.DataFrame(rows(bq_emulator, "ratings")).sort_values(["user_id", "item_id"])
    want = ratings.sort_values(["userId", "movieId"])
    assert got.user_id.tolist() == want.userId.tolist()
    assert got.rating.tolist() == want.rating.tolist()
    assert [t.timestamp() for t in got.timestamp] == want.timestamp.astype(float).tolist()
    rejected = rows(bq_emulator, "ratings_rejected")
    assert [(r["line_number"], r["reason"]) for r in rejected] == [
        (6, "rating 7.0 outside the scale [0.5, 5]")]
    top = sorted(rows(bq_emulator, "recommend_top5"), key=lambda r: r["user_id"])[0]
    recs = top["recommendations"]
    assert len(recs) == 5
    scores = [r["predicted_rating"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    assert recs[0]["movie_title"] == f"Film {recs[0]['item_id']}, The ({1950 + recs[0]['item_id']})"


def canonical(bq_emulator, name):
    """Every row of a table, values and all, in a canonical order (nested records as tuples)."""
    def plain(value):
        if isinstance(value, dict):
            return tuple((k, plain(v)) for k, v in sorted(value.items()))
        if isinstance(value, list):
            return tuple(plain(v) for v in value)
        return value
    return sorted((tuple((k, plain(v)) for k, v in sorted(row.items()))
                   for row in rows(bq_emulator, name)), key=repr)


RERUN_TABLES = ("ratings", "recommend", "recommend_top5", "weights", "training_info")


def test_rerun_replaces_without_duplicates(pipeline_run, bq_spark, bq_emulator):
    """A rerun of ingest, train and recommend leaves every table with the same rows, value for
    value (only training_info's wall-clock duration_ms may differ)."""
    cfg, _, ratings = pipeline_run
    def snapshot():
        out = {n: canonical(bq_emulator, n) for n in RERUN_TABLES}
        out["training_info"] = sorted((tuple(c for c in row if c[0] != "duration_ms")
                                       for row in out["training_info"]), key=repr)
        return out
    before = snapshot()
    run_ingest(bq_spark, cfg)
    run_train(bq_spark, cfg)
    run_recommend(bq_spark, cfg)
    after = snapshot()
    for name in RERUN_TABLES:
        assert after[name] == before[name], name
    assert len(before["ratings"]) == len(ratings)
    assert len(before["training_info"]) == ITERATIONS


def test_failed_write_keeps_the_previous_table(pipeline_run, bq_spark, bq_emulator):
    """A write whose first tasks succeed (they write their rows) and whose last task then fails
    leaves the previous table, every row as it was. Six partitions on local[2]: the last task
    starts only once four others have finished, and it fails on its last row."""
    from recsys.sinks import make_sink

    cfg, _, ratings = pipeline_run
    sink = make_sink(cfg)
    before = canonical(bq_emulator, "ratings")

    def fail_at_the_end(partition, rows):
        rows = list(rows)
        for n, row in enumerate(rows):
            if partition == 5 and n == len(rows) - 1:
                raise RuntimeError("injected failure after the other tasks wrote")
            yield row

    replacement = bq_spark.createDataFrame(
        bq_spark.sparkContext.parallelize([(u, u, 3.0) for u in range(60)], 6)
        .mapPartitionsWithIndex(fail_at_the_end), "user_id long, item_id long, rating double")
    assert replacement.rdd.getNumPartitions() == 6
    with pytest.raises(Exception, match="injected failure after the other tasks wrote"):
        sink.write("ratings", replacement)
    assert canonical(bq_emulator, "ratings") == before
    assert len(before) == len(ratings)


def test_bigquery_source_table_and_query(pipeline_run, bq_spark, bq_emulator, tmp_path):
    cfg, _, ratings = pipeline_run
    src = config(bq_emulator, tmp_path, "source.format=bigquery",
                 f"source.ratings={DATASET}.ratings", f"source.movies={DATASET}.movies",
                 "sink.dataset=recsys_it_copy", "ingest.rating_min=1",
                 "ingest.max_reject_fraction=1")
    run_ingest(bq_spark, src)
    client = bq_emulator.client()
    copy = list(client.list_rows(f"{bq_emulator.project}.recsys_it_copy.ratings"))
    assert len(copy) == int((ratings.rating >= 1).sum())          # 0.5 ratings now rejected
    rejected = list(client.list_rows(f"{bq_emulator.project}.recsys_it_copy.ratings_rejected"))
    assert len(rejected) == int((ratings.rating < 1).sum())
    assert all(r["reason"].startswith("rating 0.5 outside the scale") for r in rejected)

    query = (f"SELECT user_id, item_id, rating, timestamp FROM {DATASET}.ratings "
             f"WHERE user_id <= 10")
    src_q = config(bq_emulator, tmp_path, "source.format=bigquery", f"source.ratings={query}",
                   "sink.dataset=recsys_it_query", "ingest.max_reject_fraction=1")
    run_ingest(bq_spark, src_q)
    got = list(client.list_rows(f"{bq_emulator.project}.recsys_it_query.ratings"))
    assert len(got) == int((ratings.userId <= 10).sum())


def test_access_token_is_never_written(pipeline_run):
    """The token passed through bigquery.access_token_env appears in no file the run wrote."""
    import os

    cfg, report, _ = pipeline_run
    token = os.environ[TOKEN_ENV]
    assert token not in report.render()
    seen = 0
    for folder, _, files in os.walk(cfg.sink.path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                assert token.encode() not in fh.read(), os.path.join(folder, name)
            seen += 1
    assert seen > 0   # the model files were scanned


def test_evaluate_reads_the_model_back(pipeline_run, bq_spark):
    cfg, report, _ = pipeline_run
    again = run_evaluate(bq_spark, cfg)
    assert again.metrics["mean_squared_error"] == pytest.approx(
        report.metrics["mean_squared_error"])
