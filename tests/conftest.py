"""Shared fixtures: one local SparkSession for the whole test run, built by the project factory."""

import os
import shutil
import sys
import types

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "ml-latest-small")
# Benchmark-only code (the synthetic data generator, the NumPy ALS floor) lives in benchmarks/.
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from recsys.config import SparkConfig
    from recsys.session import build_session

    conf = types.MappingProxyType({
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "2g",
    })
    session = build_session(SparkConfig(
        master="local[2]", app_name="recsys-tests", log_level="ERROR", conf=conf,
        checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints"))))
    yield session
    session.stop()


@pytest.fixture
def fixture_path():
    return lambda *parts: os.path.join(FIXTURES, *parts)


# --- one pipeline run shared by the files that compare other runs against it --------------------

@pytest.fixture(scope="session")
def small_source(tmp_path_factory):
    """The shipped sample's first 60 users (real ml-latest lines), plus one bad line (line 8):
    the source of tests/test_reliability.py and tests/test_distributed.py."""
    folder = tmp_path_factory.mktemp("small-src")
    with open(os.path.join(SAMPLE, "ratings.csv")) as fh:
        lines = [line for n, line in enumerate(fh)
                 if n == 0 or int(line.split(",", 1)[0]) <= 60]
    lines.insert(7, "1,abc,4.0,964982703\n")
    (folder / "ratings.csv").write_text("".join(lines))
    return folder


@pytest.fixture(scope="session")
def reference_run(small_source, tmp_path_factory):
    """One fresh ``jobs/pipeline.py`` run on ``small_source`` (local[2], 5 iterations,
    tests/test_reliability.py's ``job_args``): its warehouse folder and every table as read
    right after it ended. Read-only: a test that writes to a warehouse like it (a rerun) works
    on a ``copy_warehouse`` of it."""
    from test_reliability import finish, job_args, run, snapshot

    sink = tmp_path_factory.mktemp("reference-run")
    finish(run(job_args(small_source, sink)), timeout=900)
    return sink, snapshot(sink)


def copy_warehouse(src, dst):
    """A copy of a local warehouse folder as a run left it: versions, manifests, views and the
    table links (relative symbolic links, copied as links, so the copy points into itself)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
