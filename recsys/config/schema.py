"""The config's schema: every section and key, with its type and default, once, as frozen
dataclasses, and the values a key may take. ``recsys.config.loading`` builds them from YAML;
``recsys.config.validation`` checks what one value's type cannot tell."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple, Union

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
    # A saved model (a model name of the sink's dataset, or a model folder) whose user factors
    # start the fit instead of the seeded ones (bigquery_ml).
    warm_start: Optional[str] = None


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
    # (user, item, rating) rows of users the model has not seen: each is solved against the
    # model's fixed items and ranked like a training user.
    fold_in: Optional[str] = None


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
