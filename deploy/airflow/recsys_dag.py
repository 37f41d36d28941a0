"""The BigQuery ML tutorial as recsys jobs, orchestrated: ingest -> train -> evaluate ->
recommend -> compare, one Dataproc Serverless batch per job (Google provider's
``DataprocCreateBatchOperator``). Checked with Airflow 2.10 (tests/test_airflow_dag.py); it
imports ``DAG`` from ``airflow.sdk`` where that exists (Airflow 3), not run there.

Each task runs ``jobs/<job>.py --config dataproc.yaml`` on runtime 2.3 LTS (Spark 3.5;
``runtime_version`` 3.0 runs Spark 4.0), reading from and writing to BigQuery as
``conf/dataproc.yaml`` says (docs/bigquery.md). The jobs hand each other tables and the model
only: ``recsys_tutorial`` tables in BigQuery, model versions under ``gs://<bucket>/recsys``; so a
failed task is retried alone. The compare task checks the run against BigQuery ML's own model
(``bqml_model``), read through ML.EVALUATE, ML.TRAINING_INFO and ML.WEIGHTS queries; its
``compare_*`` tables land in the sink dataset.

Upload once per release (``CODE`` below: ``gs://<bucket>/recsys/code``):

    python3 -m zipfile -c dist/recsys.zip recsys
    gcloud storage cp jobs/*.py dist/recsys.zip conf/dataproc.yaml gs://BUCKET/recsys/code/

This file imports nothing of recsys: the Composer environment does not need the package.
"""

from __future__ import annotations

import datetime

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
from airflow.providers.google.cloud.operators.dataproc import DataprocCreateBatchOperator

DAG_ID = "recsys_tutorial"
# The jobs in the order they run; each one's tables are the next one's input.
JOBS = ("ingest", "train", "evaluate", "recommend", "compare")
# Serverless runtime: 2.3 LTS (Spark 3.5, supported until 2027-11-26); 2.2 LTS is out of
# support since 2026-09-30. 3.0 runs Spark 4.0.
RUNTIME_VERSION = "2.3"

CODE = "gs://{{ params.bucket }}/recsys/code"
PARAMS = {
    "project": "CHANGE-ME",           # runs the batches and holds the BigQuery datasets
    "region": "us-central1",
    "bucket": "CHANGE-ME",            # code, models and checkpoints under gs://<bucket>/recsys
    "runtime_version": RUNTIME_VERSION,
    "driver_memory": "8g",            # a batch property: the driver JVM starts before the job
    "service_account": None,          # None: the project's default Compute Engine account
    "bqml_model": "bqml_tutorial.mf_explicit",   # BigQuery ML's model, for the compare task
}

COMMON_ARGS = [
    "--config", "dataproc.yaml",
    "--set", "bigquery.project={{ params.project }}",
    "--set", "sink.path=gs://{{ params.bucket }}/recsys",
    "--set", "spark.checkpoint_dir=gs://{{ params.bucket }}/recsys/checkpoints",
]


def bqml_query(function: str) -> str:
    """A query of BigQuery ML's own model, a compare.bqml table reference."""
    return f"SELECT * FROM ML.{function}(MODEL `{{{{ params.project }}}}.{{{{ params.bqml_model }}}}`)"


# The compare job's BigQuery ML side: the model's own ML.EVALUATE, ML.TRAINING_INFO, ML.WEIGHTS.
EXTRA_ARGS = {
    "compare": ["--set", f"compare.bqml.evaluate.table={bqml_query('EVALUATE')}",
                "--set", f"compare.bqml.training_info.table={bqml_query('TRAINING_INFO')}",
                "--set", f"compare.bqml.weights.table={bqml_query('WEIGHTS')}"],
}


def batch(job: str) -> dict:
    """The Dataproc Serverless batch of one job (templated: rendered when the task runs)."""
    return {
        "pyspark_batch": {
            "main_python_file_uri": f"{CODE}/{job}.py",
            "python_file_uris": [f"{CODE}/recsys.zip"],
            "file_uris": [f"{CODE}/dataproc.yaml"],
            "args": COMMON_ARGS + EXTRA_ARGS.get(job, []),
        },
        "runtime_config": {
            "version": "{{ params.runtime_version }}",
            "properties": {"spark.driver.memory": "{{ params.driver_memory }}"},
        },
        "environment_config": {
            "execution_config": {"service_account": "{{ params.service_account or '' }}"},
        },
    }


with DAG(
    dag_id=DAG_ID,
    description="BigQuery ML's matrix factorization tutorial as recsys jobs on Dataproc",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=5)},
    tags=["recsys", "dataproc"],
) as dag:
    previous = None
    for job in JOBS:
        task = DataprocCreateBatchOperator(
            task_id=job,
            project_id="{{ params.project }}",
            region="{{ params.region }}",
            batch=batch(job),
            # Unique per run and try: a retry submits a new batch instead of waiting again on
            # the failed one.
            batch_id=f"recsys-{job}-{{{{ ts_nodash | lower }}}}-{{{{ ti.try_number }}}}",
        )
        if previous is not None:
            previous >> task
        previous = task
