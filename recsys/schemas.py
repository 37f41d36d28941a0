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


def recommend_schema(user_col: str = "user_id", item_col: str = "item_id",
                     rating_col: str = "rating") -> StructType:
    """Schema of the ``recommend`` table (ML.RECOMMEND without input columns)."""
    return StructType([
        StructField(prediction_col(rating_col), DoubleType(), True),
        StructField(user_col, LongType(), False),
        StructField(item_col, LongType(), False),
    ])


def recommendation_struct(item_col: str = "item_id", rating_col: str = "rating") -> StructType:
    """Element type of ``recommend_top5.recommendations``."""
    return StructType([
        StructField(item_col, LongType(), False),
        StructField("movie_title", StringType(), True),
        StructField("genre", StringType(), True),
        StructField(prediction_col(rating_col), DoubleType(), True),
    ])


def recommend_top_schema(user_col: str = "user_id", item_col: str = "item_id",
                         rating_col: str = "rating") -> StructType:
    """Schema of ``recommend_top5``: one row per user, recommendations best first."""
    return StructType([
        StructField(user_col, LongType(), False),
        StructField("recommendations",
                    ArrayType(recommendation_struct(item_col, rating_col), False), False),
    ])
