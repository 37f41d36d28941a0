"""One side's table, in BigQuery ML's column names, as the stages' canonical columns.

Ids become text: INT64 ids their decimal digits, integral floats without '.0', text trimmed, so
an INT64 side matches a STRING side (and a CSV export, where every column is text). Each
function checks the columns it needs and fails with one line naming the config key.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import schemas
from recsys.errors import InputError
from recsys.schemas import topk_order

SIDES = ("bqml", "recsys")
LABELS = {"bqml": "BigQuery ML", "recsys": "recsys"}
# Canonical columns of the stages: ids as STRING.
USER, ITEM, PRED, RANK, TITLE = "user", "item", "prediction", "rank", "title"
MOVIE_TITLE = "movie_title"  # the tutorial's title column (movies table, top-5 struct)


def _no_text() -> Column:
    return F.lit(None).cast("string")


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
    return col.cast("string")


def need_columns(df: DataFrame, columns: Sequence[str], key: str, hint: str = "") -> None:
    """Fail with one line naming the missing columns of ``df``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{key}: missing column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(df.columns) or 'none'}){hint}")


def prediction_name(names: Sequence[str], wanted: str, key: str) -> str:
    """``wanted``, else the one ``predicted_*`` column (e.g. an implicit model's)."""
    if wanted in names:
        return wanted
    found = [n for n in names if n.startswith("predicted_")]
    if len(found) != 1:
        raise InputError(f"{key}: no prediction column {wanted!r} (columns: {', '.join(names)})")
    return found[0]


def id_type_notes(label: str, df: DataFrame, columns: Sequence[str]) -> List[str]:
    """'<label> `<col>` is INT64' for each id column of ``df`` (the report's Inputs)."""
    return [f"{label} `{col}` is {type_name(df.schema[col].dataType)}"
            for col in columns if col in df.columns]


def predictions_frame(df: DataFrame, *, user_col: str, item_col: str, pred_col: str,
                      key: str) -> DataFrame:
    """ML.RECOMMEND output -> (user STRING, item STRING, prediction DOUBLE)."""
    need_columns(df, [user_col, item_col], key)
    pred = prediction_name(df.columns, pred_col, key)
    return df.select(id_text(F.col(user_col), df.schema[user_col].dataType).alias(USER),
                     id_text(F.col(item_col), df.schema[item_col].dataType).alias(ITEM),
                     F.col(pred).cast("double").alias(PRED))


def dedupe_predictions(df: DataFrame) -> DataFrame:
    """One prediction per (user, item): the mean of repeated rows."""
    return df.groupBy(USER, ITEM).agg(F.avg(PRED).alias(PRED))


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
    need_columns(df, [user_col], key)
    user = id_text(F.col(user_col), df.schema[user_col].dataType).alias(USER)
    nested = list_column(df, key, fmt)
    if nested is not None:
        return _nested_topk(df, user, nested, item_col, pred_col, key)
    return _flat_topk(df, user, item_col, pred_col, key, fmt)


def _nested_topk(df: DataFrame, user: Column, nested: str, item_col: str, pred_col: str,
                 key: str) -> DataFrame:
    fields = {f.name: f.dataType for f in df.schema[nested].dataType.elementType.fields}
    pred = prediction_name(list(fields), pred_col, f"{key}.{nested}")
    exploded = df.select(user, F.posexplode(nested).alias("pos", "r"))
    item = (id_text(F.col(f"r.{item_col}"), fields[item_col]) if item_col in fields
            else _no_text())
    title = (F.trim(F.col(f"r.{MOVIE_TITLE}").cast("string")) if MOVIE_TITLE in fields
             else _no_text())
    return exploded.select(USER, (F.col("pos") + 1).cast("long").alias(RANK),
                           item.alias(ITEM), title.alias(TITLE),
                           F.col(f"r.{pred}").cast("double").alias(PRED))


def _flat_topk(df: DataFrame, user: Column, item_col: str, pred_col: str, key: str,
               fmt: Optional[str]) -> DataFrame:
    if item_col not in df.columns and MOVIE_TITLE not in df.columns:
        hint = (" (bq extract cannot write the nested top-5 table to CSV: flatten it with "
                "UNNEST, or export NEWLINE_DELIMITED_JSON, AVRO or PARQUET)" if fmt == "csv"
                else "")
        raise InputError(f"{key}: no top-k list: expected an ARRAY<STRUCT> column (the "
                         f"tutorial's unaliased ARRAY_AGG, which BigQuery names f0_) or flat "
                         f"{item_col!r} / {MOVIE_TITLE!r} columns (columns: "
                         f"{', '.join(df.columns)}){hint}")
    pred = prediction_name(df.columns, pred_col, key)
    item = (id_text(F.col(item_col), df.schema[item_col].dataType) if item_col in df.columns
            else _no_text())
    title = (F.trim(F.col(MOVIE_TITLE).cast("string")) if MOVIE_TITLE in df.columns
             else _no_text())
    return ranked(df.select(user, item.alias(ITEM), title.alias(TITLE),
                            F.col(pred).cast("double").alias(PRED)))


def ranked(df: DataFrame) -> DataFrame:
    """(user, item, title, prediction) -> with ``rank`` per user in the top-k order (ties by
    the smaller item id, then by title for a table without ids)."""
    order = Window.partitionBy(USER).orderBy(*topk_order(PRED, ITEM, text_ids=True),
                                             F.col(TITLE).asc())
    return df.select(USER, F.row_number().over(order).cast("long").alias(RANK), ITEM, TITLE, PRED)


def topk_from_predictions(predictions: DataFrame, k: int) -> DataFrame:
    """Top k of a (user, item, prediction) frame: prediction DESC, ties by the smaller item."""
    top = ranked(predictions.select(USER, ITEM, _no_text().alias(TITLE), PRED))
    return top.where(F.col(RANK) <= k)


def title_index(movies: DataFrame) -> DataFrame:
    """The movies table -> (title, ids): every movie id (as text, sorted) of each title."""
    need_columns(movies, ["movie_id", MOVIE_TITLE], "compare.movies")
    return (movies.select(F.trim(F.col(MOVIE_TITLE).cast("string")).alias(TITLE),
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
    known = (other.where(F.col(ITEM).isNotNull())
             .select(USER, F.col(ITEM).alias("cand"), F.lit(True).alias("in_other")).distinct())
    cands = (top.drop(ITEM).join(titles, TITLE, "left")
             .select("*", F.explode_outer("ids").alias("cand"))
             .join(known, [USER, "cand"], "left")
             .withColumn("in_other", F.coalesce(F.col("in_other"), F.lit(False)).cast("int")))
    # The top-k order with "in the other list" as the score: those first, then the smallest id.
    order = Window.partitionBy(USER, RANK).orderBy(*topk_order("in_other", "cand", text_ids=True))
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


def intercepts_frame(df: DataFrame, *, user_col: str, item_col: str, key: str) -> DataFrame:
    """ML.WEIGHTS -> (processed_input, feature, intercept, n_factors); the global row has
    processed_input NULL and feature 'global__intercept__'."""
    need_columns(df, ["processed_input", "feature", "intercept"], key)
    factors = (F.size("factor_weights") if "factor_weights" in df.columns
               and isinstance(df.schema["factor_weights"].dataType, T.ArrayType)
               else F.lit(None)).cast("long")
    global_row = F.col("feature") == schemas.GLOBAL_INTERCEPT_FEATURE
    return df.select(
        F.when(global_row, F.lit(None)).otherwise(F.col("processed_input").cast("string"))
        .alias("processed_input"),
        id_text(F.col("feature"), df.schema["feature"].dataType).alias("feature"),
        F.col("intercept").cast("double").alias("intercept"),
        F.when(F.coalesce(factors, F.lit(-1)) >= 0, factors).alias("n_factors"))


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


def training_losses(df: DataFrame, key: str
                    ) -> Dict[int, Tuple[Optional[float], Optional[float]]]:
    """ML.TRAINING_INFO's last training run as {iteration: (loss, eval_loss)}."""
    need_columns(df, ["iteration", "loss"], key)
    run = F.col("training_run").cast("long") if "training_run" in df.columns else F.lit(0)
    eval_loss = F.col("eval_loss") if "eval_loss" in df.columns else F.lit(None)
    rows = df.select(run.alias("run"), F.col("iteration").cast("long").alias("it"),
                     F.col("loss").cast("double").alias("loss"),
                     eval_loss.cast("double").alias("eval")).collect()
    last_run = max((r.run for r in rows if r.run is not None), default=None)
    return {r.it: (r.loss, r.eval) for r in rows if r.run == last_run and r.it is not None}
