"""Local warehouse: each write replaces a table atomically; a failed write changes nothing."""

import os

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import LongType

from recsys.errors import ConfigError
from recsys.sinks import VERSIONS_DIR, LocalWarehouse

pytestmark = pytest.mark.spark


def values(wh, spark, name):
    return sorted(r.x for r in wh.read(spark, name).collect())


def test_replace_keeps_one_previous_version(spark, tmp_path):
    wh = LocalWarehouse(str(tmp_path), "ds")
    for n in (1, 2, 3):
        wh.write("t", spark.range(n).withColumnRenamed("id", "x"))
    assert values(wh, spark, "t") == [0, 1, 2]
    versions = os.listdir(os.path.join(tmp_path, "ds", VERSIONS_DIR, "t"))
    assert len(versions) == 2
    assert os.path.islink(wh.table_path("t"))


def test_failed_write_leaves_previous_table(spark, tmp_path):
    wh = LocalWarehouse(str(tmp_path), "ds")
    wh.write("t", spark.createDataFrame([(1,), (2,)], "x long"))

    @F.udf(LongType())
    def explode_on_three(x):
        if x == 3:
            raise RuntimeError("boom")
        return x

    bad = spark.createDataFrame([(3,), (4,)], "x long").select(explode_on_three("x").alias("x"))
    with pytest.raises(Exception, match="boom"):
        wh.write("t", bad)
    assert values(wh, spark, "t") == [1, 2]

    wh.write("t", spark.createDataFrame([(5,)], "x long"))  # the next write cleans the debris
    assert values(wh, spark, "t") == [5]
    assert len(os.listdir(os.path.join(tmp_path, "ds", VERSIONS_DIR, "t"))) == 2


def test_plain_folder_from_elsewhere_is_replaced(spark, tmp_path):
    spark.createDataFrame([(9,)], "x long").write.parquet(str(tmp_path / "ds" / "t"))
    wh = LocalWarehouse(str(tmp_path), "ds")
    wh.write("t", spark.createDataFrame([(1,)], "x long"))
    assert values(wh, spark, "t") == [1]


def test_missing_table_and_remote_path(spark, tmp_path):
    wh = LocalWarehouse(str(tmp_path), "ds")
    with pytest.raises(Exception, match="table ds.nope not found"):
        wh.read(spark, "nope")
    with pytest.raises(ConfigError, match="sink.path must be a local folder"):
        LocalWarehouse("gs://bucket/wh", "ds")


def test_prune_drops_a_killed_write_and_keeps_the_previous_run(spark, tmp_path):
    """A run killed mid-write leaves a version folder no manifest names (newer than the last good
    one); the next successful run removes it and keeps its own and the previous run's version."""
    wh = LocalWarehouse(str(tmp_path), "ds")
    wh.write("t", spark.createDataFrame([(1,)], "x long"))
    wh.write("t", spark.createDataFrame([(2,)], "x long"))
    kept = sorted(os.listdir(tmp_path / "ds" / VERSIONS_DIR / "t"))
    killed = tmp_path / "ds" / VERSIONS_DIR / "t" / "29991231T000000000000Z-dead"
    killed.mkdir()
    (killed / "part-00000.parquet").write_bytes(b"PAR1")  # half-written, no _SUCCESS
    wh.write("t", spark.createDataFrame([(3,)], "x long"))
    now = sorted(os.listdir(tmp_path / "ds" / VERSIONS_DIR / "t"))
    assert not killed.exists()
    assert len(now) == 2 and now[0] == kept[1] and now[1] not in kept
    assert values(wh, spark, "t") == [3]
