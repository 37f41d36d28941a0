"""The smaller defects found in review (issue 17), each pinned by a test that failed before."""

import io
import zipfile

import pytest

from recsys.config import load_config
from recsys.errors import ConfigError


def test_user_jars_packages_survive_the_bigquery_connector():
    """A user's spark.conf.spark.jars.packages is kept next to the connector's coordinate (the
    builder applies the implied settings last, so they must carry both), in that order."""
    from recsys.runner.cli import session_conf
    from recsys.session import CONNECTORS

    cfg = load_config(None, [
        "source.ratings=r.csv", "sink.type=bigquery", "bigquery.project=my-project",
        "spark.conf.spark.jars.packages=org.example:thing_2.13:1.0, org.example:other:2.0"])
    conf = session_conf(cfg, "pipeline")
    got = conf["spark.jars.packages"].split(",")
    line = ".".join(__import__("pyspark").__version__.split(".")[:2])
    connector = CONNECTORS.get(line, CONNECTORS["4.0"])
    assert got == ["org.example:thing_2.13:1.0", "org.example:other:2.0", connector]


class _Connection:
    def __init__(self):
        self.calls = []

    def read(self, spark, ref, dataset):
        self.calls.append((ref, dataset))
        return "bigquery-frame"


class _BigQuerySinkStandIn:
    """Only what resolve_table looks at: ``connection`` and ``dataset``."""

    dataset = "ds"

    def __init__(self):
        self.connection = _Connection()


def test_bigquery_query_with_a_slash_is_a_query_not_a_parquet_path():
    """``SELECT rating / 2 ...`` goes to BigQuery as SQL (it used to be taken for a path and fail
    with 'table path not found'), and passes config validation."""
    from recsys.sinks import resolve_table

    query = "SELECT user_id, item_id, rating / 2 AS rating FROM ds.ratings"
    sink = _BigQuerySinkStandIn()
    assert resolve_table(sink, None, query) == "bigquery-frame"
    assert sink.connection.calls == [(query, "ds")]
    cfg = load_config(None, ["source.ratings=r.csv", "sink.type=bigquery",
                             f"model.input={query}"])
    assert cfg.model.input == query


@pytest.mark.parametrize("key,value,message", [
    ("tuning.l2_reg", "[1.0, -2.0]", "tuning.l2_reg values must be > 0, got -2.0"),
    ("tuning.l2_reg", "[0]", "tuning.l2_reg values must be > 0, got 0.0"),
    ("tuning.reg_param", "[-0.1]", "tuning.reg_param values must be >= 0, got -0.1"),
    ("tuning.wals_alpha", "[40, -1]", "tuning.wals_alpha values must be >= 0, got -1.0"),
])
def test_tuning_lists_are_validated(key, value, message):
    """Each search list gets the rule of the model key it stands for, as one line."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["source.ratings=r.csv", f"{key}={value}"])
    assert str(err.value) == message


@pytest.mark.spark
def test_tuning_wals_alpha_zero_is_the_model_alpha(spark):
    """tuning.wals_alpha [0.0] trains with alpha 0.0 (0.0 is falsy: it used to fall back to
    model.wals_alpha 40 while the trials table recorded 0.0)."""
    from recsys.evaluation import tuning

    rows = [(u, i, float(1 + (u * 7 + i) % 5)) for u in range(1, 13) for i in range(1, 11)
            if (u + i) % 3]
    ratings = spark.createDataFrame(rows, "user_id long, item_id long, rating double")
    cfg = load_config(None, ["source.ratings=r.csv", "model.feedback_type=implicit",
                             "model.wals_alpha=40", "model.max_iterations=2",
                             "tuning.num_trials=1", "tuning.num_factors=[2]",
                             "tuning.l2_reg=[1.0]", "tuning.reg_param=[0.1]",
                             "tuning.wals_alpha=[0.0]", "tuning.validation_fraction=0.3"])
    final, trials = tuning.tune(spark, ratings, cfg.model, cfg.tuning)
    assert final.wals_alpha == 0.0
    assert [r.wals_alpha for r in trials.collect()] == [0.0]


@pytest.mark.spark
def test_source_url_with_a_generic_format_resolves_files_inside_the_archive(spark, tmp_path):
    """A csv archive at source.url (not a MovieLens layout) is downloaded, verified and its
    files named by source.ratings / source.movies (relative to the archive) are ingested; the
    kept rows equal a plain-Python reading of the CSV text put in the archive."""
    import hashlib

    from recsys.sources import readers
    from recsys.runner.pipeline import run_ingest

    ratings_text = "user_id,item_id,rating,timestamp\n1,10,4.0,5\n1,11,3.5,6\n2,10,x,7\n2,12,5,8\n"
    movies_text = "movie_id,movie_title,genre\n10,Ten,Drama\n11,Eleven,Comedy\n12,Twelve,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("export/ratings.csv", ratings_text)
        zf.writestr("export/movies.csv", movies_text)
    archive = tmp_path / "export.zip"
    archive.write_bytes(buf.getvalue())
    cfg = load_config(None, [
        "source.format=csv", "source.download=true", f"source.url={archive.as_uri()}",
        f"source.md5={hashlib.md5(buf.getvalue()).hexdigest()}",
        f"source.cache_dir={tmp_path / 'cache'}", "source.ratings=export/ratings.csv",
        "source.movies=export/movies.csv", f"sink.path={tmp_path / 'wh'}",
        "ingest.max_reject_fraction=0.5"])
    files = readers.resolve_files(cfg.source)
    assert files.ratings == [str(tmp_path / "cache" / "export.zip.d" / "export" / "ratings.csv")]
    run_ingest(spark, cfg)
    import pandas as pd

    got = pd.read_parquet(tmp_path / "wh" / "bqml_tutorial" / "ratings")
    expected = [(int(u), int(i), float(r)) for u, i, r, _ in
                (line.split(",") for line in ratings_text.splitlines()[1:]) if r != "x"]
    assert sorted(zip(got.user_id, got.item_id, got.rating)) == expected
    rejected = pd.read_parquet(tmp_path / "wh" / "bqml_tutorial" / "ratings_rejected")
    assert rejected.line_number.tolist() == [4]
    assert rejected.source_file.tolist() == files.ratings


@pytest.mark.spark
def test_compare_ranks_string_item_ids_under_ansi(spark):
    """Ties between string item ids (not numbers) are ranked under Spark's ANSI mode: the
    tie-break used a plain cast to BIGINT, which raises CAST_INVALID_INPUT for 'B0001'."""
    from recsys.compare import topk_from_predictions

    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    frame = spark.createDataFrame(
        [("u1", "B0002", 4.0), ("u1", "B0001", 4.0), ("u1", "10", 4.0), ("u1", "B0003", 3.0)],
        "user string, item string, prediction double")
    top = topk_from_predictions(frame, 3).orderBy("rank").collect()
    # Numeric ids first by value, then text ids as text (the documented tie rule).
    assert [r.item for r in top] == ["10", "B0001", "B0002"]
