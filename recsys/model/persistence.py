"""Saving and loading a trained model: ``users/`` and ``items/`` (Parquet) and ``metadata/``
(one JSON text file) in a model folder, on any Hadoop path."""

from __future__ import annotations

import json

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from recsys.errors import InputError
from recsys.model.trained_model import TrainedModel

METADATA_DIR = "metadata"
USERS_DIR, ITEMS_DIR = "users", "items"


def save(model: TrainedModel, path: str) -> None:
    """Write ``users/``, ``items/`` (Parquet) and then ``metadata/`` (one JSON text file) into the
    new folder ``path`` — any Hadoop path (local, ``gs://``). The metadata comes last: a model
    folder without it is an unfinished write."""
    spark = model.users.sparkSession
    model.users.write.parquet(_join(path, USERS_DIR))
    model.items.write.parquet(_join(path, ITEMS_DIR))
    text = json.dumps(model.metadata(), indent=2, sort_keys=True, allow_nan=True)
    spark.createDataFrame([(text,)], "value string").coalesce(1).write.text(
        _join(path, METADATA_DIR))


def load(spark: SparkSession, path: str) -> TrainedModel:
    """Read a model saved by ``save``."""
    try:
        text = spark.read.text(_join(path, METADATA_DIR), wholetext=True).head()
    except AnalysisException:  # the path does not exist
        text = None
    if text is None:
        raise InputError(f"no trained model at {path} (run the train job first)")
    meta = json.loads(text[0])
    return TrainedModel(
        users=spark.read.parquet(_join(path, USERS_DIR)),
        items=spark.read.parquet(_join(path, ITEMS_DIR)),
        global_intercept=meta["global_intercept"], options=meta["options"],
        data=meta["training_data"], training_metrics=meta["training_metrics"],
        training_info=meta["training_info"])


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"
