"""The same tables on 1, 2 and 4 cores, and on a real Spark standalone cluster.

The cluster is a master and two single-core workers on loopback, started and stopped here with
Spark's own ``spark-class`` (from the pip pyspark); the pipeline is submitted to it with
``spark-submit --py-files dist/recsys.zip`` as README shows for Dataproc, so the executors import
recsys from the zip. Its tables must equal a local run's value for value (the top-5 lists in
order); only ``training_info.duration_ms`` may differ.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import pyspark
import pytest

from test_reliability import assert_same_tables, finish, job_args, run, snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARK_HOME = os.path.dirname(os.path.abspath(pyspark.__file__))
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
    finish(run(job_args(source, tmp_path, "--set", f"spark.master={master}")), timeout=900)
    assert_same_tables(snapshot(tmp_path), local_tables)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:<port> with two alive single-core workers; stopped afterwards."""
    work = tmp_path_factory.mktemp("standalone")
    env = dict(os.environ, SPARK_HOME=SPARK_HOME, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_LOG_DIR=str(work / "logs"), SPARK_WORKER_DIR=str(work / "worker"),
               PYSPARK_PYTHON=sys.executable)
    spark_class = os.path.join(SPARK_HOME, "bin", "spark-class")
    port, ui = _free_port(), _free_port()
    procs = [subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(ui)], env=env, start_new_session=True,
        stdout=open(work / "master.log", "w"), stderr=subprocess.STDOUT)]
    url = f"spark://127.0.0.1:{port}"
    for n in range(2):
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", "1", "--memory", "2g", "--webui-port", str(_free_port()),
             "--work-dir", str(work / f"worker{n}"), url], env=env, start_new_session=True,
            stdout=open(work / f"worker{n}.log", "w"), stderr=subprocess.STDOUT))
    try:
        deadline = time.time() + 120
        alive = 0
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as resp:
                    import json

                    alive = json.load(resp).get("aliveworkers", 0)
            except OSError:
                alive = 0
            if alive == 2:
                break
            time.sleep(0.5)
        assert alive == 2, (work / "master.log").read_text()[-2000:]
        yield url, env
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=60)


def test_standalone_cluster_gives_the_local_tables(source, local_tables, cluster, tmp_path):
    url, env = cluster
    dist = tmp_path / "dist"
    dist.mkdir()
    # README: mkdir -p dist && python3 -m zipfile -c dist/recsys.zip recsys
    subprocess.run([sys.executable, "-m", "zipfile", "-c", str(dist / "recsys.zip"), "recsys"],
                   cwd=REPO, check=True)
    with zipfile.ZipFile(dist / "recsys.zip") as archive:
        assert "recsys/model/bqml_als.py" in archive.namelist()
    sink = tmp_path / "sink"
    # An empty spark.master: the session takes spark-submit's --master.
    args = job_args(source, sink, "--set", "spark.master=")
    cmd = [os.path.join(SPARK_HOME, "bin", "spark-submit"), "--master", url,
           "--py-files", str(dist / "recsys.zip"), "--conf", "spark.executor.memory=1g",
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
