"""BigQuery integration tests: the real spark-bigquery-connector against a local bqemulator.

Needs `bash .ci/bigquery/setup.sh` (creates .venv-bqemu and .venv-spark35), then, from the repo
root, in a pytest process of its own:

    .venv-spark35/bin/python -m pytest -q -p no:cacheprovider tests/bigquery -m bigquery

Only pyspark 3.5 is covered: the connector built for Spark 4 (spark-4.0-bigquery) cannot be
downloaded in this environment, and the 3.5 connector does not load on Spark 4. Every test here is
marked `bigquery` and skipped (with the reason) when the emulator, pyspark 3.5 or the BigQuery
client is missing -- except when the tier itself is run (`-m bigquery`) in CI (CI=true, set by
.ci/run): there a missing piece fails every test instead, so CI cannot pass on a skipped tier.
"""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from .emulator import BQEMULATOR, BigQueryEmulator

HERE = os.path.dirname(os.path.abspath(__file__))
CONNECTOR = "com.google.cloud.spark:spark-3.5-bigquery:0.42.1"
PROJECT = "test-project"


def _skip_reason():
    if not BQEMULATOR.is_file():
        return (f"BigQuery emulator not installed ({BQEMULATOR} missing): "
                "run `bash .ci/bigquery/setup.sh`, then pytest with .venv-spark35/bin/python")
    try:
        version = importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if not (version or "").startswith("3.5."):
        return (f"BigQuery tests need pyspark 3.5.x, this is pyspark {version} ({sys.executable}): "
                f"the connector {CONNECTOR} only runs on Spark 3.5; use .venv-spark35/bin/python")
    try:
        importlib.metadata.version("google-cloud-bigquery")
    except importlib.metadata.PackageNotFoundError:
        return f"google-cloud-bigquery is not installed in {sys.executable}; use .venv-spark35/bin/python"
    return None


SKIP_REASON = _skip_reason()


def pytest_configure(config):
    config.addinivalue_line("markers", "bigquery: needs the local BigQuery emulator and pyspark 3.5 "
                                       "(tests/bigquery; install with .ci/bigquery/setup.sh)")


def _in_this_folder(item):
    return str(item.path).startswith(HERE + os.sep)


def tier_required(config) -> bool:
    """CI runs the tier (`-m bigquery`): its prerequisites must be there."""
    expression = config.getoption("markexpr") or ""
    return (os.environ.get("CI") == "true" and "bigquery" in expression
            and "not bigquery" not in expression)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection reads the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _in_this_folder(item):
            item.add_marker(pytest.mark.bigquery)
            if SKIP_REASON and not tier_required(config):
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_runtest_setup(item):
    if SKIP_REASON and _in_this_folder(item) and tier_required(item.config):
        pytest.fail(f"CI runs the BigQuery tier but {SKIP_REASON}", pytrace=False)


_running = []  # resources to stop as soon as the last test of this folder is done


def _stop_all():
    while _running:
        _running.pop()()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    # Session-scoped fixtures would otherwise live until the end of the whole run, and the
    # main tests' `spark` fixture (getOrCreate) would pick up this folder's session.
    if _in_this_folder(item) and (nextitem is None or not _in_this_folder(nextitem)):
        _stop_all()


@pytest.fixture(scope="session")
def bq_emulator():
    emulator = BigQueryEmulator(project=PROJECT).start()
    _running.append(emulator.stop)
    yield emulator
    _stop_all()


@pytest.fixture(scope="session")
def bq_spark(bq_emulator, tmp_path_factory):
    from pyspark import SparkContext

    from recsys.config import SparkConfig
    from recsys.session import build_session

    if SparkContext._gateway is not None:
        pytest.fail("a Spark JVM was already started in this process without the BigQuery connector "
                    "and the emulator's truststore: run tests/bigquery in a pytest process of its own")
    session = build_session(SparkConfig(
        master="local[2]", app_name="recsys-bigquery-tests", log_level="ERROR",
        checkpoint_dir=str(tmp_path_factory.mktemp("bq-checkpoints")),
        conf={
            # fetched by Spark's Ivy from Maven Central on first use, cached in ~/.ivy2
            "spark.jars.packages": CONNECTOR,
            # trust the self-signed cert of the emulator's TLS proxy (local mode: the driver
            # JVM runs the tasks too)
            "spark.driver.extraJavaOptions": bq_emulator.truststore_java_options,
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.memory": "1g",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
        }))

    def stop_spark():
        gateway = SparkContext._gateway
        session.stop()
        # End this JVM now (it holds the emulator's truststore and the connector's jars), and
        # wait for it so no process is left behind; a later session in this process starts a
        # fresh JVM.
        proc = getattr(gateway, "proc", None)
        if gateway is not None:
            gateway.shutdown()
            SparkContext._gateway = SparkContext._jvm = None
        if proc is not None:
            proc.stdin.close()  # the JVM exits when its stdin closes
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    _running.append(stop_spark)  # _stop_all pops: Spark stops before the emulator
    yield session
    _stop_all()
