"""The same tables on 1, 2 and 4 cores, and on a real Spark standalone cluster.

The cluster is a master and two single-core workers on loopback, started and stopped with
Spark's own ``spark-class`` from the pip pyspark (``benchmarks/standalone.py``, which the scaling
benchmark uses too); the pipeline is submitted to it with
``spark-submit --py-files dist/recsys.zip`` as README shows for Dataproc, so the executors import
recsys from the zip. Its tables must equal a local run's value for value (the top-5 lists in
order); only ``training_info.duration_ms`` may differ.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from standalone import SPARK_HOME, standalone_cluster, zip_recsys  # benchmarks/standalone.py
from test_reliability import assert_same_tables, finish, job_args, run, snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def source(small_source):
    """The shipped sample's first 60 users (real ml-latest lines) and one bad line
    (tests/conftest.py)."""
    return small_source


@pytest.fixture(scope="module")
def local_tables(reference_run):
    """The pipeline on local[2]: the reference every other run must reproduce (the session's
    reference run, tests/conftest.py, 5 iterations; tests/test_reliability.py compares its
    reruns with it too)."""
    return reference_run[1]


@pytest.mark.parametrize("master", ["local[1]", "local[4]"])
def test_cores_do_not_change_the_tables(source, local_tables, master, tmp_path):
    """A fresh process of the reference run's config and seed, on other cores, writes its
    tables value for value (the top-5 lists in order)."""
    finish(run(job_args(source, tmp_path, "--set", f"spark.master={master}")), timeout=900)
    got = snapshot(tmp_path)
    assert_same_tables(got, local_tables)
    # Independently of the reference: every one of the 60 users has a top-5, and the bad line
    # (line 8) is the one reject.
    assert sorted(got["recommend_top5"]["user_id"]) == list(range(1, 61))
    assert got["ratings_rejected"]["line_number"].tolist() == [8]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:<port> with two alive single-core workers (benchmarks/standalone.py);
    stopped afterwards."""
    with standalone_cluster(workers=2, cores=1, memory="2g",
                            work=tmp_path_factory.mktemp("standalone")) as (url, env):
        yield url, env


def test_standalone_cluster_gives_the_local_tables(source, local_tables, cluster, tmp_path):
    url, env = cluster
    dist = tmp_path / "dist"
    dist.mkdir()
    # README: mkdir -p dist && python3 -m zipfile -c dist/recsys.zip recsys
    archive_path = zip_recsys(dist)
    with zipfile.ZipFile(archive_path) as archive:
        assert "recsys/model/bqml_als.py" in archive.namelist()
    sink = tmp_path / "sink"
    # An empty spark.master: the session takes spark-submit's --master.
    args = job_args(source, sink, "--set", "spark.master=")
    # The executors run with the suite's JVM options, as its other JVMs do (tests/conftest.py),
    # but its Spark settings (-Dspark.*: Spark refuses them there).
    executor_opts = " ".join(opt for opt in os.environ["SPARK_SUBMIT_OPTS"].split()
                             if not opt.startswith("-Dspark."))
    cmd = [os.path.join(SPARK_HOME, "bin", "spark-submit"), "--master", url,
           "--py-files", archive_path, "--conf", "spark.executor.memory=1g",
           "--conf", f"spark.executor.extraJavaOptions={executor_opts}",
           "--conf", f"spark.pyspark.python={sys.executable}",
           "--conf", f"spark.pyspark.driver.python={sys.executable}",
           os.path.join(REPO, "jobs", "pipeline.py"), *args,
           "--set", f"spark.checkpoint_dir={tmp_path / 'checkpoints'}"]
    # Not on the driver's path but through the zip: a stale copy elsewhere must not be used.
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 blocks" in proc.stdout
    assert_same_tables(snapshot(sink), local_tables)
    shutil.rmtree(dist)
