"""A fake credential never reaches a log, a written config or model, or any file a job wrote.

The pipeline job runs as its own process (pyspark 3.5, the real connector, the emulator) with an
access token in the environment variable named by ``bigquery.access_token_env``, Spark logging
at INFO and Spark's event log on; then stdout, stderr, the event log, the model files, the
checkpoint folder and every other file under the run's folders are scanned for the token (and
for its base64 form).
"""

import base64
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from .conftest import CONNECTOR

pytestmark = pytest.mark.bigquery
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fake_credential_is_in_no_log_or_file(bq_emulator, tmp_path):
    token = f"ya29.fake-secret-{uuid.uuid4().hex}"
    rng = np.random.default_rng(8)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 20, 300),
                                                      rng.integers(1, 25, 300))})
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u},{i},{rng.integers(1, 11) / 2},{1_000_000_000 + n}" for n, (u, i) in enumerate(pairs)]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    events, checkpoints, models = tmp_path / "events", tmp_path / "checkpoints", tmp_path / "models"
    events.mkdir()
    sets = {
        "source.format": "ml-latest", "source.ratings": str(tmp_path / "ratings.csv"),
        "source.movies": os.path.join(REPO, "data", "ml-latest-small", "movies.csv"),
        "sink.type": "bigquery", "sink.dataset": "recsys_secrets", "sink.path": str(models),
        "bigquery.project": bq_emulator.project,
        "bigquery.http_endpoint": bq_emulator.rest_endpoint,
        "bigquery.storage_grpc_endpoint": bq_emulator.grpc_endpoint,
        "bigquery.access_token_env": "RECSYS_FAKE_TOKEN", "bigquery.connector": CONNECTOR,
        "model.num_factors": "3", "model.max_iterations": "2",
        "spark.master": "local[2]", "spark.log_level": "INFO",
        "spark.checkpoint_dir": str(checkpoints),
        "spark.conf.spark.eventLog.enabled": "true",
        "spark.conf.spark.eventLog.dir": f"file://{events}",
        "spark.conf.spark.driver.extraJavaOptions": bq_emulator.truststore_java_options,
        "spark.conf.spark.ui.enabled": "false",
    }
    args = [sys.executable, os.path.join(REPO, "jobs", "pipeline.py"),
            "--config", os.path.join(REPO, "conf", "local.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    env = dict(os.environ, RECSYS_FAKE_TOKEN=token, PYTHONPATH=REPO)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recsys_secrets" in proc.stdout and "INFO" in proc.stderr  # it ran, and talked

    needles = [token.encode(), base64.b64encode(token.encode())]
    for needle in needles:
        assert needle not in proc.stdout.encode() and needle not in proc.stderr.encode()
    scanned = []
    for folder, _, files in os.walk(tmp_path):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                content = fh.read()
            assert not any(n in content for n in needles), f"the token leaked into {path}"
            scanned.append(path)
    assert any("events" in p for p in scanned), "no event log was written"
    assert any(p.endswith(os.path.join("metadata", "part-00000")) or "metadata" in p
               for p in scanned), "the model's metadata was not scanned"
