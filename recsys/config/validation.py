"""Validation of a built config: the checks one key's type cannot tell (ranges, choices, keys
that need each other, BigQuery ids, the compare job's tables), each failing with a one-line
``ConfigError`` that names the dotted key."""

from __future__ import annotations

from typing import Optional

from recsys.config.schema import (COMPARE_FORMATS, COMPARE_OUTPUTS, FEEDBACK_TYPES,
                                  REG_PARAM_RULES, SINK_TYPES, SOLVERS, SOURCE_FORMATS,
                                  SPLIT_METHODS, TRAINING_INFO_MODES, WRITE_METHODS,
                                  CompareConfig, Config)
from recsys.errors import ConfigError


def validate(cfg: Config, job: Optional[str] = None) -> None:
    """Raise ``ConfigError`` for the first impossible value of ``cfg``; ``job`` as for
    ``load_config``."""

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
    need(mod.warm_start is None or mod.solver == "bigquery_ml",
         "model.warm_start needs model.solver bigquery_ml (pyspark.ml ALS takes no starting "
         "factors)")
    need(mod.warm_start is None or bool(mod.warm_start.strip()),
         "model.warm_start must name a model or a model folder")
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
            ("recommend.input", cfg.recommend.input),
            ("recommend.fold_in", cfg.recommend.fold_in)]
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
