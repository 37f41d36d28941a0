"""BigQuery in and out through the spark-bigquery-connector.

``BigQuerySink`` writes every output table with the connector (``writeMethod`` direct = Storage
Write API, indirect = files in a temporary GCS bucket + a load job) and reads tables or queries
back. Overwrites are atomic on BigQuery's side: the direct method writes a temporary table and
swaps the rows in with one MERGE statement, the indirect method runs one WRITE_TRUNCATE load job,
so a failed write leaves the previous table as it was and a re-run never duplicates rows.

Credentials are Application Default Credentials, found by the connector and the client library
themselves; nothing here reads, logs or stores them. ``bigquery.access_token_env`` names an
environment variable holding an OAuth access token (for an emulator or short-lived tokens); its
value is passed to the connector at run time and never written anywhere.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Union

from pyspark.sql import DataFrame, SparkSession

from recsys.config import BigQueryConfig
from recsys.errors import ConfigError, InputError
from recsys.schemas import is_query, valid_dataset, valid_project, validate_table_id  # noqa: F401
from recsys.tasks import TaskTable


class BigQueryConnection:
    """Connector options and a client for one BigQuery project (or an emulator)."""

    def __init__(self, cfg: BigQueryConfig):
        if cfg.project is not None and not valid_project(cfg.project):
            raise ConfigError(f"bigquery.project {cfg.project!r} is not a valid project id")
        if cfg.write_method == "indirect" and not cfg.temporary_gcs_bucket:
            raise ConfigError("bigquery.write_method indirect needs bigquery.temporary_gcs_bucket")
        self.cfg = cfg

    def _token(self) -> Optional[str]:
        name = self.cfg.access_token_env
        if name is None:
            return None
        token = os.environ.get(name)
        if not token:
            raise ConfigError(f"bigquery.access_token_env: environment variable {name} is not set")
        return token

    def options(self) -> Dict[str, str]:
        """Connector options common to every read and write."""
        cfg, options = self.cfg, {}
        if cfg.project:
            options["parentProject"] = cfg.project
            options["project"] = cfg.project
        if cfg.http_endpoint:
            options["bigQueryHttpEndpoint"] = cfg.http_endpoint
        if cfg.storage_grpc_endpoint:
            options["bigQueryStorageGrpcEndpoint"] = cfg.storage_grpc_endpoint
        token = self._token()
        if token:
            options["gcpAccessToken"] = token
        return options

    def full_id(self, dataset: str, table: str) -> str:
        """``project.dataset.table`` (the project may be left to the connector's default)."""
        table_id = f"{dataset}.{table}" if not self.cfg.project else \
            f"{self.cfg.project}.{dataset}.{table}"
        return validate_table_id(table_id)

    def client(self):
        """A google-cloud-bigquery client for the same project and endpoint."""
        from google.cloud import bigquery  # optional dependency: only BigQuery users need it

        kwargs: Dict[str, object] = {"project": self.cfg.project, "location": self.cfg.location}
        if self.cfg.http_endpoint:
            from google.api_core.client_options import ClientOptions

            kwargs["client_options"] = ClientOptions(api_endpoint=self.cfg.http_endpoint)
        token = self._token()
        if token:
            from google.oauth2.credentials import Credentials

            kwargs["credentials"] = Credentials(token)
        return bigquery.Client(**kwargs)

    def read(self, spark: SparkSession, ref: str, materialization_dataset: Optional[str]) -> DataFrame:
        """A table (``[project.]dataset.table``) or a query (``SELECT ...``) as a DataFrame."""
        reader = spark.read.format("bigquery").options(**self.options())
        if is_query(ref):
            reader = reader.option("viewsEnabled", "true").option("query", ref)
            if materialization_dataset:
                reader = reader.option("materializationDataset", materialization_dataset)
            return reader.load()
        return reader.load(validate_table_id(ref))


class BigQuerySink:
    """Output tables in one BigQuery dataset, replaced atomically by each write.

    Models are files, not tables: ``model_store`` keeps them under ``sink.path`` (a local folder,
    or a ``gs://`` path on Dataproc), see ``recsys.sinks.model_store``.
    """

    def __init__(self, cfg: BigQueryConfig, dataset: str, model_store):
        if not valid_dataset(dataset):
            raise ConfigError(f"sink.dataset {dataset!r} must be letters, digits and underscores")
        self.connection = BigQueryConnection(cfg)
        self.cfg = cfg
        self.dataset = dataset
        self.dataset_dir = f"bigquery:{cfg.project or '(default project)'}.{dataset}"
        self._models = model_store
        self._dataset_ready = False

    def _ensure_dataset(self) -> None:
        if self._dataset_ready or not self.cfg.create_dataset:
            return
        from google.cloud import bigquery

        client = self.connection.client()
        ref = f"{client.project}.{self.dataset}"
        dataset = bigquery.Dataset(ref)
        dataset.location = self.cfg.location
        client.create_dataset(dataset, exists_ok=True)
        self._dataset_ready = True

    def table_path(self, name: str) -> str:
        """The table's full id."""
        return self.connection.full_id(self.dataset, name)

    def write(self, name: str, df: Union[DataFrame, TaskTable]) -> str:
        """Replace table ``name`` with ``df`` (one atomic overwrite on BigQuery's side)."""
        if isinstance(df, TaskTable):
            df = df.frame()
        self._ensure_dataset()
        table_id = self.table_path(name)
        writer = (df.write.format("bigquery").options(**self.connection.options())
                  .option("writeMethod", self.cfg.write_method))
        if self.cfg.write_method == "indirect":
            writer = writer.option("temporaryGcsBucket", self.cfg.temporary_gcs_bucket)
        writer.mode("overwrite").save(table_id)
        return table_id

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        """Read table ``name`` of the dataset."""
        if not self.exists(name):
            raise InputError(f"table {self.table_path(name)} not found")
        return self.connection.read(spark, self.table_path(name), None)

    def exists(self, name: str) -> bool:
        """True when table ``name`` exists."""
        from google.api_core.exceptions import NotFound

        try:
            self.connection.client().get_table(self.table_path(name))
            return True
        except NotFound:
            return False

    def model_path(self, name: str) -> str:
        """Where model ``name`` is read from."""
        return self._models.model_path(name)

    def model_location(self, spark: SparkSession, name: str) -> str:
        """The folder holding the current version of model ``name``."""
        return self._models.model_location(spark, name)

    def save_model(self, name: str, save: Callable[[str], None]) -> str:
        """Publish a model folder (see ``LocalWarehouse.save_model``)."""
        return self._models.save_model(name, save)
