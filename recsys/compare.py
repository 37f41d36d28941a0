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

Every ``compare_*`` stage takes DataFrames and returns a DataFrame; ``run_compare`` reads,
compares, writes the tables through the sink, and writes ``report.md`` with SVG plots.
"""

from __future__ import annotations

import glob
import math
import os
from typing import Dict, List, Optional, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import report as rpt
from recsys import schemas
from recsys.config import CompareTableRef, Config
from recsys.errors import ConfigError, InputError
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


def topk_frame(df: DataFrame, *, user_col: str, item_col: str, pred_col: str,
               key: str) -> DataFrame:
    """The top-k table -> (user, rank, item, title, prediction), rank from 1.

    Nested (``recommendations ARRAY<STRUCT<...>>``, as the tutorial builds it, in list order) or
    flat, one recommendation per row (``SELECT user_id, r.* FROM top5, UNNEST(recommendations) r``,
    the only shape ``bq extract`` can write to CSV), ranked by prediction (ties by item/title).
    ``item`` is NULL when the table has no item ids (the tutorial's struct has none).
    """
    _need(df, [user_col], key)
    user = id_text(F.col(user_col), df.schema[user_col].dataType).alias(USER)
    if "recommendations" in df.columns:
        dtype = df.schema["recommendations"].dataType
        if not (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.StructType)):
            raise InputError(f"{key}: 'recommendations' is {type_name(dtype)}, not "
                             f"ARRAY<STRUCT>: bq extract cannot write nested columns to CSV; "
                             f"export as NEWLINE_DELIMITED_JSON, AVRO or PARQUET, or flatten it "
                             f"with UNNEST")
        fields = {f.name: f.dataType for f in dtype.elementType.fields}
        pred = _prediction_name(list(fields), pred_col, key)
        exploded = df.select(user, F.posexplode("recommendations").alias("pos", "r"))
        item = (id_text(F.col(f"r.{item_col}"), fields[item_col]) if item_col in fields
                else F.lit(None).cast("string"))
        title = (F.col("r.movie_title").cast("string") if "movie_title" in fields
                 else F.lit(None).cast("string"))
        return exploded.select(USER, (F.col("pos") + 1).cast("long").alias(RANK),
                               item.alias(ITEM), title.alias(TITLE),
                               _double(F.col(f"r.{pred}")).alias(PRED))
    if item_col not in df.columns and "movie_title" not in df.columns:
        raise InputError(f"{key}: no 'recommendations' column and no {item_col!r} or "
                         f"'movie_title' column (columns: {', '.join(df.columns)}); bq extract "
                         f"cannot write the nested top-5 table to CSV: export it as "
                         f"NEWLINE_DELIMITED_JSON, AVRO or PARQUET, or flatten it with UNNEST")
    pred = _prediction_name(df.columns, pred_col, key)
    item = (id_text(F.col(item_col), df.schema[item_col].dataType) if item_col in df.columns
            else F.lit(None).cast("string"))
    title = (F.col("movie_title").cast("string") if "movie_title" in df.columns
             else F.lit(None).cast("string"))
    flat = df.select(user, item.alias(ITEM), title.alias(TITLE), _double(F.col(pred)).alias(PRED))
    return _ranked(flat)


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


def compare_metrics(spark: SparkSession, bqml: DataFrame, recsys: DataFrame,
                    key: str = "evaluate") -> DataFrame:
    """Two ML.EVALUATE rows -> (metric, bqml, recsys, difference = recsys - bqml)."""
    values = {}
    for side, df in (("bqml", bqml), ("recsys", recsys)):
        rows = df.collect()
        if len(rows) != 1:
            raise InputError(f"compare.{side}.{key}: ML.EVALUATE has one row, got {len(rows)}")
        values[side] = {}
        for name, value in rows[0].asDict().items():
            try:
                values[side][name] = None if value in (None, "") else float(value)
            except (TypeError, ValueError):
                continue  # not a metric (e.g. a trial_id text column)
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
    """Per user in both top-k tables: overlap (|A ∩ B|), overlap@k (|A ∩ B| / k), Jaccard
    (|A ∩ B| / |A ∪ B|), same set, same order. ``by``: ``item`` or ``title``."""
    b = _lists(bqml, k, by).withColumnRenamed("items", "bqml_items")
    r = _lists(recsys, k, by).withColumnRenamed("items", "recsys_items")
    both = b.join(r, USER)
    inter = F.size(F.array_intersect("bqml_items", "recsys_items"))
    union = F.size(F.array_union("bqml_items", "recsys_items"))
    return both.select(
        F.col(USER).alias("user"), "bqml_items", "recsys_items",
        inter.cast("long").alias("overlap"), (inter / F.lit(float(k))).alias("overlap_at_k"),
        F.when(union > 0, inter / union).alias("jaccard"),
        ((F.size(F.array_except("bqml_items", "recsys_items")) == 0)
         & (F.size(F.array_except("recsys_items", "bqml_items")) == 0)).alias("same_set"),
        (F.col("bqml_items") == F.col("recsys_items")).alias("same_order"))


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
        return read_ref(self.spark, self.cfg, self.sink, ref, key)

    def extra(self, name: str) -> Optional[DataFrame]:
        ref = getattr(self.cfg.compare, name)
        if ref is not None:
            return read_ref(self.spark, self.cfg, self.sink, ref, f"compare.{name}")
        return self.sink.read(self.spark, name) if self.sink.exists(name) else None


def run_compare(spark: SparkSession, cfg: Config, report: Optional[Report] = None) -> Report:
    """Read both sides, write the ``compare_*`` tables and ``<compare.output>/report.md``."""
    report = report or Report("compare")
    sink = make_sink(cfg)
    c, m = cfg.compare, cfg.model
    inputs = _Inputs(spark, cfg, sink)
    cols = dict(user_col=m.user_col, item_col=m.item_col,
                pred_col=schemas.prediction_col(m.rating_col))
    md: List[str] = ["# recsys against BigQuery ML", ""]
    svgs: List[Tuple[str, str]] = []
    counts: List[tuple] = []
    sections: List[str] = []
    compared = []

    def both(name):
        b = inputs.get("bqml", name)
        if b is None:
            inputs.notes.append(f"compare.bqml.{name} not set: {name} not compared")
            return None, None
        r = inputs.get("recsys", name)
        return (b, r) if r is not None else (None, None)

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
            for side, df in (("bqml", b), ("recsys", r)):
                frame = predictions_frame(df, key=f"compare.{side}.recommend", **cols)
                inputs.notes += _id_type_notes(side, df, [m.user_col, m.item_col])
                raw_rows = frame.count()
                preds[side] = dedupe_predictions(frame).cache()
                dup = raw_rows - preds[side].count()
                if dup:
                    inputs.notes.append(f"{LABELS[side]} recommend: {dup:,} repeated (user, item) "
                                        f"rows averaged")
            stats = write(schemas.COMPARE_PREDICTIONS,
                          compare_predictions(spark, preds["bqml"], preds["recsys"])).head()
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
        sections += _topk_section(spark, cfg, inputs, preds, cols, write, svgs, counts, report,
                                  compared)

    # ML.WEIGHTS
    with StageTimer(report, "weights"):
        b, r = both("weights")
        if b is not None:
            frames = {side: intercepts_frame(df, key=f"compare.{side}.weights",
                                             user_col=m.user_col, item_col=m.item_col).cache()
                      for side, df in (("bqml", b), ("recsys", r))}
            table = write(schemas.COMPARE_INTERCEPTS,
                          compare_intercepts(frames["bqml"], frames["recsys"]))
            compared.append("weights")
            sections += _intercepts_section(table, frames, m, c.bins, svgs, counts, report)
            for frame in frames.values():
                frame.unpersist()
    for frame in preds.values():
        frame.unpersist()

    if not compared:
        raise InputError("compare: nothing to compare: set at least one compare.bqml.* table "
                         "whose recsys counterpart exists")
    if counts:
        write(schemas.COMPARE_COUNTS, spark.createDataFrame(
            counts, schemas.COMPARE_COUNTS_SCHEMA).coalesce(1))
    md += _inputs_section(inputs, compared)
    if counts:
        md += ["## What was compared", "",
               *rpt.md_table(["what", "BigQuery ML", "recsys", "compared", "BigQuery ML only",
                              "recsys only"], [tuple(_v(v) if i else v for i, v in enumerate(row))
                                               for row in counts]), ""]
    md += sections
    out = os.path.abspath(os.path.expanduser(c.output))
    if "://" in c.output:
        raise ConfigError(f"compare.output must be a local folder, got {c.output!r}")
    rpt.write_files(out, [*svgs, ("report.md", "\n".join(md) + "\n")])
    report.add(f"  report     {os.path.join(out, 'report.md')} ({len(svgs)} plots)")
    report.add(f"  tables in  {sink.dataset_dir}: {', '.join(sorted(report.tables))}")
    return report


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


def _topk_section(spark, cfg, inputs, preds, cols, write, svgs, counts, report, compared):
    c, m = cfg.compare, cfg.model
    k = c.top_k
    b_raw = inputs.get("bqml", "top5")
    if b_raw is None:
        inputs.notes.append("compare.bqml.top5 not set: top-k lists not compared")
        return []
    r_raw = inputs.get("recsys", "top5")
    if r_raw is None:
        return []
    b = topk_frame(b_raw, key="compare.bqml.top5", **cols)
    r = topk_frame(r_raw, key="compare.recsys.top5", **cols)
    movies = inputs.extra("movies")
    b_has_items = b.where(F.col(ITEM).isNotNull()).limit(1).count() > 0
    if b_has_items:
        by, how = ITEM, "item id (from the BigQuery ML top-k table)"
    elif "bqml" in preds:
        b = topk_from_predictions(preds["bqml"], k)
        by, how = ITEM, ("item id: BigQuery ML's top-k table has no item ids (the tutorial's "
                         "struct holds titles only), so its lists are derived from its "
                         "ML.RECOMMEND table (prediction DESC, ties by the smaller item id)")
    else:
        by, how = TITLE, ("movie title: BigQuery ML's top-k table has no item ids and no "
                          "ML.RECOMMEND table was given")
        if movies is not None:
            titles = movies.select(id_text(F.col("movie_id"), movies.schema["movie_id"].dataType)
                                   .alias(ITEM), F.col("movie_title").alias("_t"))
            r = (r.join(titles, ITEM, "left")
                 .select(USER, RANK, ITEM, F.coalesce(TITLE, "_t").alias(TITLE), PRED))
    per_user = write(schemas.COMPARE_TOPK, compare_topk(b, r, k, by)).cache()
    users = id_counts("", b.select(USER), r.select(USER))
    agg = per_user.select(F.count(F.lit(1)).alias("n"), F.avg("overlap_at_k").alias("o"),
                          F.avg("jaccard").alias("j"),
                          F.sum(F.col("same_set").cast("long")).alias("s"),
                          F.sum(F.col("same_order").cast("long")).alias("so")).head()
    dist = {row["overlap"]: row["count"] for row in per_user.groupBy("overlap").count().collect()}

    # Coverage and popularity, over the users compared.
    ratings = inputs.extra("ratings")
    users_both = per_user.select(F.col("user").alias(USER))
    recs = {side: top.where((F.col(RANK) <= k) & F.col(by).isNotNull()).join(users_both, USER)
            .select(USER, F.col(by).alias("key")) for side, top in (("bqml", b), ("recsys", r))}
    distinct = {side: recs[side].select("key").distinct().count() for side in SIDES}
    catalogue = None
    popularity = None
    if ratings is not None:
        item_ids = ratings.select(id_text(F.col(m.item_col), ratings.schema[m.item_col].dataType)
                                  .alias("key"))
        popularity = item_ids.groupBy("key").count()
        if by == TITLE:
            if movies is not None:
                titles = movies.select(
                    id_text(F.col("movie_id"), movies.schema["movie_id"].dataType).alias("key"),
                    F.col("movie_title").alias("title"))
                popularity = (popularity.join(titles, "key").groupBy("title")
                              .agg(F.sum("count").alias("count")).withColumnRenamed("title", "key"))
                catalogue = popularity.count()
            else:
                popularity = None
        else:
            catalogue = popularity.count()
    elif by == ITEM and len(preds) == 2:
        catalogue = (preds["bqml"].select(ITEM).union(preds["recsys"].select(ITEM))
                     .distinct().count())
    pop = {}
    for side in SIDES:
        if popularity is None:
            pop[side] = (None, None)
            continue
        row = (recs[side].join(popularity, "key", "left")
               .select(F.coalesce(F.col("count"), F.lit(0)).alias("c"))
               .select(F.avg("c").alias("mean"), F.expr("percentile(c, 0.5)").alias("median"))
               .head())
        pop[side] = (row["mean"], row["median"])
    coverage = {side: (distinct[side] / catalogue if catalogue else None) for side in SIDES}
    summary = (k, by, agg["n"], users[4], users[5], agg["o"], agg["j"], agg["s"] or 0,
               agg["so"] or 0, catalogue, distinct["bqml"], distinct["recsys"],
               coverage["bqml"], coverage["recsys"], pop["bqml"][0], pop["recsys"][0],
               pop["bqml"][1], pop["recsys"][1])
    write(schemas.COMPARE_TOPK_SUMMARY, spark.createDataFrame(
        [summary], schemas.COMPARE_TOPK_SUMMARY_SCHEMA).coalesce(1))
    per_user.unpersist()
    counts.append(("top-k users", *users[1:]))
    compared.append("top5")
    svgs.append(("overlap.svg", rpt.bar_chart(
        [str(i) for i in range(k + 1)], [dist.get(i, 0) for i in range(k + 1)],
        title=f"Items shared by the two top-{k} lists, per user",
        xlabel=f"overlap (items in both top-{k} lists)", ylabel="users")))
    report.add(f"  top {k}      {agg['n']:,} users compared by {by}: mean overlap@{k} "
               f"{rpt.fmt(agg['o'])}, mean Jaccard {rpt.fmt(agg['j'])}, "
               f"{agg['s'] or 0:,} identical sets")
    rows = [
        ("users compared", agg["n"], ""),
        (f"mean overlap@{k} (items in both lists / {k})", agg["o"], ""),
        ("mean Jaccard (|A ∩ B| / |A ∪ B|)", agg["j"], ""),
        ("users with identical lists (same items)", agg["s"] or 0, ""),
        ("users with identical lists (same items, same order)", agg["so"] or 0, ""),
    ]
    side_rows = [
        ("distinct items recommended", distinct["bqml"], distinct["recsys"]),
        (f"catalogue coverage (of {rpt.fmt(catalogue)} items)", coverage["bqml"],
         coverage["recsys"]),
        ("mean rating count of recommended items", pop["bqml"][0], pop["recsys"][0]),
        ("median rating count of recommended items", pop["bqml"][1], pop["recsys"][1]),
    ]
    return ["## Top-k recommendations", "",
            f"Lists matched by {how}; the first {k} of each list; over the users on both sides "
            f"({rpt.fmt(users[4])} only in BigQuery ML's table, {rpt.fmt(users[5])} only in "
            f"recsys's). Rating counts from {'the ratings table' if ratings is not None else 'no ratings table (not computed)'}.",
            "", *rpt.md_table(["statistic", "value"], [row[:2] for row in rows]), "",
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
