"""The compare job's inputs: BigQuery ML's outputs (files written by ``bq extract``, or BigQuery
tables) and the recsys run's (by default the sink's tables), read and checked before anything is
written, in the stages' canonical columns (``recsys.compare.frames``).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession

from recsys import paths, schemas
from recsys.compare import frames
from recsys.compare.frames import LABELS, SIDES
from recsys.config import COMPARE_OUTPUTS, CompareTableRef, Config
from recsys.errors import ConfigError, InputError
from recsys.session import PROVIDED_JAR_DIRS, provided_jar

# The recsys table holding each BigQuery ML output.
RECSYS_TABLES = {"evaluate": schemas.EVALUATE, "training_info": schemas.TRAINING_INFO,
                 "recommend": schemas.RECOMMEND, "top5": schemas.RECOMMEND_TOP,
                 "weights": schemas.WEIGHTS}


def avro_conf(package: str, spark_version: str, jar_dirs: tuple = PROVIDED_JAR_DIRS
              ) -> Optional[str]:
    """The Maven coordinate of spark-avro to add to ``spark.jars.packages`` (None: provided).

    >>> avro_conf("auto", "4.0.1", jar_dirs=())
    'org.apache.spark:spark-avro_2.13:4.0.1'
    >>> avro_conf("auto", "3.5.8", jar_dirs=())
    'org.apache.spark:spark-avro_2.12:3.5.8'
    """
    if package == "provided":
        return None
    if package != "auto":
        return package
    if provided_jar("spark-avro", jar_dirs):
        return None
    scala = "2.13" if spark_version.startswith("4") else "2.12"
    return f"org.apache.spark:spark-avro_{scala}:{spark_version}"


def read_files(spark: SparkSession, path: str, fmt: str, key: str) -> DataFrame:
    """Files written by ``bq extract`` (a path or glob) as a DataFrame, columns as exported
    (CSV columns are all text; JSON INT64 values are text, as BigQuery writes them)."""
    if paths.is_local(path) and not glob.glob(paths.local_path(path)):
        raise InputError(f"{key}: no file matches {path}")
    location = paths.local_path(path) if paths.is_local(path) else path
    reader = spark.read
    try:
        if fmt == "csv":
            # bq extract: RFC 4180 (quote ", doubled to escape), header row, NULL = empty field.
            return (reader.option("header", "true").option("escape", '"')
                    .option("multiLine", "true").csv(location))
        if fmt == "json":
            return reader.json(location)
        if fmt == "parquet":
            return reader.parquet(location)
        return reader.format("avro").load(location)
    except Exception as exc:  # noqa: BLE001 - turned into one line for the user
        text = str(exc)
        if fmt == "avro" and "avro" in text.lower() and "data source" in text.lower():
            raise ConfigError(f"{key}: this Spark session has no Avro reader; run jobs/compare.py "
                              f"(it adds spark-avro when an input is Avro) or set "
                              f"compare.avro_package") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise InputError(f"{key}: cannot read {fmt} {path}: {first}") from None


def read_ref(spark: SparkSession, cfg: Config, sink, ref: CompareTableRef, key: str) -> DataFrame:
    """A configured reference: files, a BigQuery table id or query, or a sink table name."""
    if ref.path is not None:
        return read_files(spark, ref.path, ref.resolved_format(), key)
    if ref.is_bigquery():
        from recsys.bigquery import BigQueryConnection  # late: needs the connector's jars

        return BigQueryConnection(cfg.bigquery).read(spark, ref.table, cfg.sink.dataset)
    return sink.read(spark, ref.table)


def describe_ref(ref: Optional[CompareTableRef], default: str) -> str:
    """Where a side's table came from, for the report."""
    if ref is None:
        return f"sink table `{default}`"
    if ref.path is not None:
        return f"{ref.resolved_format()} `{ref.path}`"
    return f"table `{ref.table}`"


@dataclass(frozen=True)
class ComparedInputs:
    """Every compared output of both sides, in canonical columns (lazy frames whose files,
    schemas and columns were checked), and what the report says about where they came from."""

    pairs: Mapping[str, Tuple[DataFrame, DataFrame]]  # output -> (bqml, recsys)
    sources: Mapping[str, Mapping[str, str]]          # output -> side -> description
    notes: Tuple[str, ...]                            # id types, outputs left out
    ratings: Optional[DataFrame]                      # rating counts (popularity)
    movies: Optional[DataFrame]                       # titles -> ids

    def pair(self, name: str) -> Optional[Tuple[DataFrame, DataFrame]]:
        """The output's (bqml, recsys) frames; None when it is not compared."""
        return self.pairs.get(name)


@dataclass(frozen=True)
class _SideTable:
    df: Optional[DataFrame]
    source: Optional[str] = None  # for the report's Inputs
    fmt: Optional[str] = None
    note: Optional[str] = None    # why there is none


def read_inputs(spark: SparkSession, cfg: Config, sink) -> ComparedInputs:
    """Read and check both sides of every output; an output without a BigQuery ML table or a
    recsys counterpart is left out (with a note)."""
    pairs: Dict[str, Tuple[DataFrame, DataFrame]] = {}
    sources: Dict[str, Dict[str, str]] = {}
    notes: List[str] = []
    for name in COMPARE_OUTPUTS:
        tables = {}
        for side in SIDES:  # the recsys side is not read when BigQuery ML's is not set
            table = _read_side(spark, cfg, sink, side, name)
            if table.source is not None:
                sources.setdefault(name, {})[side] = table.source
            if table.df is None:
                notes.append(table.note)
                break
            tables[side] = table
        if len(tables) < len(SIDES):
            continue
        if name == "recommend":
            for side in SIDES:
                notes += frames.id_type_notes(LABELS[side], tables[side].df,
                                              [cfg.model.user_col, cfg.model.item_col])
        pairs[name] = tuple(_canonical(name, tables[side].df, f"compare.{side}.{name}",
                                       tables[side].fmt, cfg) for side in SIDES)
    ratings, movies = (_read_extra(spark, cfg, sink, name) for name in ("ratings", "movies"))
    return ComparedInputs(pairs, sources, tuple(notes), ratings, movies)


def _read_side(spark: SparkSession, cfg: Config, sink, side: str, name: str) -> _SideTable:
    ref = getattr(getattr(cfg.compare, side), name)
    if ref is not None:
        source = describe_ref(ref, "")
        df = read_ref(spark, cfg, sink, ref, f"compare.{side}.{name}")
        return _SideTable(df, source, ref.resolved_format())
    if side == "bqml":
        return _SideTable(None, note=f"compare.bqml.{name} not set: {name} not compared")
    table = RECSYS_TABLES[name]
    if not sink.exists(table):
        return _SideTable(None, note=f"recsys table `{table}` not found: {name} not compared")
    return _SideTable(sink.read(spark, table), describe_ref(None, table))


def _canonical(name: str, df: DataFrame, key: str, fmt: Optional[str], cfg: Config
               ) -> DataFrame:
    m = cfg.model
    cols = dict(user_col=m.user_col, item_col=m.item_col,
                pred_col=schemas.prediction_col(m.rating_col))
    if name == "recommend":
        return frames.predictions_frame(df, key=key, **cols)
    if name == "top5":
        return frames.topk_frame(df, key=key, fmt=fmt, **cols)
    if name == "weights":
        return frames.intercepts_frame(df, key=key, user_col=m.user_col, item_col=m.item_col)
    if name == "evaluate":
        frames.evaluate_values(df, key)  # checks the one row
    else:
        frames.need_columns(df, ["iteration", "loss"], key)
    return df


def _read_extra(spark: SparkSession, cfg: Config, sink, name: str) -> Optional[DataFrame]:
    """The ratings or movies table: compare.<name>, else the sink's table (None: neither)."""
    ref = getattr(cfg.compare, name)
    if ref is not None:
        return read_ref(spark, cfg, sink, ref, f"compare.{name}")
    return sink.read(spark, name) if sink.exists(name) else None
