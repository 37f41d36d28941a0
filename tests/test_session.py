"""The session's defaults (recsys/session.py) where they change how a run executes."""

import os

import pandas as pd
import pytest

pytestmark = pytest.mark.spark


def test_dataframe_and_rdd_python_tasks_share_one_pool_of_workers(spark):
    """An Arrow task of a DataFrame and a task of an RDD (what createDataFrame from a list runs)
    are served by the same Python daemon: with Spark's default simplified traceback they would
    be two pools, each with its own daemon and workers to start."""
    # A Python worker's parent is its pool's daemon. (Lambdas: the workers cannot import tests.)
    arrow = spark.range(1).mapInPandas(
        lambda batches: (pd.DataFrame({"pid": [os.getppid()]}) for _ in batches),
        "pid long").collect()
    rdd = spark.sparkContext.parallelize([0], 1).map(lambda _: os.getppid()).collect()
    assert arrow[0].pid == rdd[0]
