"""Names and schemas of every table recsys reads or writes: the one place that owns them.

Column names and types follow the BigQuery ML MovieLens tutorial (INT64 -> LongType,
FLOAT64 -> DoubleType, STRING -> StringType, TIMESTAMP -> TimestampType).
"""

import re

from typing import List

from pyspark.sql import Column
from pyspark.sql import functions as F
from recsys.errors import ConfigError
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

RATINGS = "ratings"
MOVIES = "movies"
RATINGS_REJECTED = "ratings_rejected"
MOVIES_REJECTED = "movies_rejected"
EVALUATE = "evaluate"
RECOMMEND = "recommend"
RECOMMEND_TOP = "recommend_top5"
TRAINING_INFO = "training_info"
WEIGHTS = "weights"
EMBEDDINGS = "embeddings"
TRIALS = "trials"
GLOBAL_INTERCEPT_FEATURE = "global__intercept__"

RATINGS_SCHEMA = StructType([
    StructField("user_id", LongType(), False),
    StructField("item_id", LongType(), False),
    StructField("rating", DoubleType(), False),
    StructField("timestamp", TimestampType(), True),
])

MOVIES_SCHEMA = StructType([
    StructField("movie_id", LongType(), False),
    StructField("movie_title", StringType(), True),
    StructField("genre", StringType(), True),
])

REJECTED_SCHEMA = StructType([
    StructField("raw", StringType(), True),
    StructField("source_file", StringType(), False),
    StructField("line_number", LongType(), True),
    StructField("reason", StringType(), False),
])

EXPLICIT_METRICS = (
    "mean_absolute_error",
    "mean_squared_error",
    "mean_squared_log_error",
    "median_absolute_error",
    "r2_score",
    "explained_variance",
)

EVALUATE_SCHEMA = StructType([StructField(name, DoubleType(), True) for name in EXPLICIT_METRICS])

IMPLICIT_METRICS = (
    "mean_average_precision",
    "mean_squared_error",
    "normalized_discounted_cumulative_gain",
    "average_rank",
)

IMPLICIT_EVALUATE_SCHEMA = StructType(
    [StructField(name, DoubleType(), True) for name in IMPLICIT_METRICS])


def prediction_col(rating_col: str = "rating") -> str:
    """ML.RECOMMEND's prediction column: ``predicted_<rating_col>``."""
    return f"predicted_{rating_col}"


def recommendation_struct(item_col: str = "item_id",
                          prediction: str = "predicted_rating") -> StructType:
    """Element type of ``recommend_top5.recommendations``."""
    return StructType([
        StructField(item_col, LongType(), False),
        StructField("movie_title", StringType(), True),
        StructField("genre", StringType(), True),
        StructField(prediction, DoubleType(), True),
    ])


TRAINING_INFO_SCHEMA = StructType([
    StructField("training_run", LongType(), False),
    StructField("iteration", LongType(), False),
    StructField("loss", DoubleType(), True),
    StructField("eval_loss", DoubleType(), True),
    StructField("learning_rate", DoubleType(), True),
    StructField("duration_ms", LongType(), True),
])

FACTOR_WEIGHT = StructType([
    StructField("factor", LongType(), False),
    StructField("weight", DoubleType(), True),
])

WEIGHTS_SCHEMA = StructType([
    StructField("processed_input", StringType(), True),
    StructField("feature", StringType(), True),
    StructField("factor_weights", ArrayType(FACTOR_WEIGHT, False), True),
    StructField("intercept", DoubleType(), True),
])

# The embeddings' vector for VECTOR_SEARCH: users [x_u, 1, global + b_u], items [y_i, b_i, 1],
# so that a dot product is the prediction (recsys.model.weights).
SEARCH_EMBEDDING = "search_embedding"

EMBEDDINGS_SCHEMA = StructType([
    StructField("processed_input", StringType(), False),
    StructField("feature", StringType(), True),
    StructField("ml_generate_embedding_result", ArrayType(DoubleType(), True), True),
    StructField(SEARCH_EMBEDDING, ArrayType(DoubleType(), True), True),
])

# --- the compare job (BigQuery ML's outputs against a recsys run's) -----------------------------

COMPARE_METRICS = "compare_metrics"
COMPARE_TRAINING = "compare_training"
COMPARE_PREDICTIONS = "compare_predictions"
COMPARE_TOPK = "compare_topk"
COMPARE_TOPK_SUMMARY = "compare_topk_summary"
COMPARE_INTERCEPTS = "compare_intercepts"
COMPARE_COUNTS = "compare_counts"
COMPARE_VERDICT = "compare_verdict"

COMPARE_METRICS_SCHEMA = StructType([
    StructField("metric", StringType(), False),
    StructField("bqml", DoubleType(), True),
    StructField("recsys", DoubleType(), True),
    StructField("difference", DoubleType(), True),  # recsys - bqml
])

COMPARE_TRAINING_SCHEMA = StructType([
    StructField("iteration", LongType(), False),
    StructField("bqml_loss", DoubleType(), True),
    StructField("recsys_loss", DoubleType(), True),
    StructField("bqml_eval_loss", DoubleType(), True),
    StructField("recsys_eval_loss", DoubleType(), True),
])

COMPARE_PREDICTIONS_SCHEMA = StructType([
    StructField("pairs_bqml", LongType(), False),
    StructField("pairs_recsys", LongType(), False),
    StructField("pairs_compared", LongType(), False),
    StructField("pairs_bqml_only", LongType(), False),
    StructField("pairs_recsys_only", LongType(), False),
    StructField("rmse", DoubleType(), True),
    StructField("mean_abs_difference", DoubleType(), True),
    StructField("mean_difference", DoubleType(), True),  # recsys - bqml
    StructField("pearson", DoubleType(), True),
    StructField("spearman", DoubleType(), True),
])

COMPARE_TOPK_SCHEMA = StructType([
    StructField("user", StringType(), False),
    StructField("bqml_items", ArrayType(StringType(), True), True),
    StructField("recsys_items", ArrayType(StringType(), True), True),
    StructField("overlap", LongType(), False),
    StructField("overlap_at_k", DoubleType(), False),
    StructField("jaccard", DoubleType(), True),
    StructField("same_set", BooleanType(), False),
    StructField("same_order", BooleanType(), False),
])

COMPARE_TOPK_SUMMARY_SCHEMA = StructType([
    StructField("k", LongType(), False),
    StructField("matched_by", StringType(), False),
    StructField("users_compared", LongType(), False),
    StructField("users_bqml_only", LongType(), False),
    StructField("users_recsys_only", LongType(), False),
    StructField("mean_overlap_at_k", DoubleType(), True),
    StructField("mean_jaccard", DoubleType(), True),
    StructField("identical_sets", LongType(), False),
    StructField("identical_order", LongType(), False),
    StructField("catalogue_size", LongType(), True),
    StructField("bqml_distinct_items", LongType(), False),
    StructField("recsys_distinct_items", LongType(), False),
    StructField("bqml_coverage", DoubleType(), True),
    StructField("recsys_coverage", DoubleType(), True),
    StructField("bqml_mean_rating_count", DoubleType(), True),
    StructField("recsys_mean_rating_count", DoubleType(), True),
    StructField("bqml_median_rating_count", DoubleType(), True),
    StructField("recsys_median_rating_count", DoubleType(), True),
    StructField("ambiguous_titles", LongType(), True),  # NULL: not matched through titles
    StructField("unknown_titles", LongType(), True),
])

COMPARE_INTERCEPTS_SCHEMA = StructType([
    StructField("processed_input", StringType(), True),  # user / item column; NULL = global
    StructField("feature", StringType(), True),
    StructField("bqml", DoubleType(), True),
    StructField("recsys", DoubleType(), True),
    StructField("difference", DoubleType(), True),
])

COMPARE_VERDICT_SCHEMA = StructType([
    StructField("criterion", StringType(), False),
    StructField("figure", DoubleType(), True),       # NULL: not evaluated (input not given)
    StructField("rule", StringType(), False),        # "<=" or ">="
    StructField("tolerance", DoubleType(), False),
    StructField("passed", BooleanType(), True),      # NULL: not evaluated
])

COMPARE_COUNTS_SCHEMA = StructType([
    StructField("what", StringType(), False),
    StructField("bqml", LongType(), True),
    StructField("recsys", LongType(), True),
    StructField("compared", LongType(), True),
    StructField("bqml_only", LongType(), True),
    StructField("recsys_only", LongType(), True),
])

TRIALS_SCHEMA = StructType([
    StructField("trial_id", LongType(), False),
    StructField("num_factors", LongType(), False),
    StructField("l2_reg", DoubleType(), False),
    StructField("reg_param", DoubleType(), True),
    StructField("intercept_l2_reg", DoubleType(), True),
    StructField("wals_alpha", DoubleType(), True),
    StructField("objective", DoubleType(), True),
    StructField("eval_rmse", DoubleType(), True),
    StructField("duration_ms", LongType(), False),
    StructField("is_optimal", BooleanType(), False),
])


# --- parsed source rows (readers -> ingest) -----------------------------------------------
# The output columns plus where the line was read (split_start: the byte offset of the file split
# it was read in, 0 for sources read whole; split_line: its 1-based line in that split), raw and
# reason (NULL for a good row) and source_file, so that every bad line keeps its text, file and
# line for *_rejected. A line's number in its file is split_line plus the lines of the file's
# earlier splits (readers.line_offsets), known once every split has been read: the file is read
# once, and only rejected rows are numbered.
_META_FIELDS = [
    StructField("split_start", LongType(), True),
    StructField("split_line", LongType(), True),
    StructField("raw", StringType(), True),
    StructField("reason", StringType(), True),
    StructField("source_file", StringType(), True),
]
PARSED_RATINGS_SCHEMA = StructType([
    StructField("user_id", LongType(), True),
    StructField("item_id", LongType(), True),
    StructField("rating", DoubleType(), True),
    StructField("timestamp_seconds", LongType(), True),
    *_META_FIELDS,
])
PARSED_MOVIES_SCHEMA = StructType([
    StructField("movie_id", LongType(), True),
    StructField("movie_title", StringType(), True),
    StructField("genre", StringType(), True),
    *_META_FIELDS,
])


# --- the top-k order ----------------------------------------------------------------------------

def topk_order(pred_col: str, item_col: str, *, text_ids: bool = False) -> List[Column]:
    """The order of every top-k list: ``pred_col`` DESC, ties by the smaller item id (the one
    place it is coded; ``recsys.model.recommend``'s NumPy top-k sorts the same way and a test checks
    it against ranking the all-pairs table with these columns).

    ``text_ids``: the ids are text (the compare job keeps ids as text); ids holding integers
    then sort by value ('9' before '10') and before other ids, which sort as text. It uses
    ``try_cast``: a plain cast fails under ANSI mode on an id such as 'B0001'.
    """
    if not text_ids:
        return [F.col(pred_col).desc(), F.col(item_col).asc()]
    return [F.col(pred_col).desc_nulls_last(),
            F.expr(f"try_cast(`{item_col}` AS BIGINT)").asc_nulls_last(), F.col(item_col).asc()]


# --- BigQuery names -------------------------------------------------------------------------

_PROJECT_RE = re.compile(r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


def validate_table_id(table_id: str, what: str = "table") -> str:
    """``[project.]dataset.table`` with BigQuery's naming rules, or a one-line ConfigError.

    Only identifiers that pass are ever put into SQL, so no input can inject SQL.
    """
    parts = table_id.split(".")
    if len(parts) not in (2, 3):
        raise ConfigError(f"{what} {table_id!r} must be dataset.table or project.dataset.table")
    if len(parts) == 3 and not _PROJECT_RE.match(parts[0]):
        raise ConfigError(f"{what} {table_id!r}: {parts[0]!r} is not a valid project id")
    for name in parts[-2:]:
        if not _NAME_RE.match(name):
            raise ConfigError(f"{what} {table_id!r}: {name!r} must be letters, digits and "
                              f"underscores")
    return table_id


def valid_dataset(name: str) -> bool:
    """True for a BigQuery dataset (or table) name: letters, digits and underscores."""
    return bool(_NAME_RE.match(name))


def valid_project(project: str) -> bool:
    """True for a BigQuery project id (``my-project`` or ``example.com:my-project``)."""
    return bool(_PROJECT_RE.match(project))


def is_query(ref: str) -> bool:
    """A source reference that is SQL (``SELECT ...``/``WITH ...``) rather than a table id."""
    return bool(re.match(r"^\s*(select|with)\s", ref, flags=re.IGNORECASE))
