"""Reruns and failed tasks (killed and concurrent runs: tests/test_runs.py). The failed-task run
is a separate process of the real job; the reference run and the rerun run in-process on the
suite's session. Fresh processes of the same config and seed, on 1 and 4 cores and on a
standalone cluster, write the reference run's tables: tests/test_distributed.py.

- a rerun leaves the same tables, without duplicates or leftover versions;
- a run in which one task fails once (local[2,2]) ends with the same tables as a clean run.
"""

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, SAMPLE, copy_warehouse

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TABLES = ("ratings", "ratings_rejected", "movies", "movies_rejected", "training_info",
          "weights", "embeddings", "evaluate", "recommend", "recommend_top5")
# Wall-clock columns: the only values allowed to differ between runs.
VOLATILE = {"training_info": ["duration_ms"]}
DATASET = "bqml_tutorial"


def job_args(source, sink, *extra):
    return ["--config", os.path.join(REPO, "conf", "local.yaml"),
            "--set", f"source.ratings={source / 'ratings.csv'}",
            "--set", f"source.movies={os.path.join(SAMPLE, 'movies.csv')}",
            "--set", f"sink.path={sink}", "--set", "model.max_iterations=5",
            "--set", "spark.master=local[2]", "--set", "ingest.max_reject_fraction=0.01",
            *extra]


def run(args, script=os.path.join(REPO, "jobs", "pipeline.py"), **popen):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def snapshot(sink):
    """Every table as a pandas frame in a canonical row order (nested lists kept as is)."""
    tables = {}
    for name in TABLES:
        frame = pd.read_parquet(os.path.join(sink, DATASET, name))
        frame = frame.drop(columns=VOLATILE.get(name, []))
        keys = [c for c in frame.columns if frame[c].map(lambda v: hasattr(v, "__len__")
                                                         and not isinstance(v, str)).sum() == 0]
        tables[name] = frame.sort_values(keys).reset_index(drop=True)
    return tables


def assert_same_tables(got, expected):
    for name in TABLES:
        left, right = got[name], expected[name]
        assert list(left.columns) == list(right.columns), name
        assert len(left) == len(right), name
        for col in left.columns:
            a = left[col].map(_plain).tolist()
            b = right[col].map(_plain).tolist()
            assert a == b, f"{name}.{col} differs"


def _plain(value):
    """Comparable form of a cell: nested arrays/structs become tuples, NaN a marker."""
    if isinstance(value, dict):
        return tuple((k, _plain(v)) for k, v in value.items())
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def versions(sink, name):
    return sorted(os.listdir(os.path.join(sink, DATASET, ".versions", name)))


def test_rerun_is_idempotent(spark, reference_run, small_source, tmp_path):
    """A rerun of the same config leaves the same tables, and keeps exactly its own and the
    previous run's version of each table (no duplicates, nothing left over). The rerun writes
    to a copy of the reference run's warehouse, which other tests read; it runs in-process, as
    the reference run did (the separate-process runs are the tests around it)."""
    from conftest import run_in_process

    sink = copy_warehouse(reference_run[0], tmp_path / "wh")
    expected = reference_run[1]
    assert len(versions(sink, "recommend")) == 1  # the copy holds the first run only
    args = job_args(small_source, sink)
    run_in_process(spark, args[3::2])
    assert_same_tables(snapshot(sink), expected)
    assert len(versions(sink, "recommend")) == 2


def test_one_failed_task_gives_the_clean_result(reference_run, small_source, tmp_path):
    _, expected = reference_run
    marker = tmp_path / "failed-once"
    script = os.path.join(REPO, "tests", "faulty_run.py")
    config = os.path.join(REPO, "conf", "local.yaml")
    args = job_args(small_source, tmp_path / "sink")[2:]
    proc = run([config, str(marker), *args, "--set", "spark.master=local[2,2]"], script=script)
    finish(proc)
    assert marker.exists(), "the injected failure never fired"
    assert_same_tables(snapshot(tmp_path / "sink"), expected)
