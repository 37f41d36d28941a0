"""The one SparkSession factory. Nothing else in recsys builds a session."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from typing import Mapping, Optional

from pyspark.sql import SparkSession

from recsys.config import SparkConfig

# Defaults that keep results reproducible and small jobs quick; config `spark.conf` overrides them.
DEFAULT_CONF = {
    # TIMESTAMP values are written and shown in UTC whatever the machine's zone.
    "spark.sql.session.timeZone": "UTC",
    # MovieLens-sized shuffles are small; 200 partitions would mostly schedule empty tasks.
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # INT96 is deprecated; microsecond timestamps read back as TIMESTAMP in BigQuery and pyarrow.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Python tasks of DataFrames (the Arrow tasks) and of RDDs (createDataFrame from a list
    # pickles through one) share Python workers only when their environments are equal, and
    # the simplified traceback of the first sets a variable the second lacks: with it, a run
    # starts two Python daemons, each forking its own workers. A 14-user pipeline ran 6 such
    # processes (10.8 CPU-s) with it and 3 (6.2 CPU-s) without; the quick start's job time
    # was 52.6 s against 47.0 s (means of three alternating pairs, docs/performance.md). A
    # task's error then shows pyspark's frames too.
    "spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled": "false",
}


# Driver settings read only when the driver JVM is launched. Under spark-submit (and on Dataproc)
# that JVM already runs when the builder is called, so they must be given to spark-submit
# (--driver-memory, --conf/--properties) or as batch properties; the builder cannot apply them.
LAUNCH_ONLY_KEYS = ("spark.driver.memory", "spark.driver.cores", "spark.driver.extraJavaOptions",
                    "spark.driver.extraClassPath", "spark.driver.extraLibraryPath")


def ignored_launch_settings(user_conf: Mapping[str, str], jvm_running: bool) -> list:
    """The keys of ``spark.conf`` that cannot take effect because the driver JVM already runs.

    >>> ignored_launch_settings({"spark.driver.memory": "8g", "spark.sql.shuffle.partitions": "4"}, True)
    ['spark.driver.memory']
    >>> ignored_launch_settings({"spark.driver.memory": "8g"}, False)
    []
    """
    return [key for key in user_conf if key in LAUNCH_ONLY_KEYS] if jvm_running else []


def _driver_jvm_running() -> bool:
    """True under spark-submit (the JVM started Python) or when this process already has one."""
    from pyspark import SparkContext

    return "PYSPARK_GATEWAY_PORT" in os.environ or SparkContext._gateway is not None


# spark-bigquery-connector per Spark line, pinned. Dataproc images and Serverless runtimes ship
# their own copy, which "auto" uses instead (see connector_conf).
CONNECTORS = {
    "3.5": "com.google.cloud.spark:spark-3.5-bigquery:0.42.1",
    "4.0": "com.google.cloud.spark:spark-4.0-bigquery:0.44.2",
}
# Where Dataproc images and Serverless runtimes keep Spark's jars.
PROVIDED_JAR_DIRS = ("/usr/lib/spark/jars", "/usr/local/share/google/dataproc/lib")


def connector_conf(connector: str, spark_version: str,
                   jar_dirs: tuple = PROVIDED_JAR_DIRS) -> dict:
    """Spark settings that put the BigQuery connector on the classpath.

    ``connector``: ``auto`` (the pinned artifact for this Spark line, unless a provided one is
    found, as on Dataproc), ``provided`` (nothing to add), or a Maven coordinate. Jars come from
    Maven Central through Spark's own resolver and are cached in ``~/.ivy2``.

    >>> connector_conf("auto", "3.5.8", jar_dirs=())
    {'spark.jars.packages': 'com.google.cloud.spark:spark-3.5-bigquery:0.42.1'}
    >>> connector_conf("provided", "4.0.1")
    {}
    """
    if connector == "provided":
        return {}
    if connector != "auto":
        return {"spark.jars.packages": connector}
    if provided_jar("bigquery", jar_dirs):
        return {}
    line = ".".join(spark_version.split(".")[:2])
    coordinate = CONNECTORS.get(line) or CONNECTORS["4.0" if line.startswith("4") else "3.5"]
    return {"spark.jars.packages": coordinate}


def provided_jar(fragment: str, jar_dirs: tuple = PROVIDED_JAR_DIRS) -> bool:
    """True when Spark's own jar folders (Dataproc) already hold a jar named like ``fragment``."""
    return any(os.path.isdir(folder) and any(fragment in name for name in os.listdir(folder))
               for folder in jar_dirs)


def build_session(spark_cfg: Optional[SparkConfig] = None,
                  extra_conf: Optional[Mapping[str, str]] = None) -> SparkSession:
    """Create (or attach to) the SparkSession described by ``spark_cfg``.

    Under ``spark-submit`` the master comes from the command line; ``spark.master`` in the
    config is only applied when set, so the same config works locally and on Dataproc.
    """
    spark_cfg = spark_cfg or SparkConfig()
    # pyspark started with plain `python` launches the JVM itself; it must use this interpreter
    # for its workers too, or a different system python with other packages gets picked up.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(spark_cfg.app_name)
    if spark_cfg.master:
        builder = builder.master(spark_cfg.master)
    conf = dict(DEFAULT_CONF)
    conf.update(spark_cfg.conf)
    conf.update(extra_conf or {})
    ignored = ignored_launch_settings(spark_cfg.conf, _driver_jvm_running())
    if ignored:
        print(f"recsys: warning: {', '.join(ignored)} in spark.conf cannot take effect: the "
              f"driver JVM is already running; pass it to spark-submit (--driver-memory, "
              f"--conf) or as a batch property", file=sys.stderr, flush=True)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    # ALS truncates its lineage every `checkpointInterval` iterations only when a checkpoint
    # folder is set; without one, 20 iterations overflow the task deserializer's stack.
    spark.sparkContext.setCheckpointDir(spark_cfg.checkpoint_dir or _temporary_checkpoint_dir())
    return spark


def _temporary_checkpoint_dir() -> str:
    path = tempfile.mkdtemp(prefix="recsys-checkpoints-")
    atexit.register(shutil.rmtree, path, True)
    return path
