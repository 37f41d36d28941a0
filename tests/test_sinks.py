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


def test_prune_keeps_the_newest_complete_version_not_a_killed_write(tmp_path):
    """A run killed mid-write leaves a folder newer than the last good version; the next write
    must keep the good one for readers and drop the partial one."""
    from recsys.sinks import _prune

    versions = tmp_path / "recommend"
    for name, complete in [("20260101T000000000000Z-aaaa", True),
                           ("20260102T000000000000Z-bbbb", True),
                           ("20260103T000000000000Z-cccc", False),  # killed
                           ("20260104T000000000000Z-dddd", True)]:  # the new current
        (versions / name).mkdir(parents=True)
        if complete:
            (versions / name / "_SUCCESS").touch()
    _prune(str(versions), current="20260104T000000000000Z-dddd")
    assert sorted(p.name for p in versions.iterdir()) == [
        "20260102T000000000000Z-bbbb", "20260104T000000000000Z-dddd"]
