"""deploy/airflow/recsys_dag.py: parsed by the real Airflow (DagBag, with the Google provider)
where it is installed, its task graph is the chain ingest -> train -> evaluate -> recommend ->
compare of Dataproc batches, and each rendered batch runs one of the repository's jobs on a
supported Serverless runtime. Without Airflow only the file's own constants are read (ast).

Airflow is not a test dependency of the project; its tier runs in a venv of its own:

    python3 -m venv .venv-airflow && .venv-airflow/bin/pip install -q "apache-airflow==2.10.5" \
        "apache-airflow-providers-google==19.0.0" pytest && .venv-airflow/bin/python -m pytest \
        -p no:cacheprovider tests/test_airflow_dag.py

(the versions it was checked with, 2026-12-03; the DAG's Airflow 3 import is not run here).
"""

import ast
import datetime
import os
import types

import pytest

from conftest import REPO

DAG_FILE = os.path.join(REPO, "deploy", "airflow", "recsys_dag.py")
CHAIN = ["ingest", "train", "evaluate", "recommend", "compare"]
# Serverless runtimes in support (docs/bigquery.md): 2.3 LTS until 2027-11-26, 3.0 until
# 2027-01-31; 2.2 LTS ended 2026-09-30.
SUPPORTED_RUNTIMES = {"2.3", "3.0"}


def test_the_dag_file_names_existing_jobs_and_a_supported_runtime():
    constants = {}
    for node in ast.parse(open(DAG_FILE).read()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    assert list(constants["JOBS"]) == CHAIN
    assert all(os.path.exists(os.path.join(REPO, "jobs", f"{job}.py")) for job in CHAIN)
    assert constants["RUNTIME_VERSION"] in SUPPORTED_RUNTIMES


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    # Airflow reads its home when first imported: a fresh one, so no ~/airflow is written.
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    pytest.importorskip("airflow", reason="Apache Airflow is not installed (see the docstring)")
    pytest.importorskip("airflow.providers.google.cloud.operators.dataproc",
                        reason="apache-airflow-providers-google is not installed")
    from airflow.models import DagBag

    bag = DagBag(dag_folder=os.path.dirname(DAG_FILE), include_examples=False)
    assert bag.import_errors == {}
    # The parsed DAG itself (get_dag would also ask the metadata database, which a parse
    # check has no need of).
    return bag.dags["recsys_tutorial"]


def test_the_task_graph_is_the_chain_of_jobs(dag):
    from airflow.providers.google.cloud.operators.dataproc import DataprocCreateBatchOperator

    assert sorted(dag.task_ids) == sorted(CHAIN)
    for before, after in zip(CHAIN, CHAIN[1:]):
        assert dag.get_task(before).downstream_task_ids == {after}
    assert dag.get_task(CHAIN[0]).upstream_task_ids == set()
    assert dag.get_task(CHAIN[-1]).downstream_task_ids == set()
    assert all(isinstance(task, DataprocCreateBatchOperator) for task in dag.tasks)


def test_each_rendered_batch_runs_its_job_on_a_supported_runtime(dag):
    params = dict(dag.params.dump()) if hasattr(dag.params, "dump") else dict(dag.params)
    params.update(project="my-project", bucket="my-bucket")
    context = {"params": params, "ts_nodash": "20261201T060000",
               "ti": types.SimpleNamespace(try_number=1)}
    ids = set()
    for job in CHAIN:
        task = dag.get_task(job)
        batch = task.render_template(task.batch, context)
        spark = batch["pyspark_batch"]
        assert spark["main_python_file_uri"] == f"gs://my-bucket/recsys/code/{job}.py"
        assert spark["python_file_uris"] == ["gs://my-bucket/recsys/code/recsys.zip"]
        assert spark["args"][:2] == ["--config", "dataproc.yaml"]
        sets = dict(a.split("=", 1) for a in spark["args"][3::2])
        assert sets["bigquery.project"] == "my-project"
        assert sets["sink.path"] == "gs://my-bucket/recsys"
        assert batch["runtime_config"]["version"] in SUPPORTED_RUNTIMES
        assert task.render_template(task.project_id, context) == "my-project"
        batch_id = task.render_template(task.batch_id, context)
        # Dataproc's rule for batch ids: 4 to 63 of [a-z0-9-], starting with a letter.
        assert 4 <= len(batch_id) <= 63 and batch_id[0].isalpha()
        assert set(batch_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        ids.add(batch_id)
    assert len(ids) == len(CHAIN)
    compare = dict(a.split("=", 1) for a in dag.get_task("compare").render_template(
        dag.get_task("compare").batch, context)["pyspark_batch"]["args"][3::2])
    assert compare["compare.bqml.evaluate.table"] == (
        "SELECT * FROM ML.EVALUATE(MODEL `my-project.bqml_tutorial.mf_explicit`)")


def test_retries_and_schedule(dag):
    assert dag.catchup is False
    assert all(task.retries == 1 and task.retry_delay == datetime.timedelta(minutes=5)
               for task in dag.tasks)
