"""Config loading: defaults, overrides, and one-line errors for every kind of mistake."""

import pytest

from recsys.config import load_config
from recsys.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_values_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "source:\n  ratings: r.csv\nmodel:\n  num_factors: 34\n  l2_reg: 9.83\n"))
    assert cfg.model.num_factors == 34
    assert cfg.model.l2_reg == 9.83
    assert cfg.model.max_iterations == 20          # BigQuery ML default
    assert cfg.model.feedback_type == "explicit"
    assert cfg.model.solver == "bigquery_ml"        # BigQuery ML's objective by default
    assert cfg.ingest.max_reject_fraction == 0.01
    assert cfg.sink.dataset == "bqml_tutorial"


def test_overrides_win_and_parse_types(tmp_path):
    cfg = load_config(write(tmp_path, "source:\n  ratings: r.csv\nmodel:\n  num_factors: 34\n"),
                      ["model.num_factors=8", "recommend.exclude_rated=true", "model.l2_reg=2",
                       "spark.conf.spark.sql.shuffle.partitions=4"])
    assert cfg.model.num_factors == 8
    assert cfg.recommend.exclude_rated is True
    assert cfg.model.l2_reg == 2.0 and isinstance(cfg.model.l2_reg, float)
    assert dict(cfg.spark.conf) == {"spark.sql.shuffle.partitions": "4"}


def test_config_objects_are_frozen():
    cfg = load_config(None, ["source.ratings=r.csv"])
    with pytest.raises(AttributeError):
        cfg.model.num_factors = 3  # type: ignore[misc]


@pytest.mark.parametrize("text, overrides, message", [
    ("model:\n  num_factor: 3\n", [], "unknown config key 'model.num_factor' (did you mean 'model.num_factors'?)"),
    ("modle:\n  num_factors: 3\n", [], "unknown config key 'modle' (did you mean 'model'?)"),
    ("model:\n  num_factors: three\n", [], "config key 'model.num_factors' must be an integer, got 'three'"),
    ("model:\n  num_factors: 3.5\n", [], "config key 'model.num_factors' must be an integer, got 3.5"),
    ("recommend:\n  exclude_rated: yes please\n", [], "config key 'recommend.exclude_rated' must be true or false"),
    ("model: 3\n", [], "'model' must be a mapping, got int"),
    ("", ["model.l2_reg=0"], "model.l2_reg must be > 0, got 0.0"),
    ("", ["model.num_factors=201"], "model.num_factors must be between 2 and 200, got 201"),
    ("", ["source.format=ml-10m"], "source.format must be one of ml-latest, ml-1m, ml-100k, csv, parquet"),
    ("", ["ingest.rating_min=5", "ingest.rating_max=1"], "ingest.rating_min (5.0) must be below ingest.rating_max (1.0)"),
    ("", ["sink.dataset=bad-name;drop"], "sink.dataset must be letters, digits and underscores"),
    ("", ["model.num_factors"], "--set expects dotted.key=value, got 'model.num_factors'"),
    ("source: [1, 2\n", [], "invalid YAML"),
    ("", ["model.solver=als"], "model.solver must be one of bigquery_ml, spark_als, got 'als'"),
    ("", ["model.reg_param=0.1"], "model.reg_param is pyspark.ml ALS's own penalty: it needs model.solver spark_als"),
    ("", ["model.training_info=every_iteration"], "model.training_info every_iteration is for model.solver spark_als"),
    ("", ["model.intercept_l2_reg=0"], "model.intercept_l2_reg must be > 0, got 0.0"),
    ("", ["model.solver=spark_als", "model.reg_param_rule=median"], "model.reg_param_rule must be default or one of mean_ridge, per_user, per_item, geometric, literal, got 'median'"),
    ("", ["model.checkpoint_interval=-1"], "model.checkpoint_interval must be >= 0, got -1"),
    ("", ["tuning.intercept_l2_reg=[1, 0]"], "tuning.intercept_l2_reg values must be > 0, got 0.0"),
])
def test_errors_are_one_clear_line(tmp_path, text, overrides, message):
    text = text if "ratings" in text or text.startswith("source") else "source:\n  ratings: r.csv\n" + text
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: /nonexistent.yaml"):
        load_config("/nonexistent.yaml")


def test_ratings_required_unless_downloading():
    with pytest.raises(ConfigError, match="source.ratings is required"):
        load_config(None)
    assert load_config(None, ["source.format=ml-1m", "source.download=true"]).source.download
