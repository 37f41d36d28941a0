"""Names and schemas of every table recsys reads or writes: the one place that owns them.

Column names and types follow the BigQuery ML MovieLens tutorial (INT64 -> LongType,
FLOAT64 -> DoubleType, STRING -> StringType, TIMESTAMP -> TimestampType).
"""

from pyspark.sql.types import (
    ArrayType,
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

EMBEDDINGS_SCHEMA = StructType([
    StructField("processed_input", StringType(), False),
    StructField("feature", StringType(), True),
    StructField("ml_generate_embedding_result", ArrayType(DoubleType(), True), True),
])
