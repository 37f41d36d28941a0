"""Typed, frozen configuration loaded from YAML, with ``--set dotted.key=value`` overrides.

Every key and its default lives here, once. Unknown keys, wrong types and impossible values fail
fast with a one-line ``ConfigError`` that names the dotted key.

>>> cfg = load_config(None, ["source.ratings=r.csv", "model.num_factors=8", "sink.path=/tmp/wh"])
>>> cfg.model.num_factors, cfg.sink.path, cfg.model.l2_reg
(8, '/tmp/wh', 1.0)
>>> load_config(None, ["source.ratings=r.csv", "model.num_factor=8"])
Traceback (most recent call last):
...
recsys.errors.ConfigError: unknown config key 'model.num_factor' (did you mean 'model.num_factors'?)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple, Union

import yaml

from recsys.errors import ConfigError

SOURCE_FORMATS = ("ml-latest", "ml-1m", "ml-100k", "csv", "parquet", "bigquery")
FEEDBACK_TYPES = ("explicit", "implicit")
SOLVERS = ("bigquery_ml", "spark_als")
# How spark_als derives regParam from l2_reg (recsys.model.SPARK_REG_PARAM_RULES).
REG_PARAM_RULES = ("mean_ridge", "per_user", "per_item", "geometric", "literal")
TRAINING_INFO_MODES = ("final", "every_iteration")
SPLIT_METHODS = ("no_split", "auto_split", "random", "custom", "seq")
SINK_TYPES = ("local", "bigquery")
WRITE_METHODS = ("direct", "indirect")
COMPARE_FORMATS = ("csv", "json", "parquet", "avro")
# File extensions a compare input's format is inferred from when `format` is not given.
COMPARE_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
                      ".parquet": "parquet", ".avro": "avro"}
COMPARE_OUTPUTS = ("evaluate", "training_info", "recommend", "top5", "weights")


@dataclass(frozen=True)
class RatingColumns:
    """Column names of a generic CSV/Parquet ratings source (ignored for MovieLens formats)."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str = "rating"
    timestamp: Optional[str] = "timestamp"


@dataclass(frozen=True)
class MovieColumns:
    """Column names of a generic CSV/Parquet movies source (ignored for MovieLens formats)."""

    movie_id: str = "movie_id"
    title: str = "movie_title"
    genre: Optional[str] = "genre"


@dataclass(frozen=True)
class SourceConfig:
    """Where the ratings and movies come from."""

    format: str = "ml-latest"
    # A file, a folder, a glob (local or any Hadoop URI), or a list of those; for a bigquery
    # source one table id or query.
    ratings: Optional[Union[str, Tuple[str, ...]]] = None
    movies: Optional[Union[str, Tuple[str, ...]]] = None
    download: bool = False
    url: Optional[str] = None
    md5: Optional[str] = None
    cache_dir: str = "~/.cache/recsys"
    encoding: Optional[str] = None
    delimiter: str = ","
    rating_columns: RatingColumns = field(default_factory=RatingColumns)
    movie_columns: MovieColumns = field(default_factory=MovieColumns)


@dataclass(frozen=True)
class IngestConfig:
    """Validation of ratings rows."""

    rating_min: float = 0.5
    rating_max: float = 5.0
    max_reject_fraction: float = 0.01


@dataclass(frozen=True)
class ModelConfig:
    """CREATE MODEL options, named as in BigQuery ML."""

    name: str = "mf_explicit"
    input: str = "ratings"
    solver: str = "bigquery_ml"
    feedback_type: str = "explicit"
    num_factors: Optional[int] = None
    l2_reg: float = 1.0
    intercept_l2_reg: Optional[float] = None
    reg_param: Optional[float] = None
    reg_param_rule: str = "default"
    max_iterations: int = 20
    wals_alpha: float = 40.0
    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str = "rating"
    seed: int = 42
    num_blocks: Optional[int] = None
    broadcast_max_mb: float = 256.0
    checkpoint_interval: int = 5
    early_stop: bool = True
    min_rel_progress: float = 0.01
    training_info: str = "final"
    data_split_method: str = "no_split"
    data_split_eval_fraction: float = 0.2
    data_split_col: Optional[str] = None


@dataclass(frozen=True)
class EvaluateConfig:
    """ML.EVALUATE: which table to score (None = the training data)."""

    input: Optional[str] = None


@dataclass(frozen=True)
class RecommendConfig:
    """ML.RECOMMEND and the top-k table."""

    input: Optional[str] = None
    top_k: int = 5
    exclude_rated: bool = False
    write_all_pairs: bool = True
    min_item_ratings: int = 0


@dataclass(frozen=True)
class TuningConfig:
    """Hyperparameter search (BigQuery ML's NUM_TRIALS): trials on a validation split carved
    from the training rows; the best trial's options train the model."""

    num_trials: int = 0
    algorithm: str = "grid"
    num_factors: Tuple[int, ...] = (16, 34, 64)
    l2_reg: Tuple[float, ...] = (2.0, 5.0, 10.0)
    reg_param: Tuple[float, ...] = (0.05, 0.1, 0.15, 0.2)
    intercept_l2_reg: Tuple[float, ...] = ()
    wals_alpha: Tuple[float, ...] = (40.0,)
    validation_fraction: float = 0.1


@dataclass(frozen=True)
class SinkConfig:
    """Where output tables go."""

    type: str = "local"
    path: str = "warehouse"
    dataset: str = "bqml_tutorial"


@dataclass(frozen=True)
class BigQueryConfig:
    """BigQuery through the spark-bigquery-connector (source.format / sink.type bigquery)."""

    project: Optional[str] = None
    location: str = "US"
    write_method: str = "direct"
    temporary_gcs_bucket: Optional[str] = None
    create_dataset: bool = True
    connector: str = "auto"
    http_endpoint: Optional[str] = None
    storage_grpc_endpoint: Optional[str] = None
    access_token_env: Optional[str] = None


@dataclass(frozen=True)
class SparkConfig:
    """Session settings; ``conf`` is passed to the builder verbatim."""

    master: Optional[str] = None
    app_name: str = "recsys"
    log_level: str = "WARN"
    checkpoint_dir: Optional[str] = None
    conf: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class CompareTableRef:
    """One table to compare: files (``path``, a path or glob, with their ``format``) or a table
    (``table``: a BigQuery id ``[project.]dataset.table`` or ``SELECT`` query, or a bare name of
    the sink's dataset)."""

    path: Optional[str] = None
    format: Optional[str] = None
    table: Optional[str] = None

    def resolved_format(self) -> Optional[str]:
        """``format``, or the one implied by the path's extension (None for a table)."""
        if self.path is None:
            return None
        if self.format is not None:
            return self.format
        base = self.path.rstrip("/").rsplit("/", 1)[-1].lower()
        for ext, fmt in COMPARE_EXTENSIONS.items():
            if base.endswith(ext) or base.endswith(ext + "*") or f"{ext}." in base:
                return fmt
        return None

    def is_bigquery(self) -> bool:
        """A BigQuery table id or query (read through the connector)."""
        ref = (self.table or "").strip()
        return self.path is None and ("." in ref or " " in ref)


@dataclass(frozen=True)
class CompareTables:
    """The five BigQuery ML outputs of one side; None = not compared (BigQuery ML side) or the
    sink's table of that name (recsys side)."""

    evaluate: Optional[CompareTableRef] = None
    training_info: Optional[CompareTableRef] = None
    recommend: Optional[CompareTableRef] = None
    top5: Optional[CompareTableRef] = None
    weights: Optional[CompareTableRef] = None


@dataclass(frozen=True)
class CompareTolerances:
    """How close recsys must come to BigQuery ML for the compare job's verdict to pass.

    The defaults are the run-to-run spread of BigQuery ML's own objective on the shipped sample
    (two NumPy fits that differ only in the random start), with margin; see
    ``benchmarks/bqml_spread.py`` and docs/compare.md for the measured figures."""

    # Measured worst over 6 seed pairs: 0.0047, 0.0495, 0.9936, 0.656 (docs/compare.md).
    metric_relative_difference: float = 0.01
    prediction_rmse: float = 0.10
    prediction_correlation: float = 0.98
    mean_overlap_at_k: float = 0.5


@dataclass(frozen=True)
class CompareConfig:
    """The compare job: BigQuery ML's outputs against a recsys run's."""

    bqml: CompareTables = field(default_factory=CompareTables)
    recsys: CompareTables = field(default_factory=CompareTables)
    ratings: Optional[CompareTableRef] = None
    movies: Optional[CompareTableRef] = None
    output: str = "compare_report"
    top_k: int = 5
    bins: int = 40
    avro_package: str = "auto"
    tolerances: CompareTolerances = field(default_factory=CompareTolerances)
    fail_on_mismatch: bool = False

    def refs(self):
        """Every configured reference as (dotted key, ref)."""
        out = []
        for side in ("bqml", "recsys"):
            tables = getattr(self, side)
            out += [(f"compare.{side}.{name}", getattr(tables, name)) for name in COMPARE_OUTPUTS
                    if getattr(tables, name) is not None]
        out += [(f"compare.{name}", getattr(self, name)) for name in ("ratings", "movies")
                if getattr(self, name) is not None]
        return out


@dataclass(frozen=True)
class Config:
    """The whole job configuration."""

    source: SourceConfig = field(default_factory=SourceConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    bigquery: BigQueryConfig = field(default_factory=BigQueryConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


def load_config(path: Optional[str], overrides: typing.Sequence[str] = (),
                job: Optional[str] = None) -> Config:
    """Read a YAML file (or start from defaults when ``path`` is None) and apply overrides.

    ``job`` (the jobs/<job>.py name) limits validation to what that job reads: the compare job
    needs no ``source``; it needs at least one ``compare.bqml`` table."""
    raw: dict = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    for item in overrides:
        _apply_override(raw, item)
    cfg = _build(Config, raw, "")
    _validate(cfg, job)
    return cfg


def to_dict(cfg: Any) -> Any:
    """Plain-dict view of a config object, for logging and model metadata."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
    parts = _override_path(key.strip().split("."))
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def _override_path(parts: list) -> list:
    """Key path of an override; below a mapping field (spark.conf) the rest is one key."""
    cls: Any = Config
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            break
        hints = typing.get_type_hints(cls)
        tp = hints.get(part)
        if tp is None:
            break
        if _is_mapping(tp):
            rest = ".".join(parts[depth + 1:])
            return parts[: depth + 1] + ([rest] if rest else [])
        cls = tp
    return parts


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0] if len(inner) == 1 else typing.Union[tuple(inner)], value, key)
    if origin is typing.Union:  # Union[str, Tuple[str, ...]]: one value or a list of them
        listed = [a for a in args if typing.get_origin(a) is tuple]
        single = [a for a in args if typing.get_origin(a) is not tuple]
        if listed and isinstance(value, (list, tuple)):
            return _coerce(listed[0], value, key)
        return _coerce(single[0], value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if _is_mapping(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return types.MappingProxyType({str(k): _scalar_str(v) for k, v in value.items()})
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"config key '{key}' must be a non-empty list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if value is None:
        raise ConfigError(f"config key '{key}' must not be empty")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def _is_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) in (collections.abc.Mapping, dict)


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _validate(cfg: Config, job: Optional[str] = None) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    src, ing, mod, rec = cfg.source, cfg.ingest, cfg.model, cfg.recommend
    need(src.format in SOURCE_FORMATS,
         f"source.format must be one of {', '.join(SOURCE_FORMATS)}, got {src.format!r}")
    need(job == "compare" or src.download or src.ratings is not None,
         "source.ratings is required unless source.download is true")
    need(not src.download or src.format in ("ml-1m", "ml-100k") or src.url is not None,
         f"source.download needs source.url for format {src.format!r}")
    need(cfg.bigquery.write_method in WRITE_METHODS,
         f"bigquery.write_method must be one of {', '.join(WRITE_METHODS)}, "
         f"got {cfg.bigquery.write_method!r}")
    need(cfg.bigquery.write_method != "indirect" or cfg.bigquery.temporary_gcs_bucket is not None,
         "bigquery.write_method indirect needs bigquery.temporary_gcs_bucket")
    for key, ref in (("source.ratings", src.ratings), ("source.movies", src.movies)):
        need(src.format != "bigquery" or ref is None or isinstance(ref, str),
             f"{key} must be one table id or query for source.format bigquery, got a list")
    if src.format == "bigquery" and cfg.sink.type == "bigquery":
        for key, ref in (("source.ratings", src.ratings), ("source.movies", src.movies)):
            clash = ref is not None and ref.split(".")[-2:] in (
                [cfg.sink.dataset, "ratings"], [cfg.sink.dataset, "movies"])
            need(not clash, f"{key} {ref!r} would be overwritten by the ingest job's output; "
                            f"write to another sink.dataset")
    need(len(src.delimiter) == 1, f"source.delimiter must be one character, got {src.delimiter!r}")
    need(ing.rating_min < ing.rating_max,
         f"ingest.rating_min ({ing.rating_min}) must be below ingest.rating_max ({ing.rating_max})")
    need(0.0 <= ing.max_reject_fraction <= 1.0,
         f"ingest.max_reject_fraction must be between 0 and 1, got {ing.max_reject_fraction}")
    need(mod.solver in SOLVERS,
         f"model.solver must be one of {', '.join(SOLVERS)}, got {mod.solver!r}")
    need(mod.solver == "spark_als" or mod.reg_param is None,
         "model.reg_param is pyspark.ml ALS's own penalty: it needs model.solver spark_als "
         "(bigquery_ml takes model.l2_reg as BigQuery ML does)")
    need(mod.solver == "spark_als" or mod.training_info == "final",
         "model.training_info every_iteration is for model.solver spark_als (bigquery_ml "
         "records every iteration from the pass that trains)")
    need(mod.reg_param_rule in ("default", *REG_PARAM_RULES),
         f"model.reg_param_rule must be default or one of {', '.join(REG_PARAM_RULES)}, "
         f"got {mod.reg_param_rule!r}")
    need(mod.intercept_l2_reg is None or mod.intercept_l2_reg > 0,
         f"model.intercept_l2_reg must be > 0, got {mod.intercept_l2_reg}")
    need(mod.broadcast_max_mb >= 0,
         f"model.broadcast_max_mb must be >= 0, got {mod.broadcast_max_mb}")
    need(mod.checkpoint_interval >= 0,
         f"model.checkpoint_interval must be >= 0, got {mod.checkpoint_interval}")
    need(mod.feedback_type in FEEDBACK_TYPES,
         f"model.feedback_type must be one of {', '.join(FEEDBACK_TYPES)}, got {mod.feedback_type!r}")
    need(mod.num_factors is None or 2 <= mod.num_factors <= 200,
         f"model.num_factors must be between 2 and 200, got {mod.num_factors}")
    need(mod.l2_reg > 0, f"model.l2_reg must be > 0, got {mod.l2_reg}")
    need(mod.reg_param is None or mod.reg_param >= 0,
         f"model.reg_param must be >= 0, got {mod.reg_param}")
    need(mod.max_iterations >= 1, f"model.max_iterations must be >= 1, got {mod.max_iterations}")
    need(mod.wals_alpha >= 0, f"model.wals_alpha must be >= 0, got {mod.wals_alpha}")
    need(mod.num_blocks is None or mod.num_blocks >= 1,
         f"model.num_blocks must be >= 1, got {mod.num_blocks}")
    need(mod.training_info in TRAINING_INFO_MODES,
         f"model.training_info must be one of {', '.join(TRAINING_INFO_MODES)}, "
         f"got {mod.training_info!r}")
    need(mod.min_rel_progress >= 0,
         f"model.min_rel_progress must be >= 0, got {mod.min_rel_progress}")
    need(mod.data_split_method.lower() in SPLIT_METHODS,
         f"model.data_split_method must be one of {', '.join(SPLIT_METHODS)}, "
         f"got {mod.data_split_method!r}")
    need(0.0 < mod.data_split_eval_fraction < 1.0,
         f"model.data_split_eval_fraction must be between 0 and 1, got {mod.data_split_eval_fraction}")
    need(mod.data_split_method.lower() not in ("custom", "seq") or mod.data_split_col is not None,
         f"model.data_split_method {mod.data_split_method} needs model.data_split_col")
    tun = cfg.tuning
    need(tun.num_trials >= 0, f"tuning.num_trials must be >= 0, got {tun.num_trials}")
    need(tun.algorithm in ("grid", "random"),
         f"tuning.algorithm must be grid or random, got {tun.algorithm!r}")
    need(0.0 < tun.validation_fraction < 1.0,
         f"tuning.validation_fraction must be between 0 and 1, got {tun.validation_fraction}")
    need(all(2 <= f <= 200 for f in tun.num_factors), "tuning.num_factors must be within 2..200")
    # The search lists get the checks of the model keys they stand for.
    for key, values, ok, rule in (
            ("l2_reg", tun.l2_reg, lambda v: v > 0, "> 0"),
            ("intercept_l2_reg", tun.intercept_l2_reg, lambda v: v > 0, "> 0"),
            ("reg_param", tun.reg_param, lambda v: v >= 0, ">= 0"),
            ("wals_alpha", tun.wals_alpha, lambda v: v >= 0, ">= 0")):
        bad = [v for v in values if not ok(v)]
        need(not bad, f"tuning.{key} values must be {rule}, got {bad[0] if bad else None}")
    need(rec.top_k >= 1, f"recommend.top_k must be >= 1, got {rec.top_k}")
    need(rec.min_item_ratings >= 0,
         f"recommend.min_item_ratings must be >= 0, got {rec.min_item_ratings}")
    need(cfg.sink.type in SINK_TYPES,
         f"sink.type must be one of {', '.join(SINK_TYPES)}, got {cfg.sink.type!r}")
    for key, value in (("sink.dataset", cfg.sink.dataset), ("model.name", mod.name)):
        need(_is_identifier(value),
             f"{key} must be letters, digits and underscores (at most 1024), got {value!r}")
    for key, value in (("model.user_col", mod.user_col), ("model.item_col", mod.item_col),
                       ("model.rating_col", mod.rating_col)):
        need(_is_identifier(value), f"{key} must be a column name, got {value!r}")
    if "bigquery" in (cfg.sink.type, src.format):
        _validate_bigquery_refs(cfg, need)
    _validate_compare(cfg.compare, need)
    if job == "compare":
        need(any(key.startswith("compare.bqml.") for key, _ in cfg.compare.refs()),
             "compare: nothing to compare: set at least one compare.bqml.* table "
             f"({', '.join(COMPARE_OUTPUTS)})")


def _validate_bigquery_refs(cfg: Config, need) -> None:
    """Project and table ids that will reach BigQuery are checked before any job starts."""
    from recsys.schemas import is_query, validate_table_id, valid_project

    project = cfg.bigquery.project
    need(project is None or valid_project(project),
         f"bigquery.project {project!r} is not a valid project id")
    refs = [("model.input", cfg.model.input), ("evaluate.input", cfg.evaluate.input),
            ("recommend.input", cfg.recommend.input)]
    if cfg.source.format == "bigquery":
        refs += [("source.ratings", cfg.source.ratings), ("source.movies", cfg.source.movies)]
    for key, ref in refs:
        if ref is None or "/" in ref or is_query(ref):
            continue  # a Parquet path, or a query (run as given, never spliced into SQL)
        if "." in ref:
            validate_table_id(ref, key)
        else:
            need(_is_identifier(ref),
                 f"{key} must be a table name (letters, digits, underscores), got {ref!r}")


def _validate_compare(cmp: CompareConfig, need) -> None:
    need(cmp.top_k >= 1, f"compare.top_k must be >= 1, got {cmp.top_k}")
    need(2 <= cmp.bins <= 200, f"compare.bins must be between 2 and 200, got {cmp.bins}")
    need(bool(cmp.output.strip()), "compare.output must not be empty")
    need("://" not in cmp.output,
         f"compare.output must be a local folder (the report is written with local file IO), "
         f"got {cmp.output!r}")
    tol = cmp.tolerances
    for name in ("metric_relative_difference", "prediction_rmse"):
        need(getattr(tol, name) >= 0, f"compare.tolerances.{name} must be >= 0, "
                                      f"got {getattr(tol, name)}")
    for name in ("prediction_correlation", "mean_overlap_at_k"):
        need(-1.0 <= getattr(tol, name) <= 1.0 if name == "prediction_correlation"
             else 0.0 <= getattr(tol, name) <= 1.0,
             f"compare.tolerances.{name} must be within "
             f"{'-1..1' if name == 'prediction_correlation' else '0..1'}, "
             f"got {getattr(tol, name)}")
    need(bool(cmp.avro_package.strip()), "compare.avro_package must not be empty")
    for key, ref in cmp.refs():
        need((ref.path is None) != (ref.table is None),
             f"{key} needs exactly one of 'path' (files) or 'table'")
        need(ref.format is None or ref.format in COMPARE_FORMATS,
             f"{key}.format must be one of {', '.join(COMPARE_FORMATS)}, got {ref.format!r}")
        need(ref.format is None or ref.path is not None, f"{key}.format applies to 'path' only")
        need(ref.path is None or ref.resolved_format() is not None,
             f"{key}.format is needed: cannot tell the format of {ref.path!r} "
             f"(one of {', '.join(COMPARE_FORMATS)})")


def _is_identifier(value: str) -> bool:
    return 0 < len(value) <= 1024 and all(c.isascii() and (c.isalnum() or c == "_") for c in value)
