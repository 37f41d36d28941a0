"""Shared fixtures: one local SparkSession for the whole test run, built by the project factory."""

import os
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
