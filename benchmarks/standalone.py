"""A real Spark standalone cluster on loopback: a master and N workers, started with Spark's own
``spark-class`` from the pip pyspark and stopped when the ``with`` block ends. Used by
benchmarks/scaling.py and by the cluster test (tests/test_distributed.py).

    with standalone_cluster(workers=2, cores=1, memory="2g", work=Path("/tmp/sa")) as (url, env):
        subprocess.run([spark_submit(), "--master", url, ...], env=env)

By hand: ``python benchmarks/standalone.py --workers 2`` starts one, prints its URL and keeps it
up until Enter (or Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pyspark

SPARK_HOME = os.path.dirname(os.path.abspath(pyspark.__file__))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spark_submit() -> str:
    """The pip pyspark's spark-submit."""
    return os.path.join(SPARK_HOME, "bin", "spark-submit")


def zip_recsys(folder) -> str:
    """``folder``/recsys.zip, the ``--py-files`` archive, made by README's Dataproc command
    (``python3 -m zipfile -c dist/recsys.zip recsys``); its path."""
    path = os.path.join(str(folder), "recsys.zip")
    subprocess.run([sys.executable, "-m", "zipfile", "-c", path, "recsys"], cwd=REPO, check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def standalone_cluster(*, workers: int, cores: int, memory: str, work: Path,
                       timeout: float = 120) -> Iterator[Tuple[str, Dict[str, str]]]:
    """``(spark://127.0.0.1:<port>, env)`` once ``workers`` workers of ``cores`` cores and
    ``memory`` each are alive; logs go to ``work``. ``env`` runs spark-submit against it."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SPARK_HOME=SPARK_HOME, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_LOG_DIR=str(work / "logs"), SPARK_WORKER_DIR=str(work / "worker"),
               PYSPARK_PYTHON=sys.executable)
    spark_class = os.path.join(SPARK_HOME, "bin", "spark-class")
    port, ui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = [subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(ui)], env=env, start_new_session=True,
        stdout=open(work / "master.log", "w"), stderr=subprocess.STDOUT)]
    for n in range(workers):
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
             "--work-dir", str(work / f"worker{n}"), url], env=env, start_new_session=True,
            stdout=open(work / f"worker{n}.log", "w"), stderr=subprocess.STDOUT))
    try:
        deadline, alive = time.time() + timeout, 0
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as resp:
                    alive = json.load(resp).get("aliveworkers", 0)
            except OSError:
                alive = 0
            if alive == workers:
                break
            time.sleep(0.5)
        if alive != workers:
            raise RuntimeError(f"{alive} of {workers} workers alive after {timeout:.0f}s: "
                               + (work / "master.log").read_text()[-2000:])
        yield url, env
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A Spark standalone cluster on loopback, up "
                                                 "until Enter.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="2g", help="memory per worker")
    parser.add_argument("--work", default="/tmp/recsys-standalone", help="logs and work dirs")
    args = parser.parse_args(argv)
    with standalone_cluster(workers=args.workers, cores=args.cores, memory=args.memory,
                            work=Path(args.work)) as (url, _):
        print(f"{url}  (spark-submit --master {url} ...; Enter stops it)", flush=True)
        try:
            sys.stdin.readline()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
