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


def test_versioned_model_store_on_a_hadoop_filesystem(spark, tmp_path):
    """Models under a non-local Hadoop URI (as gs:// on Dataproc): here viewfs://, Hadoop's own
    client-side mount table, mounted on a local folder. Each save is a new version folder; the
    newest one with its metadata is the model; a save that died before its metadata is
    ignored; with no model, one line."""
    import uuid

    from recsys.errors import InputError
    from recsys.model import TrainedModel, load, save
    from recsys.sinks import VersionedModelStore, model_store

    cluster = f"recsys{uuid.uuid4().hex[:8]}"
    spark.sparkContext._jsc.hadoopConfiguration().set(
        f"fs.viewfs.mounttable.{cluster}.link./store", (tmp_path / "disk").as_uri())
    root = f"viewfs://{cluster}/store"
    store = model_store(root, "ds")
    assert isinstance(store, VersionedModelStore)
    with pytest.raises(InputError, match=f"no trained model at {root}/ds/_models/m "):
        store.model_location(spark, "m")

    def model(bias):
        return TrainedModel(
            users=spark.createDataFrame([(1, bias, [0.5, 1.0])],
                                        "user_id long, intercept double, factors array<double>"),
            items=spark.createDataFrame([(7, -bias, [2.0, 0.0])],
                                        "item_id long, intercept double, factors array<double>"),
            global_intercept=3.0 + bias, data={"n_rows": 1},
            options={"user_col": "user_id", "item_col": "item_id", "feedback_type": "explicit",
                     "num_factors": 2})

    first = store.save_model("m", lambda path: save(model(0.25), path))
    assert first.startswith(f"{root}/ds/_models/m/")
    second = store.save_model("m", lambda path: save(model(0.75), path))
    # A later save killed before its metadata (written last): users/ and items/ only.
    store.save_model("m", lambda path: model(9.0).users.write.parquet(f"{path}/users"))
    on_disk = sorted(os.listdir(tmp_path / "disk" / "ds" / "_models" / "m"))
    assert len(on_disk) == 3 and second.endswith(on_disk[1])
    assert not os.path.exists(tmp_path / "disk" / "ds" / "_models" / "m" / on_disk[2] / "metadata")
    location = store.model_location(spark, "m")
    assert location == second
    loaded = load(spark, location)
    assert loaded.global_intercept == 3.75
    assert [tuple(r) for r in loaded.users.collect()] == [(1, 0.75, [0.5, 1.0])]
    assert [tuple(r) for r in loaded.items.collect()] == [(7, -0.75, [2.0, 0.0])]


def _squares_table(spark, fail_in=None):
    """A TaskTable of (n, n * n, n / 7) for n in 0..29,999 over three partitions, made in the
    tasks; ``fail_in``: a partition whose task raises once it has written its first batch."""
    import pyarrow as pa
    from pyspark import TaskContext

    from recsys.tasks import TaskTable

    def make(batches):
        for batch in batches:
            n = batch.column("id").to_numpy()
            yield pa.RecordBatch.from_arrays(
                [pa.array(n), pa.array(n * n), pa.array(n / 7.0)], names=["n", "square", "part"])
            if TaskContext.get().partitionId() == fail_in:
                raise RuntimeError("boom in a task")

    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("n", T.LongType()), T.StructField("square", T.LongType()),
                           T.StructField("part", T.DoubleType())])
    return TaskTable(spark.range(0, 30_000, 1, 3), make, schema)


def test_a_task_table_is_written_by_its_own_tasks(spark, tmp_path):
    """A TaskTable goes to the local warehouse as one Parquet file per task, written by pyarrow
    in the task: the same schema as Spark's writer gives its frame, and NumPy's rows."""
    import numpy as np

    wh = LocalWarehouse(str(tmp_path), "ds")
    table = _squares_table(spark)
    folder = wh.write("t", table)
    assert sorted(os.listdir(folder)) == ["_SUCCESS"] + [f"part-0000{k}.parquet" for k in range(3)]
    got = wh.read(spark, "t")
    wh.write("by_spark", table.frame())
    assert got.schema == wh.read(spark, "by_spark").schema
    rows = got.orderBy("n").collect()
    n = np.arange(30_000)
    assert [r.n for r in rows] == n.tolist()
    assert [r.square for r in rows] == (n * n).tolist()
    assert [r.part for r in rows] == (n / 7.0).tolist()


def test_a_failing_task_table_leaves_the_previous_table(spark, tmp_path):
    wh = LocalWarehouse(str(tmp_path), "ds")
    wh.write("t", spark.createDataFrame([(1, 1, 0.5)], "n long, square long, part double"))
    with pytest.raises(Exception, match="boom in a task"):
        wh.write("t", _squares_table(spark, fail_in=1))
    assert [tuple(r) for r in wh.read(spark, "t").collect()] == [(1, 1, 0.5)]
