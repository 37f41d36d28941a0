"""End to end: the real command on a sample of the shipped MovieLens data, checked with pandas and
numpy; and the command line's one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, SAMPLE
from oracles import regression_metrics

pytestmark = pytest.mark.e2e


def run(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """pipeline on the ratings of users 1..40 (6,873 ratings) with the shipped movies file."""
    tmp = tmp_path_factory.mktemp("e2e")
    with open(os.path.join(SAMPLE, "ratings.csv"), "rb") as fh:
        lines = fh.read().split(b"\r\n")
    keep = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split(b",")[0]) <= 40]
    (tmp / "ratings.csv").write_bytes(b"\r\n".join(keep) + b"\r\n")
    proc = run("jobs/pipeline.py", "--config", "conf/local.yaml",
               "--set", f"source.ratings={tmp / 'ratings.csv'}",
               "--set", f"sink.path={tmp / 'wh'}",
               "--set", "model.max_iterations=5",
               "--set", "spark.master=local[2]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wh = tmp / "wh" / "bqml_tutorial"
    tables = {name: pd.read_parquet(wh / name) for name in
              ("ratings", "movies", "ratings_rejected", "evaluate", "recommend", "recommend_top5",
               "training_info", "weights", "embeddings")}
    source = pd.read_csv(tmp / "ratings.csv")
    return proc, tables, source


def test_ingest_tables_match_the_source(sample_run):
    _, t, source = sample_run
    assert len(t["ratings"]) == len(source) == 6873
    assert len(t["ratings_rejected"]) == 0
    got = t["ratings"].sort_values(["user_id", "item_id"]).reset_index(drop=True)
    want = source.sort_values(["userId", "movieId"]).reset_index(drop=True)
    assert (got["user_id"].to_numpy() == want["userId"].to_numpy()).all()
    assert np.allclose(got["rating"], want["rating"])
    seconds = (got["timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    assert (seconds.astype("int64") == want["timestamp"]).all()
    movies = pd.read_csv(os.path.join(SAMPLE, "movies.csv"))
    assert len(t["movies"]) == len(movies) == 9125
    assert list(t["ratings"].columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(t["movies"].columns) == ["movie_id", "movie_title", "genre"]


def test_recommend_covers_every_training_pair(sample_run):
    _, t, source = sample_run
    rec = t["recommend"]
    assert list(rec.columns) == ["predicted_rating", "user_id", "item_id"]
    assert len(rec) == source.userId.nunique() * source.movieId.nunique() == 40 * 3061
    assert not rec.duplicated(["user_id", "item_id"]).any()


def test_evaluate_matches_numpy_on_recommend(sample_run):
    _, t, _ = sample_run
    joined = t["ratings"].merge(t["recommend"], on=["user_id", "item_id"])
    want = regression_metrics(joined["rating"], joined["predicted_rating"])
    ev = t["evaluate"]
    assert list(ev.columns) == list(want) and len(ev) == 1
    for name, value in want.items():
        assert ev[name].iloc[0] == pytest.approx(value, rel=1e-9), name


def test_top5_is_the_pandas_top5_with_titles(sample_run):
    _, t, _ = sample_run
    rec = t["recommend"].sort_values(["user_id", "predicted_rating", "item_id"],
                                     ascending=[True, False, True])
    want = rec.groupby("user_id").head(5)
    titles = t["movies"].set_index("movie_id")
    top = t["recommend_top5"]
    assert len(top) == 40
    for row in top.itertuples():
        expect = want[want.user_id == row.user_id]
        got = list(row.recommendations)
        assert [e["item_id"] for e in got] == expect.item_id.tolist()
        assert [e["predicted_rating"] for e in got] == pytest.approx(
            expect.predicted_rating.tolist())
        assert [e["movie_title"] for e in got] == titles.loc[expect.item_id, "movie_title"].tolist()


def test_training_info_and_weights_tables(sample_run):
    _, t, source = sample_run
    info = t["training_info"]
    assert list(info.columns) == ["training_run", "iteration", "loss", "eval_loss",
                                  "learning_rate", "duration_ms"]
    # bigquery_ml: one row per iteration run (at most max_iterations=5, fewer if EARLY_STOP
    # fired), NO_SPLIT so no eval_loss; the objective never increases.
    n = len(info)
    assert 2 <= n <= 5 and info["iteration"].tolist() == list(range(n))
    assert info["eval_loss"].isna().all()
    assert (np.diff(info["loss"]) <= 1e-12).all()
    if n < 5:  # stopped early: the last improvement is the first below MIN_REL_PROGRESS
        gains = -np.diff(info["loss"]) / info["loss"].to_numpy()[:-1]
        assert gains[-1] < 0.01 and (gains[:-1] >= 0.01).all()
    # The last row's loss is the MSE of the model's own predictions (the written recommend table).
    joined = t["ratings"].merge(t["recommend"], on=["user_id", "item_id"])
    mse = np.mean((joined["rating"] - joined["predicted_rating"]) ** 2)
    assert info["loss"].iloc[-1] == pytest.approx(mse, rel=1e-9)

    w = t["weights"]
    assert list(w.columns) == ["processed_input", "feature", "factor_weights", "intercept"]
    assert (w["processed_input"] == "user_id").sum() == source.userId.nunique()
    assert (w["processed_input"] == "item_id").sum() == source.movieId.nunique()
    glob = w[w["feature"] == "global__intercept__"]
    assert len(glob) == 1 and glob["processed_input"].isna().all()
    assert glob["intercept"].iloc[0] == pytest.approx(source.rating.mean())
    # Row order as written: users then items, each by numeric id (not as text), global last.
    assert w["feature"].tolist() == (
        [str(u) for u in sorted(source.userId.unique())]
        + [str(i) for i in sorted(source.movieId.unique())] + ["global__intercept__"])
    assert len(t["embeddings"]) == source.userId.nunique() + source.movieId.nunique()


def test_summary_is_printed(sample_run):
    proc, t, _ = sample_run
    out = proc.stdout
    assert "recsys pipeline: done in" in out
    mse = t["evaluate"]["mean_squared_error"].iloc[0]
    assert f"mean_squared_error       {mse:.5f}" in out
    first_user_top = t["recommend_top5"].sort_values("user_id").iloc[0]["recommendations"][0]
    assert "top 5 for user 1:" in out
    assert first_user_top["movie_title"][:40] in out


@pytest.mark.parametrize("args, message, code", [
    (["--config", "conf/nope.yaml"], "recsys pipeline: error: config file not found: conf/nope.yaml", 2),
    (["--config", "conf/local.yaml", "--set", "model.num_factor=3"],
     "recsys pipeline: error: unknown config key 'model.num_factor' (did you mean 'model.num_factors'?)", 2),
    (["--config", "conf/local.yaml", "--set", "model.max_iterations=many"],
     "recsys pipeline: error: config key 'model.max_iterations' must be an integer, got 'many'", 2),
    # Invalid BigQuery identifiers: refused before anything reaches SQL.
    (["--config", "conf/local.yaml", "--set", "sink.type=bigquery",
      "--set", "model.input=ds.t; DROP TABLE x"],
     "recsys pipeline: error: model.input 'ds.t; DROP TABLE x': 't; DROP TABLE x' must be "
     "letters, digits and underscores", 2),
    (["--config", "conf/local.yaml", "--set", "sink.type=bigquery", "--set", "sink.dataset=a-b"],
     "recsys pipeline: error: sink.dataset must be letters, digits and underscores "
     "(at most 1024), got 'a-b'", 2),
    (["--config", "conf/local.yaml", "--set", "sink.type=bigquery",
      "--set", "bigquery.project=Bad_Project"],
     "recsys pipeline: error: bigquery.project 'Bad_Project' is not a valid project id", 2),
    # Impossible combinations.
    (["--config", "conf/local.yaml", "--set", "model.data_split_method=custom"],
     "recsys pipeline: error: model.data_split_method custom needs model.data_split_col", 2),
    (["--config", "conf/local.yaml", "--set", "sink.type=bigquery",
      "--set", "bigquery.write_method=indirect"],
     "recsys pipeline: error: bigquery.write_method indirect needs "
     "bigquery.temporary_gcs_bucket", 2),
    (["--config", "conf/local.yaml", "--set", "ingest.rating_min=5"],
     "recsys pipeline: error: ingest.rating_min (5.0) must be below ingest.rating_max (5.0)", 2),
])
def test_cli_config_errors_are_one_line(args, message, code):
    proc = run("jobs/pipeline.py", *args)
    assert proc.returncode == code
    assert proc.stderr.strip() == message
    assert proc.stdout == ""


def test_cli_missing_input_file_is_one_line(tmp_path):
    proc = run("jobs/ingest.py", "--config", "conf/local.yaml",
               "--set", "source.ratings=/no/such/ratings.csv", "--set", f"sink.path={tmp_path}")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1] == \
        "recsys ingest: error: source.ratings: file not found: /no/such/ratings.csv"
