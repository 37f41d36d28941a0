"""ML.WEIGHTS and ML.GENERATE_EMBEDDING for a trained model.

ML.WEIGHTS: one row per user and per item — ``processed_input`` (the user or item column's
name), ``feature`` (the id as a STRING), ``factor_weights`` ARRAY<STRUCT<factor INT64 (1-based),
weight FLOAT64>> and ``intercept`` — plus the row ``feature = 'global__intercept__'`` with NULL
``processed_input`` and ``factor_weights``.

ML.GENERATE_EMBEDDING: per user and item, ``ml_generate_embedding_result`` is the factor weights
as ARRAY<FLOAT64> with the intercept appended last.

Beside it, ``search_embedding`` (ARRAY<FLOAT64>, rank + 2 values) is the shape BigQuery's
``VECTOR_SEARCH`` with ``distance_type => 'DOT_PRODUCT'`` ranks by: a user's vector is
``[x_u, 1, global + b_u]`` and an item's ``[y_i, b_i, 1]``, so that their dot product is the
prediction ``global + b_u + b_i + x_u . y_i`` (the intercepts folded into two extra
components). An exact top-k by dot product over it is therefore the top-k of ML.RECOMMEND.

Latent factors are identified only up to rotation: compare predictions and intercepts between
two models, not raw factors.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import schemas
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel


# Models of at most this many users and items (every MovieLens release) get each table from
# one task: sorted there, ML.WEIGHTS needs no sampling job and no shuffle (ML-1M's 9,746 rows
# took four Spark jobs), and each table is one file. Larger models keep Spark's range sort.
ONE_TASK_ROWS = 1_000_000


def _sides(model: TrainedModel):
    return ((model.col_user, model.users), (model.col_item, model.items))


def _one_task(model: TrainedModel) -> bool:
    """Whether the model is small enough to write its tables from one task (the counts of its
    training data; a split's evaluation-only ids add few)."""
    sizes = [model.data.get("n_users"), model.data.get("n_items")]
    return None not in sizes and sum(sizes) <= ONE_TASK_ROWS


def weights(spark: SparkSession, model: TrainedModel) -> DataFrame:
    """The ML.WEIGHTS table (``schemas.WEIGHTS_SCHEMA``), ordered users, items, global row."""
    parts = []
    for rank, (col, table) in enumerate(_sides(model)):
        factor_weights = F.transform(
            F.col(FACTORS), lambda w, i: F.struct((i + 1).cast("long").alias("factor"),
                                                  w.alias("weight")))
        parts.append(table.select(
            F.lit(col).alias("processed_input"), F.col(col).cast("string").alias("feature"),
            factor_weights.alias("factor_weights"), F.col(INTERCEPT).cast("double").alias("intercept"),
            F.lit(rank).alias("_order"), F.col(col).alias(f"_key{rank}")))
    users, items = parts
    global_row = spark.createDataFrame(
        [(None, schemas.GLOBAL_INTERCEPT_FEATURE, None, float(model.global_intercept), 2)],
        T.StructType(schemas.WEIGHTS_SCHEMA.fields + [T.StructField("_order", T.IntegerType())]))
    # Each side sorted by its id in its own type (numeric ids in numeric order): the two id
    # types may differ, so each has its own sort column, NULL on the other rows. A global
    # row_number window instead moved every row to one partition (and Spark warned).
    stacked = users.unionByName(items, allowMissingColumns=True) \
        .unionByName(global_row, allowMissingColumns=True)
    order = ("_order", "_key0", "_key1")
    ordered = (stacked.coalesce(1).sortWithinPartitions(*order) if _one_task(model)
               else stacked.orderBy(*order))
    return ordered.drop(*order)


def embeddings(model: TrainedModel) -> DataFrame:
    """ML.GENERATE_EMBEDDING (factor weights with the intercept last) and the vectors whose dot
    product is the prediction (``search_embedding``), per user and item."""
    intercept = F.col(INTERCEPT).cast("double")
    one = F.lit(1.0)
    tails = (F.array(one, F.lit(float(model.global_intercept)) + intercept),  # users
             F.array(intercept, one))                                         # items
    parts = [table.select(
        F.lit(col).alias("processed_input"), F.col(col).cast("string").alias("feature"),
        F.concat(F.col(FACTORS), F.array(intercept)).alias("ml_generate_embedding_result"),
        F.concat(F.col(FACTORS), tail).alias(schemas.SEARCH_EMBEDDING))
        for (col, table), tail in zip(_sides(model), tails)]
    stacked = parts[0].unionByName(parts[1])
    return stacked.coalesce(1) if _one_task(model) else stacked
