"""config: the typed, frozen configuration of a job, loaded from YAML with ``--set
dotted.key=value`` overrides. ``schema`` holds every key and its default, once; ``loading``
reads the YAML, applies the overrides and builds the dataclasses; ``validation`` checks the
values a type cannot. Imports the foundations only (errors, schemas).

This package face hands on the names the other packages use (``from recsys.config import
load_config``)."""

from recsys.config.loading import load_config, to_dict
from recsys.config.schema import (COMPARE_EXTENSIONS, COMPARE_FORMATS, COMPARE_OUTPUTS,
                                  FEEDBACK_TYPES, REG_PARAM_RULES, SINK_TYPES, SOLVERS,
                                  SOURCE_FORMATS, SPLIT_METHODS, TRAINING_INFO_MODES,
                                  WRITE_METHODS, BigQueryConfig, CompareConfig,
                                  CompareTableRef, CompareTables, CompareTolerances, Config,
                                  EvaluateConfig, IngestConfig, ModelConfig, MovieColumns,
                                  RatingColumns, RecommendConfig, SinkConfig, SourceConfig,
                                  SparkConfig, TuningConfig)

__all__ = [
    "COMPARE_EXTENSIONS", "COMPARE_FORMATS", "COMPARE_OUTPUTS", "FEEDBACK_TYPES",
    "REG_PARAM_RULES", "SINK_TYPES", "SOLVERS", "SOURCE_FORMATS", "SPLIT_METHODS",
    "TRAINING_INFO_MODES", "WRITE_METHODS", "BigQueryConfig", "CompareConfig",
    "CompareTableRef", "CompareTables", "CompareTolerances", "Config", "EvaluateConfig",
    "IngestConfig", "ModelConfig", "MovieColumns", "RatingColumns", "RecommendConfig",
    "SinkConfig", "SourceConfig", "SparkConfig", "TuningConfig", "load_config", "to_dict",
]
