"""Compare a recsys run against BigQuery ML's own output (the compare job).

BigQuery ML's side is read from BigQuery tables (through the connector) or from files exported
with ``bq extract`` (CSV with a header, newline-delimited JSON, Parquet, Avro), in BigQuery ML's
column names: ML.EVALUATE's row, ML.TRAINING_INFO, the ML.RECOMMEND table, the tutorial's top-5
table and ML.WEIGHTS. The recsys side defaults to the sink's tables of the same outputs.

Ids are compared as text: INT64 ids become their decimal digits, so an INT64 side matches a
STRING side (and a CSV export, where every column is text). Ids on one side only are counted,
never silently dropped. Latent factors are identified only up to a rotation (any orthogonal Q
gives the same predictions with X Q and Y Q), so factors are not compared; predictions and
intercepts are.

Every ``compare_*`` stage takes DataFrames and returns a DataFrame; ``run_compare`` reads and
checks every input first (``prepare_inputs``), compares, writes the tables through the sink,
judges the verdict (``recsys.verdict``) and writes ``report.md`` and ``report.html``
(``recsys.html_report``) with SVG plots. BigQuery ML's top-5 table is the tutorial's query as
BigQuery leaves it (``f0_``, titles only); every one of its users is compared.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import html_report, verdict
from recsys import report as rpt
from recsys import schemas
from recsys.config import COMPARE_OUTPUTS, CompareTableRef, Config
from recsys.errors import EXIT_MISMATCH, ConfigError, InputError
from recsys.pipeline import Report, StageTimer
from recsys.session import PROVIDED_JAR_DIRS, provided_jar
from recsys.sinks import make_sink

# The recsys table holding each BigQuery ML output.
RECSYS_TABLES = {"evaluate": schemas.EVALUATE, "training_info": schemas.TRAINING_INFO,
                 "recommend": schemas.RECOMMEND, "top5": schemas.RECOMMEND_TOP,
                 "weights": schemas.WEIGHTS}
SIDES = ("bqml", "recsys")
LABELS = {"bqml": "BigQuery ML", "recsys": "recsys"}
# Canonical columns of the stages: ids as STRING.
USER, ITEM, PRED, RANK, TITLE = "user", "item", "prediction", "rank", "title"


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


# --- reading -----------------------------------------------------------------------------------

def read_files(spark: SparkSession, path: str, fmt: str, key: str) -> DataFrame:
    """Files written by ``bq extract`` (a path or glob) as a DataFrame, columns as exported
    (CSV columns are all text; JSON INT64 values are text, as BigQuery writes them)."""
    local = path[len("file://"):] if path.startswith("file://") else path
    if "://" not in local and not glob.glob(os.path.expanduser(local)):
        raise InputError(f"{key}: no file matches {path}")
    location = os.path.expanduser(local) if "://" not in local else path
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
        from recsys.bigquery import BigQueryConnection

        return BigQueryConnection(cfg.bigquery).read(spark, ref.table, cfg.sink.dataset)
    return sink.read(spark, ref.table)


def describe_ref(ref: Optional[CompareTableRef], default: str) -> str:
    """Where a side's table came from, for the report."""
    if ref is None:
        return f"sink table `{default}`"
    if ref.path is not None:
        return f"{ref.resolved_format()} `{ref.path}`"
    return f"table `{ref.table}`"


# --- ids and columns ---------------------------------------------------------------------------

def type_name(dtype: T.DataType) -> str:
    """BigQuery's name of a Spark type (as the report shows it)."""
    if isinstance(dtype, (T.LongType, T.IntegerType, T.ShortType, T.ByteType)):
        return "INT64"
    if isinstance(dtype, (T.DoubleType, T.FloatType)):
        return "FLOAT64"
    if isinstance(dtype, T.StringType):
        return "STRING"
    return dtype.simpleString().upper()


def id_text(col: Column, dtype: T.DataType) -> Column:
    """An id as text: integers as digits, integral floats without '.0', text trimmed."""
    if isinstance(dtype, T.StringType):
        return F.trim(col)
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        return F.when(col == F.floor(col), col.cast("long").cast("string")).otherwise(
            col.cast("string"))
    if isinstance(dtype, T.DecimalType) and dtype.scale == 0:
        return col.cast("string")
    return col.cast("string")


def _need(df: DataFrame, columns, key: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{key}: missing column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(df.columns) or 'none'}){hint}")


def _prediction_name(names, wanted: str, key: str) -> str:
    if wanted in names:
        return wanted
    found = [n for n in names if n.startswith("predicted_")]
    if len(found) != 1:
        raise InputError(f"{key}: no prediction column {wanted!r} (columns: {', '.join(names)})")
    return found[0]


def _double(col: Column) -> Column:
    return col.cast("double")


# --- stages: one side's table in BigQuery ML's columns -> canonical columns ----------------------

def predictions_frame(df: DataFrame, *, user_col: str, item_col: str, pred_col: str,
                      key: str) -> DataFrame:
    """ML.RECOMMEND output -> (user STRING, item STRING, prediction DOUBLE)."""
    _need(df, [user_col, item_col], key)
    pred = _prediction_name(df.columns, pred_col, key)
    return df.select(id_text(F.col(user_col), df.schema[user_col].dataType).alias(USER),
                     id_text(F.col(item_col), df.schema[item_col].dataType).alias(ITEM),
                     _double(F.col(pred)).alias(PRED))


def list_column(df: DataFrame, key: str, fmt: Optional[str] = None) -> Optional[str]:
    """The top-k table's list column: the one ARRAY<STRUCT> column, whatever its name (the
    tutorial's ``ARRAY_AGG(STRUCT(...))`` has no alias, so BigQuery names it ``f0_``), or
    ``recommendations``; None for a flat (UNNEST-ed) table."""
    nested = [f.name for f in df.schema.fields if isinstance(f.dataType, T.ArrayType)
              and isinstance(f.dataType.elementType, T.StructType)]
    if len(nested) > 1:
        nested = [n for n in nested if n == "recommendations"] or nested
    if len(nested) > 1:
        raise InputError(f"{key}: several ARRAY<STRUCT> columns ({', '.join(nested)}); keep "
                         f"the top-k list only")
    if nested:
        return nested[0]
    for name in ("recommendations", "f0_"):
        if name in df.columns:
            dtype = type_name(df.schema[name].dataType)
            hint = (": bq extract cannot write nested columns to CSV; export as "
                    "NEWLINE_DELIMITED_JSON, AVRO or PARQUET, or flatten it with UNNEST"
                    if fmt == "csv" else "")
            raise InputError(f"{key}: {name!r} is {dtype}, not ARRAY<STRUCT>{hint}")
    return None


def topk_frame(df: DataFrame, *, user_col: str, item_col: str, pred_col: str,
               key: str, fmt: Optional[str] = None) -> DataFrame:
    """The top-k table -> (user, rank, item, title, prediction), rank from 1.

    Nested (an ARRAY<STRUCT<...>> column as the tutorial builds it: ``f0_`` when the
    ``ARRAY_AGG`` has no alias, or ``recommendations``; in list order) or flat, one
    recommendation per row (``SELECT user_id, r.* FROM top5, UNNEST(f0_) r``, the only shape
    ``bq extract`` can write to CSV), ranked by prediction (ties by item/title). ``item`` is
    NULL when the table has no item ids (the tutorial's struct has titles only).
    """
    _need(df, [user_col], key)
    user = id_text(F.col(user_col), df.schema[user_col].dataType).alias(USER)
    nested = list_column(df, key, fmt)
    if nested is not None:
        fields = {f.name: f.dataType for f in df.schema[nested].dataType.elementType.fields}
        pred = _prediction_name(list(fields), pred_col, f"{key}.{nested}")
        exploded = df.select(user, F.posexplode(nested).alias("pos", "r"))
        item = (id_text(F.col(f"r.{item_col}"), fields[item_col]) if item_col in fields
                else F.lit(None).cast("string"))
        title = (F.trim(F.col("r.movie_title").cast("string")) if "movie_title" in fields
                 else F.lit(None).cast("string"))
        return exploded.select(USER, (F.col("pos") + 1).cast("long").alias(RANK),
                               item.alias(ITEM), title.alias(TITLE),
                               _double(F.col(f"r.{pred}")).alias(PRED))
    if item_col not in df.columns and "movie_title" not in df.columns:
        hint = (" (bq extract cannot write the nested top-5 table to CSV: flatten it with "
                "UNNEST, or export NEWLINE_DELIMITED_JSON, AVRO or PARQUET)" if fmt == "csv"
                else "")
        raise InputError(f"{key}: no top-k list: expected an ARRAY<STRUCT> column (the "
                         f"tutorial's unaliased ARRAY_AGG, which BigQuery names f0_) or flat "
                         f"{item_col!r} / 'movie_title' columns (columns: "
                         f"{', '.join(df.columns)}){hint}")
    pred = _prediction_name(df.columns, pred_col, key)
    item = (id_text(F.col(item_col), df.schema[item_col].dataType) if item_col in df.columns
            else F.lit(None).cast("string"))
    title = (F.trim(F.col("movie_title").cast("string")) if "movie_title" in df.columns
             else F.lit(None).cast("string"))
    flat = df.select(user, item.alias(ITEM), title.alias(TITLE), _double(F.col(pred)).alias(PRED))
    return _ranked(flat)


def title_index(movies: DataFrame) -> DataFrame:
    """The movies table -> (title, ids): every movie id (as text, sorted) of each title."""
    _need(movies, ["movie_id", "movie_title"], "compare.movies")
    return (movies.select(F.trim(F.col("movie_title").cast("string")).alias(TITLE),
                          id_text(F.col("movie_id"), movies.schema["movie_id"].dataType)
                          .alias(ITEM))
            .where(F.col(TITLE).isNotNull())
            .groupBy(TITLE).agg(F.array_sort(F.collect_set(ITEM)).alias("ids")))


def resolve_titles(top: DataFrame, titles: DataFrame, other: DataFrame) -> DataFrame:
    """Item ids for a titles-only top-k table through the movies table's ``titles`` index.

    A title of one movie -> its id. A title shared by several movies (ambiguous) -> the one of
    them in the ``other`` side's list for that user, if any, else the smallest id. A title not
    in the movies table -> ``title:<title>`` (matches no id). Adds ``title_ids``: how many
    movies have the title (0 unknown, >1 ambiguous)."""
    from pyspark.sql import Window

    known = (other.where(F.col(ITEM).isNotNull())
             .select(USER, F.col(ITEM).alias("cand"), F.lit(True).alias("in_other")).distinct())
    cands = (top.drop(ITEM).join(titles, TITLE, "left")
             .select("*", F.explode_outer("ids").alias("cand"))
             .join(known, [USER, "cand"], "left"))
    order = Window.partitionBy(USER, RANK).orderBy(
        F.coalesce(F.col("in_other"), F.lit(False)).desc(),
        F.col("cand").cast("long").asc_nulls_last(), F.col("cand").asc_nulls_last())
    first = cands.select("*", F.row_number().over(order).alias("_n")).where(F.col("_n") == 1)
    return first.select(USER, RANK,
                        F.coalesce(F.col("cand"), F.concat(F.lit("title:"), F.col(TITLE)))
                        .alias(ITEM), TITLE, PRED,
                        F.when(F.col("ids").isNull(), F.lit(0)).otherwise(F.size("ids"))
                        .cast("long").alias("title_ids"))


def with_titles(top: DataFrame, titles: DataFrame) -> DataFrame:
    """Fill a top-k table's missing titles from the movies table (by item id)."""
    by_id = titles.select(F.explode("ids").alias(ITEM), F.col(TITLE).alias("_t"))
    return (top.join(by_id, ITEM, "left")
            .select(USER, RANK, ITEM, F.coalesce(TITLE, "_t").alias(TITLE), PRED))


def _ranked(df: DataFrame) -> DataFrame:
    from pyspark.sql import Window

    # Ties by the smaller item id: numerically for integer ids (kept as text), else as text.
    order = Window.partitionBy(USER).orderBy(F.col(PRED).desc_nulls_last(),
                                             F.expr(f"try_cast({ITEM} AS BIGINT)").asc_nulls_last(),
                                             F.col(ITEM).asc(), F.col(TITLE).asc())
    return df.select(USER, F.row_number().over(order).cast("long").alias(RANK), ITEM, TITLE, PRED)


def topk_from_predictions(predictions: DataFrame, k: int) -> DataFrame:
    """Top k of a (user, item, prediction) frame: prediction DESC, ties by the smaller item."""
    ranked = _ranked(predictions.select(USER, ITEM, F.lit(None).cast("string").alias(TITLE),
                                        PRED))
    return ranked.where(F.col(RANK) <= k)


def intercepts_frame(df: DataFrame, *, user_col: str, item_col: str, key: str) -> DataFrame:
    """ML.WEIGHTS -> (processed_input, feature, intercept, n_factors); the global row has
    processed_input NULL and feature 'global__intercept__'."""
    _need(df, ["processed_input", "feature", "intercept"], key)
    factors = (F.size("factor_weights") if "factor_weights" in df.columns
               and isinstance(df.schema["factor_weights"].dataType, T.ArrayType)
               else F.lit(None)).cast("long")
    glob_row = F.col("feature") == schemas.GLOBAL_INTERCEPT_FEATURE
    return df.select(
        F.when(glob_row, F.lit(None)).otherwise(F.col("processed_input").cast("string"))
        .alias("processed_input"),
        id_text(F.col("feature"), df.schema["feature"].dataType).alias("feature"),
        _double(F.col("intercept")).alias("intercept"),
        F.when(F.coalesce(factors, F.lit(-1)) >= 0, factors).alias("n_factors"))


# --- stages: comparisons -----------------------------------------------------------------------

def metric_order(names) -> List[str]:
    """BigQuery ML's metric order first, then any other column."""
    known = [n for n in (*schemas.EXPLICIT_METRICS, *schemas.IMPLICIT_METRICS) if n in names]
    return list(dict.fromkeys(known + sorted(n for n in names if n not in known)))


def evaluate_values(df: DataFrame, key: str) -> Dict[str, Optional[float]]:
    """ML.EVALUATE's one row as {metric: value} (text columns of a CSV export parsed)."""
    rows = df.collect()
    if len(rows) != 1:
        raise InputError(f"{key}: ML.EVALUATE has one row, got {len(rows)}")
    values = {}
    for name, value in rows[0].asDict().items():
        try:
            values[name] = None if value in (None, "") else float(value)
        except (TypeError, ValueError):
            continue  # not a metric (e.g. a trial_id text column)
    return values


def compare_metrics(spark: SparkSession, bqml: DataFrame, recsys: DataFrame,
                    key: str = "evaluate") -> DataFrame:
    """Two ML.EVALUATE rows -> (metric, bqml, recsys, difference = recsys - bqml)."""
    values = {side: evaluate_values(df, f"compare.{side}.{key}")
              for side, df in (("bqml", bqml), ("recsys", recsys))}
    names = metric_order(set(values["bqml"]) | set(values["recsys"]))
    rows = []
    for name in names:
        b, r = values["bqml"].get(name), values["recsys"].get(name)
        rows.append((name, b, r, None if b is None or r is None else r - b))
    return spark.createDataFrame(rows, schemas.COMPARE_METRICS_SCHEMA).coalesce(1)


def _loss_rows(df: DataFrame, key: str) -> Dict[int, Tuple[Optional[float], Optional[float]]]:
    _need(df, ["iteration", "loss"], key)
    run = F.col("training_run").cast("long") if "training_run" in df.columns else F.lit(0)
    eval_loss = _double(F.col("eval_loss")) if "eval_loss" in df.columns else F.lit(None)
    rows = df.select(run.alias("run"), F.col("iteration").cast("long").alias("it"),
                     _double(F.col("loss")).alias("loss"),
                     eval_loss.cast("double").alias("eval")).collect()
    last_run = max((r.run for r in rows if r.run is not None), default=None)
    return {r.it: (r.loss, r.eval) for r in rows if r.run == last_run and r.it is not None}


def compare_training(spark: SparkSession, bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """Two ML.TRAINING_INFO tables (the last training run of each) side by side by iteration."""
    b = _loss_rows(bqml, "compare.bqml.training_info")
    r = _loss_rows(recsys, "compare.recsys.training_info")
    rows = [(it, b.get(it, (None, None))[0], r.get(it, (None, None))[0],
             b.get(it, (None, None))[1], r.get(it, (None, None))[1])
            for it in sorted(set(b) | set(r))]
    return spark.createDataFrame(rows, schemas.COMPARE_TRAINING_SCHEMA).coalesce(1)


def dedupe_predictions(df: DataFrame) -> DataFrame:
    """One prediction per (user, item): the mean of repeated rows."""
    return df.groupBy(USER, ITEM).agg(F.avg(PRED).alias(PRED))


def joined_predictions(bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """The pairs both sides predicted: (user, item, bqml, recsys)."""
    return (bqml.select(USER, ITEM, F.col(PRED).alias("bqml"))
            .join(recsys.select(USER, ITEM, F.col(PRED).alias("recsys")), [USER, ITEM]))


def spearman(df: DataFrame, x: str, y: str) -> Optional[float]:
    """Spearman's rank correlation (average ranks for ties), distributed (pyspark.ml)."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.stat import Correlation

    vec = VectorAssembler(inputCols=[x, y], outputCol="v").transform(
        df.select(x, y).where(F.col(x).isNotNull() & F.col(y).isNotNull()))
    value = float(Correlation.corr(vec, "v", "spearman").head()[0].toArray()[0, 1])
    return None if math.isnan(value) else value


def compare_predictions(spark: SparkSession, bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """Pair-level agreement of two (user, item, prediction) frames (one row each per pair)."""
    joined = joined_predictions(bqml, recsys).cache()
    n_b, n_r = bqml.count(), recsys.count()
    agg = joined.select(
        F.count(F.lit(1)).alias("n"),
        F.sqrt(F.avg((F.col("recsys") - F.col("bqml")) ** 2)).alias("rmse"),
        F.avg(F.abs(F.col("recsys") - F.col("bqml"))).alias("mad"),
        F.avg(F.col("recsys") - F.col("bqml")).alias("md"),
        F.corr("bqml", "recsys").alias("pearson")).head()
    n = agg["n"]
    pearson = agg["pearson"]
    pearson = None if pearson is None or math.isnan(pearson) else pearson
    rho = spearman(joined, "bqml", "recsys") if n >= 2 else None
    joined.unpersist()
    row = (n_b, n_r, n, n_b - n, n_r - n, agg["rmse"], agg["mad"], agg["md"], pearson, rho)
    return spark.createDataFrame([row], schemas.COMPARE_PREDICTIONS_SCHEMA).coalesce(1)


def _lists(top: DataFrame, k: int, by: str) -> DataFrame:
    keyed = top.where((F.col(RANK) <= k) & F.col(by).isNotNull())
    return keyed.groupBy(USER).agg(
        F.transform(F.sort_array(F.collect_list(F.struct(RANK, by))), lambda s: s[by])
        .alias("items"))


def compare_topk(bqml: DataFrame, recsys: DataFrame, k: int, by: str = ITEM) -> DataFrame:
    """Per user of BigQuery ML's top-k table: overlap (|A ∩ B|), overlap@k (|A ∩ B| / k),
    Jaccard (|A ∩ B| / |A ∪ B|), same set, same order. A user recsys has no list for has
    ``recsys_items`` NULL and overlap 0. ``by``: ``item`` or ``title``."""
    b = _lists(bqml, k, by).withColumnRenamed("items", "bqml_items")
    r = _lists(recsys, k, by).withColumnRenamed("items", "recsys_items")
    both = b.join(r, USER, "left")
    r_items = F.coalesce(F.col("recsys_items"), F.array().cast("array<string>"))
    inter = F.size(F.array_intersect("bqml_items", r_items))
    union = F.size(F.array_union("bqml_items", r_items))
    return both.select(
        F.col(USER).alias("user"), "bqml_items", "recsys_items",
        inter.cast("long").alias("overlap"), (inter / F.lit(float(k))).alias("overlap_at_k"),
        F.when(union > 0, inter / union).alias("jaccard"),
        ((F.size(F.array_except("bqml_items", r_items)) == 0)
         & (F.size(F.array_except(r_items, "bqml_items")) == 0)).alias("same_set"),
        F.coalesce(F.col("bqml_items") == F.col("recsys_items"), F.lit(False))
        .alias("same_order"))


def id_counts(what: str, bqml: DataFrame, recsys: DataFrame) -> tuple:
    """(what, bqml, recsys, compared, bqml_only, recsys_only) of two one-column id frames."""
    b, r = bqml.distinct().cache(), recsys.distinct().cache()
    col = b.columns[0]
    n_b, n_r = b.count(), r.count()
    both = b.join(r.toDF(col), col).count()
    b.unpersist(), r.unpersist()
    return (what, n_b, n_r, both, n_b - both, n_r - both)


def compare_intercepts(bqml: DataFrame, recsys: DataFrame) -> DataFrame:
    """Intercepts of the features on both sides (and the global one), with recsys - bqml."""
    b = bqml.select("processed_input", "feature", F.col("intercept").alias("bqml"))
    r = recsys.select("processed_input", "feature", F.col("intercept").alias("recsys"))
    cond = [b.feature == r.feature, b.processed_input.eqNullSafe(r.processed_input)]
    return b.join(r, cond).select(b.processed_input, b.feature, "bqml", "recsys",
                                  (F.col("recsys") - F.col("bqml")).alias("difference"))


def binned(df: DataFrame, x: str, y: str, bins: int):
    """Counts of (x, y) points on a bins x bins grid over one common range (for ``density``)."""
    lo_hi = df.select(F.least(F.min(x), F.min(y)).alias("lo"),
                      F.greatest(F.max(x), F.max(y)).alias("hi")).head()
    lo, hi = lo_hi["lo"], lo_hi["hi"]
    if lo is None:
        return [[0] * bins for _ in range(bins)], (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins

    def index(col):
        return F.least(F.floor((F.col(col) - lo) / width), F.lit(bins - 1)).cast("int")

    grid = [[0] * bins for _ in range(bins)]
    for row in df.groupBy(index(x).alias("i"), index(y).alias("j")).count().collect():
        grid[row["i"]][row["j"]] = row["count"]
    return grid, (lo, hi)


# --- the job -----------------------------------------------------------------------------------

class _Inputs:
    """The configured tables of both sides, read lazily; None when a side has none."""

    def __init__(self, spark: SparkSession, cfg: Config, sink):
        self.spark, self.cfg, self.sink = spark, cfg, sink
        self.notes: List[str] = []
        self.sources: Dict[str, Dict[str, str]] = {}
        self.formats: Dict[Tuple[str, str], Optional[str]] = {}
        self._extras: Dict[str, Optional[DataFrame]] = {}

    def get(self, side: str, name: str) -> Optional[DataFrame]:
        ref = getattr(getattr(self.cfg.compare, side), name)
        key = f"compare.{side}.{name}"
        if ref is None:
            if side == "bqml":
                return None
            table = RECSYS_TABLES[name]
            if not self.sink.exists(table):
                self.notes.append(f"recsys table `{table}` not found: {name} not compared")
                return None
            self.sources.setdefault(name, {})[side] = describe_ref(None, table)
            return self.sink.read(self.spark, table)
        self.sources.setdefault(name, {})[side] = describe_ref(ref, "")
        self.formats[(side, name)] = ref.resolved_format()
        return read_ref(self.spark, self.cfg, self.sink, ref, key)

    def extra(self, name: str) -> Optional[DataFrame]:
        """The ratings or movies table (read once): compare.<name>, else the sink's table."""
        if name not in self._extras:
            ref = getattr(self.cfg.compare, name)
            if ref is not None:
                df = read_ref(self.spark, self.cfg, self.sink, ref, f"compare.{name}")
            else:
                df = self.sink.read(self.spark, name) if self.sink.exists(name) else None
            self._extras[name] = df
        return self._extras[name]


def run_compare(spark: SparkSession, cfg: Config, report: Optional[Report] = None) -> Report:
    """Read and check both sides, write the ``compare_*`` tables, then
    ``<compare.output>/report.md`` (opening with the verdict) and ``report.html``; with
    ``compare.fail_on_mismatch`` the report's exit code is 4 unless the verdict is PASS."""
    report = report or Report("compare")
    sink = make_sink(cfg)
    c, m = cfg.compare, cfg.model
    inputs = _Inputs(spark, cfg, sink)
    md: List[str] = ["# recsys against BigQuery ML", ""]
    svgs: List[Tuple[str, str]] = []
    counts: List[tuple] = []
    sections: List[str] = []
    compared = []
    # Every input is read and checked (files, columns, the ML.EVALUATE row) before anything is
    # written, so a bad input leaves no partial compare_* tables behind.
    with StageTimer(report, "inputs"):
        prepared = prepare_inputs(inputs, cfg)
    figures: Dict[str, object] = {}  # what the verdict judges

    def both(name):
        return prepared.get(name) or (None, None)

    def write(name, df):
        report.tables[name] = sink.write(name, df)
        return sink.read(spark, name)

    # ML.EVALUATE
    with StageTimer(report, "evaluate"):
        b, r = both("evaluate")
        if b is not None:
            metrics = write(schemas.COMPARE_METRICS, compare_metrics(spark, b, r)).collect()
            order = {name: i for i, name in enumerate(metric_order([x.metric for x in metrics]))}
            metrics = sorted(metrics, key=lambda x: order[x.metric])
            compared.append("evaluate")
            sections += ["## ML.EVALUATE", "",
                         *rpt.md_table(["metric", "BigQuery ML", "recsys",
                                        "difference (recsys − BigQuery ML)", "relative"],
                                       [(x.metric, _v(x.bqml), _v(x.recsys), _v(x.difference),
                                         _rel(x.difference, x.bqml)) for x in metrics]), ""]
            figures["metrics"] = {x.metric: (x.bqml, x.recsys) for x in metrics}
            for x in metrics:
                report.metrics[x.metric] = x.difference
                report.add(f"  evaluate   {x.metric:<24} bqml {rpt.fmt(x.bqml, 6):>10}  "
                           f"recsys {rpt.fmt(x.recsys, 6):>10}  diff {rpt.fmt(x.difference, 4)}")

    # ML.TRAINING_INFO
    with StageTimer(report, "training_info"):
        b, r = both("training_info")
        if b is not None:
            loss = write(schemas.COMPARE_TRAINING, compare_training(spark, b, r)).orderBy(
                "iteration").collect()
            compared.append("training_info")
            its = [x.iteration for x in loss]
            series = [("BigQuery ML loss", its, [x.bqml_loss for x in loss]),
                      ("recsys loss", its, [x.recsys_loss for x in loss])]
            if any(x.bqml_eval_loss is not None or x.recsys_eval_loss is not None for x in loss):
                series += [("BigQuery ML eval_loss", its, [x.bqml_eval_loss for x in loss]),
                           ("recsys eval_loss", its, [x.recsys_eval_loss for x in loss])]
            svgs.append(("loss.svg", rpt.line_chart(series, title="Training loss by iteration",
                                                    xlabel="iteration (from 0)",
                                                    ylabel="loss (training MSE)")))
            n_b = sum(x.bqml_loss is not None for x in loss)
            n_r = sum(x.recsys_loss is not None for x in loss)
            last = {side: next((getattr(x, f"{side}_loss") for x in reversed(loss)
                                if getattr(x, f"{side}_loss") is not None), None)
                    for side in SIDES}
            counts.append(("training iterations", n_b, n_r,
                           sum(x.bqml_loss is not None and x.recsys_loss is not None
                               for x in loss), None, None))
            sections += ["## Training loss (ML.TRAINING_INFO)", "",
                         f"BigQuery ML: {n_b} iteration rows, last loss {rpt.fmt(last['bqml'], 6)}; "
                         f"recsys: {n_r} iteration rows, last loss {rpt.fmt(last['recsys'], 6)}. "
                         "(recsys writes one row unless `model.training_info: every_iteration`.)",
                         "", "![training loss](loss.svg)", "",
                         *rpt.md_table(["iteration", "BigQuery ML loss", "recsys loss",
                                        "BigQuery ML eval_loss", "recsys eval_loss"],
                                       [(str(x.iteration), _v(x.bqml_loss), _v(x.recsys_loss),
                                         _v(x.bqml_eval_loss), _v(x.recsys_eval_loss))
                                        for x in loss]), ""]
            report.add(f"  training   last loss bqml {rpt.fmt(last['bqml'], 6)}, "
                       f"recsys {rpt.fmt(last['recsys'], 6)}")

    # ML.RECOMMEND
    preds = {}
    with StageTimer(report, "recommend"):
        b, r = both("recommend")
        if b is not None:
            for side, frame in (("bqml", b), ("recsys", r)):
                raw_rows = frame.count()
                preds[side] = dedupe_predictions(frame).cache()
                dup = raw_rows - preds[side].count()
                if dup:
                    inputs.notes.append(f"{LABELS[side]} recommend: {dup:,} repeated (user, item) "
                                        f"rows averaged")
            stats = write(schemas.COMPARE_PREDICTIONS,
                          compare_predictions(spark, preds["bqml"], preds["recsys"])).head()
            figures["prediction_rmse"] = stats.rmse
            figures["prediction_correlation"] = stats.pearson
            compared.append("recommend")
            counts.append(("recommend users", *id_counts(
                "", preds["bqml"].select(USER), preds["recsys"].select(USER))[1:]))
            counts.append(("recommend items", *id_counts(
                "", preds["bqml"].select(ITEM), preds["recsys"].select(ITEM))[1:]))
            counts.append(("recommend (user, item) pairs", stats.pairs_bqml, stats.pairs_recsys,
                           stats.pairs_compared, stats.pairs_bqml_only, stats.pairs_recsys_only))
            grid, rng = binned(joined_predictions(preds["bqml"], preds["recsys"]),
                               "bqml", "recsys", c.bins)
            svgs.append(("predictions.svg", rpt.density(
                grid, rng, rng, title="Predicted rating on the same (user, item) pairs",
                xlabel="BigQuery ML predicted_rating", ylabel="recsys predicted_rating")))
            sections += ["## Predictions on the same (user, item) pairs (ML.RECOMMEND)", "",
                         f"{rpt.fmt(stats.pairs_compared)} pairs predicted by both sides "
                         f"({rpt.fmt(stats.pairs_bqml_only)} only by BigQuery ML, "
                         f"{rpt.fmt(stats.pairs_recsys_only)} only by recsys).", "",
                         *rpt.md_table(["statistic", "value"], [
                             ("RMSE between the two predictions", _v(stats.rmse)),
                             ("mean absolute difference", _v(stats.mean_abs_difference)),
                             ("mean difference (recsys − BigQuery ML)", _v(stats.mean_difference)),
                             ("Pearson correlation", _v(stats.pearson)),
                             ("Spearman correlation (average ranks for ties)", _v(stats.spearman)),
                         ]), "", "![predictions](predictions.svg)", ""]
            report.add(f"  recommend  {stats.pairs_compared:,} pairs compared: RMSE "
                       f"{rpt.fmt(stats.rmse)}, Pearson {rpt.fmt(stats.pearson)}, Spearman "
                       f"{rpt.fmt(stats.spearman)}")

    # Top k
    with StageTimer(report, "top_k"):
        sections += _topk_section(spark, cfg, inputs, prepared, write, svgs, counts, report,
                                  compared)

    # ML.WEIGHTS
    with StageTimer(report, "weights"):
        b, r = both("weights")
        if b is not None:
            frames = {"bqml": b.cache(), "recsys": r.cache()}
            table = write(schemas.COMPARE_INTERCEPTS,
                          compare_intercepts(frames["bqml"], frames["recsys"]))
            compared.append("weights")
            sections += _intercepts_section(table, frames, m, c.bins, svgs, counts, report)
            for frame in frames.values():
                frame.unpersist()
    for frame in preds.values():
        frame.unpersist()

    if not compared:
        raise InputError("compare: nothing to compare: no compare.bqml.* table has a recsys "
                         "counterpart")
    if counts:
        write(schemas.COMPARE_COUNTS, spark.createDataFrame(
            counts, schemas.COMPARE_COUNTS_SCHEMA).coalesce(1))
    figures["mean_overlap_at_k"] = report.metrics.get("mean_overlap_at_k")
    outcome = verdict.judge(c.tolerances, figures, c.top_k)
    write(schemas.COMPARE_VERDICT, spark.createDataFrame(
        verdict.rows(outcome), schemas.COMPARE_VERDICT_SCHEMA).coalesce(1))
    md += verdict.markdown(outcome, c.fail_on_mismatch)
    md += _inputs_section(inputs, compared)
    if counts:
        md += ["## What was compared", "",
               *rpt.md_table(["what", "BigQuery ML", "recsys", "compared", "BigQuery ML only",
                              "recsys only"], [tuple(_v(v) if i else v for i, v in enumerate(row))
                                               for row in counts]), ""]
    md += sections
    out = os.path.abspath(os.path.expanduser(c.output))
    text = "\n".join(md) + "\n"
    rpt.write_files(out, [*svgs, ("report.md", text),
                          ("report.html", html_report.render(text, dict(svgs)))])
    report.add(f"  verdict    {outcome.status}: " + "; ".join(
        f"{x.name} {rpt.fmt(x.figure)} ({x.rule} {rpt.fmt(x.tolerance)}) "
        f"{'ok' if x.passed else 'FAIL' if x.passed is False else 'not evaluated'}"
        for x in outcome.criteria))
    report.add(f"  report     {os.path.join(out, 'report.md')} and report.html "
               f"({len(svgs)} plots)")
    report.add(f"  tables in  {sink.dataset_dir}: {', '.join(sorted(report.tables))}")
    if c.fail_on_mismatch and outcome.status != verdict.PASS:
        report.exit_code = EXIT_MISMATCH
    return report


def prepare_inputs(inputs: "_Inputs", cfg: Config) -> Dict[str, Tuple[DataFrame, DataFrame]]:
    """Every compared output of both sides, read and in canonical columns (lazy frames whose
    files, schemas and columns are checked here), keyed by output name; an output without a
    BigQuery ML table or a recsys counterpart is left out (with a note)."""
    m = cfg.model
    cols = dict(user_col=m.user_col, item_col=m.item_col,
                pred_col=schemas.prediction_col(m.rating_col))
    out = {}
    for name in COMPARE_OUTPUTS:
        b = inputs.get("bqml", name)
        if b is None:
            inputs.notes.append(f"compare.bqml.{name} not set: {name} not compared")
            continue
        r = inputs.get("recsys", name)
        if r is None:
            continue
        pair = {}
        for side, df in (("bqml", b), ("recsys", r)):
            key, fmt = f"compare.{side}.{name}", inputs.formats.get((side, name))
            if name == "recommend":
                inputs.notes += _id_type_notes(side, df, [m.user_col, m.item_col])
                df = predictions_frame(df, key=key, **cols)
            elif name == "top5":
                df = topk_frame(df, key=key, fmt=fmt, **cols)
            elif name == "weights":
                df = intercepts_frame(df, key=key, user_col=m.user_col, item_col=m.item_col)
            elif name == "evaluate":
                evaluate_values(df, key)
            else:
                _need(df, ["iteration", "loss"], key)
            pair[side] = df
        out[name] = (pair["bqml"], pair["recsys"])
    for name in ("ratings", "movies"):
        inputs.extra(name)
    return out


def _v(value):
    """Keep ints as ints and floats as floats for md_table (None stays None)."""
    return value


def _rel(diff: Optional[float], base: Optional[float]) -> str:
    if diff is None or base in (None, 0):
        return "NULL"
    return f"{100 * diff / abs(base):+.2f}%"


def _id_type_notes(side: str, df: DataFrame, columns) -> List[str]:
    notes = []
    for col in columns:
        if col in df.columns:
            notes.append(f"{LABELS[side]} `{col}` is {type_name(df.schema[col].dataType)}")
    return notes


def _inputs_section(inputs: _Inputs, compared: List[str]) -> List[str]:
    rows = [(name, src.get("bqml", "—"), src.get("recsys", "—"))
            for name, src in inputs.sources.items()]
    out = ["## Inputs", "", *rpt.md_table(["output", "BigQuery ML", "recsys"], rows), "",
           f"Compared: {', '.join(compared)}. Ids are compared as text (INT64 ids as their "
           f"digits), so INT64 on one side matches STRING on the other.", ""]
    types = sorted(set(n for n in inputs.notes if " is " in n and "`" in n))
    others = [n for n in inputs.notes if n not in types]
    if types:
        out += ["Id types: " + "; ".join(types) + ".", ""]
    out += [f"- {n}" for n in dict.fromkeys(others)]
    return out + ([""] if others else [])


@dataclass(frozen=True)
class TopkMatch:
    """Both sides' top-k tables keyed the same way (``by``: item ids or titles)."""

    bqml: DataFrame
    recsys: DataFrame
    by: str
    how: str
    ambiguous_titles: Optional[int] = None  # distinct titles shared by several movies
    unknown_titles: Optional[int] = None    # distinct titles not in the movies table


def match_topk(b: DataFrame, r: DataFrame, titles: Optional[DataFrame], k: int) -> TopkMatch:
    """Key BigQuery ML's top-k lists like recsys's: by item id where a side has ids, else by
    title through the movies table (``titles`` from ``title_index``; None: not given)."""
    b_ids = b.where(F.col(ITEM).isNotNull()).limit(1).count() > 0
    r_ids = r.where(F.col(ITEM).isNotNull()).limit(1).count() > 0
    if b_ids and r_ids:
        return TopkMatch(b, r, ITEM, "item id (both top-k tables have item ids)")
    if titles is None or not r_ids:
        if titles is not None:
            b, r = with_titles(b, titles), with_titles(r, titles)
        return TopkMatch(b, r, TITLE, "movie title (a side has no item ids"
                         + (" and no movies table was given" if titles is None else
                            ", so neither can be mapped") + "; ambiguous titles not counted)")
    side, other = (b, r) if not b_ids else (r, b)
    resolved = resolve_titles(side.where(F.col(RANK) <= k), titles,
                              other.where(F.col(RANK) <= k)).cache()
    counts = resolved.groupBy(TITLE).agg(F.max("title_ids").alias("n")).select(
        F.sum((F.col("n") > 1).cast("long")).alias("amb"),
        F.sum((F.col("n") == 0).cast("long")).alias("unk")).head()
    name = "BigQuery ML's" if not b_ids else "recsys's"
    how = (f"item id: {name} top-k table has titles only (the tutorial's struct), mapped to "
           f"ids through the movies table; a title shared by several movies counts as the one "
           f"of them in the other list, else the smallest id")
    resolved = resolved.drop("title_ids")
    pair = (resolved, r) if not b_ids else (b, resolved)
    return TopkMatch(*pair, ITEM, how, counts["amb"] or 0, counts["unk"] or 0)


def topk_popularity(per_user: DataFrame, match: TopkMatch, ratings: Optional[DataFrame],
                    movies: Optional[DataFrame], item_col: str, k: int) -> dict:
    """Distinct items, catalogue coverage and rating counts of the recommended items over the
    users compared, per side (rating counts need the ratings table)."""
    by = match.by
    users = per_user.select(F.col("user").alias(USER))
    recs = {side: top.where((F.col(RANK) <= k) & F.col(by).isNotNull()).join(users, USER)
            .select(USER, F.col(by).alias("key"))
            for side, top in (("bqml", match.bqml), ("recsys", match.recsys))}
    out = {"distinct": {side: recs[side].select("key").distinct().count() for side in SIDES},
           "catalogue": None, "pop": {side: (None, None) for side in SIDES}}
    if ratings is None:
        return out
    popularity = ratings.select(id_text(F.col(item_col), ratings.schema[item_col].dataType)
                                .alias("key")).groupBy("key").count()
    if by == TITLE:
        if movies is None:
            return out
        popularity = (popularity.join(title_index(movies).select(
            F.explode("ids").alias("key"), F.col(TITLE).alias("t")), "key")
            .groupBy("t").agg(F.sum("count").alias("count")).withColumnRenamed("t", "key"))
    out["catalogue"] = popularity.count()
    for side in SIDES:
        row = (recs[side].join(popularity, "key", "left")
               .select(F.coalesce(F.col("count"), F.lit(0)).alias("c"))
               .select(F.avg("c").alias("mean"), F.expr("percentile(c, 0.5)").alias("median"))
               .head())
        out["pop"][side] = (row["mean"], row["median"])
    return out


def _topk_section(spark, cfg, inputs, prepared, write, svgs, counts, report, compared):
    c, m = cfg.compare, cfg.model
    k = c.top_k
    if prepared.get("top5") is None:
        return []
    b, r = prepared["top5"]
    movies = inputs.extra("movies")
    match = match_topk(b, r, title_index(movies) if movies is not None else None, k)
    per_user = write(schemas.COMPARE_TOPK, compare_topk(match.bqml, match.recsys, k,
                                                        match.by)).cache()
    users = id_counts("", match.bqml.select(USER), match.recsys.select(USER))
    agg = per_user.select(F.count(F.lit(1)).alias("n"), F.avg("overlap_at_k").alias("o"),
                          F.avg("jaccard").alias("j"),
                          F.sum(F.col("same_set").cast("long")).alias("s"),
                          F.sum(F.col("same_order").cast("long")).alias("so")).head()
    dist = {row["overlap"]: row["count"] for row in per_user.groupBy("overlap").count().collect()}
    pop = topk_popularity(per_user, match, inputs.extra("ratings"), movies, m.item_col, k)
    cat, distinct = pop["catalogue"], pop["distinct"]
    coverage = {side: (distinct[side] / cat if cat else None) for side in SIDES}
    summary = (k, match.by, agg["n"], users[4], users[5], agg["o"], agg["j"], agg["s"] or 0,
               agg["so"] or 0, cat, distinct["bqml"], distinct["recsys"],
               coverage["bqml"], coverage["recsys"], pop["pop"]["bqml"][0],
               pop["pop"]["recsys"][0], pop["pop"]["bqml"][1], pop["pop"]["recsys"][1],
               match.ambiguous_titles, match.unknown_titles)
    write(schemas.COMPARE_TOPK_SUMMARY, spark.createDataFrame(
        [summary], schemas.COMPARE_TOPK_SUMMARY_SCHEMA).coalesce(1))
    per_user.unpersist()
    counts.append(("top-k users", *users[1:]))
    compared.append("top5")
    report.metrics["mean_overlap_at_k"] = agg["o"]
    svgs.append(("overlap.svg", rpt.bar_chart(
        [str(i) for i in range(k + 1)], [dist.get(i, 0) for i in range(k + 1)],
        title=f"Items shared by the two top-{k} lists, per user",
        xlabel=f"overlap (items in both top-{k} lists)", ylabel="users")))
    report.add(f"  top {k}      {agg['n']:,} users compared by {match.by}: mean overlap@{k} "
               f"{rpt.fmt(agg['o'])}, mean Jaccard {rpt.fmt(agg['j'])}, "
               f"{agg['s'] or 0:,} identical sets")
    return _topk_lines(k, match, agg, users, dist, distinct, cat, coverage, pop,
                       inputs.extra("ratings") is not None)


def _topk_lines(k, match, agg, users, dist, distinct, cat, coverage, pop, has_ratings):
    rows = [
        ("users compared (every user of BigQuery ML's top-k table)", agg["n"]),
        (f"mean overlap@{k} (items in both lists / {k}; no recsys list counts 0)", agg["o"]),
        ("mean Jaccard (|A ∩ B| / |A ∪ B|)", agg["j"]),
        ("users with identical lists (same items)", agg["s"] or 0),
        ("users with identical lists (same items, same order)", agg["so"] or 0),
    ]
    if match.ambiguous_titles is not None:
        rows += [("titles shared by several movies (ambiguous)", match.ambiguous_titles),
                 ("titles not in the movies table", match.unknown_titles)]
    side_rows = [
        ("distinct items recommended", distinct["bqml"], distinct["recsys"]),
        (f"catalogue coverage (of {rpt.fmt(cat)} items)", coverage["bqml"], coverage["recsys"]),
        ("mean rating count of recommended items", pop["pop"]["bqml"][0],
         pop["pop"]["recsys"][0]),
        ("median rating count of recommended items", pop["pop"]["bqml"][1],
         pop["pop"]["recsys"][1]),
    ]
    source = "the ratings table" if has_ratings else "no ratings table (not computed)"
    return ["## Top-k recommendations", "",
            f"Lists matched by {match.how}; the first {k} of each list; over every user of "
            f"BigQuery ML's top-k table ({rpt.fmt(users[4])} of them have no recsys list, "
            f"{rpt.fmt(users[5])} recsys users are not in BigQuery ML's table). Rating counts "
            f"from {source}.",
            "", *rpt.md_table(["statistic", "value"], rows), "",
            "![overlap distribution](overlap.svg)", "",
            *rpt.md_table(["per side", "BigQuery ML", "recsys"], side_rows), "",
            *rpt.md_table([f"overlap (of {k})", "users"],
                          [(str(i), dist.get(i, 0)) for i in range(k + 1)]), ""]


def _intercepts_section(table, frames, m, bins, svgs, counts, report):
    kinds = ((m.user_col, "user"), (m.item_col, "item"))
    lines = ["## Intercepts (ML.WEIGHTS)", "",
             "Latent factors are identified only up to a rotation (any orthogonal Q turns X, Y "
             "into XQ, YQ with the same predictions), so raw factor weights are not compared; "
             "predictions (above) and intercepts are.", ""]
    glob_rows = table.where(F.col("processed_input").isNull()).collect()
    g = glob_rows[0] if glob_rows else None
    factors = {side: frames[side].select(F.max("n_factors")).head()[0] for side in SIDES}
    rows = [("global intercept", g.bqml if g else None, g.recsys if g else None,
             g.difference if g else None),
            ("number of factors", factors["bqml"], factors["recsys"],
             None if None in factors.values() else factors["recsys"] - factors["bqml"])]
    stats_rows = []
    for col, kind in kinds:
        part = table.where(F.col("processed_input") == col)
        s = part.select(F.count(F.lit(1)).alias("n"),
                        F.sqrt(F.avg(F.col("difference") ** 2)).alias("rmse"),
                        F.avg("difference").alias("md"),
                        F.corr("bqml", "recsys").alias("r")).head()
        pearson = None if s["r"] is None or math.isnan(s["r"]) else s["r"]
        stats_rows.append((f"{kind} intercepts", s["n"], s["rmse"], s["md"], pearson))
        counts.append((f"weights {kind}s", *id_counts(
            "", frames["bqml"].where(F.col("processed_input") == col).select("feature"),
            frames["recsys"].where(F.col("processed_input") == col).select("feature"))[1:]))
        if s["n"]:
            grid, rng = binned(part, "bqml", "recsys", bins)
            svgs.append((f"intercepts_{kind}.svg", rpt.density(
                grid, rng, rng, title=f"{kind.capitalize()} intercepts",
                xlabel="BigQuery ML intercept", ylabel="recsys intercept")))
    report.add(f"  weights    global intercept bqml {rpt.fmt(rows[0][1], 6)}, recsys "
               f"{rpt.fmt(rows[0][2], 6)}; " + "; ".join(
                   f"{r[0]} RMSE {rpt.fmt(r[2])} over {r[1]:,}" for r in stats_rows))
    lines += [*rpt.md_table(["", "BigQuery ML", "recsys", "difference (recsys − BigQuery ML)"],
                            rows), "",
              *rpt.md_table(["", "compared", "RMSE of the difference", "mean difference",
                             "Pearson"], stats_rows), ""]
    lines += [f"![{kind} intercepts](intercepts_{kind}.svg)" for _, kind in kinds
              if any(name == f"intercepts_{kind}.svg" for name, _ in svgs)]
    return lines + [""]
