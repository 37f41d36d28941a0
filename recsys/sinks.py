"""Table sinks: the only code that writes output tables.

``LocalWarehouse`` keeps each table as Parquet under ``<path>/<dataset>/<table>``. That name is a
symbolic link to an immutable version folder, ``<dataset>/.versions/<table>/<version>``; a write
fills a new version folder and then swaps the link with one atomic ``rename``. A run that fails or
is killed mid-write leaves the previous table in place and readable; its partial folder is removed
by the next write. The previous version is kept so a reader that opened it can finish.

A BigQuery sink implements the same ``TableSink`` protocol (``write``, ``read``).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import uuid
from typing import Callable, Optional, Protocol

from pyspark.sql import DataFrame, SparkSession

from recsys.errors import ConfigError, InputError

VERSIONS_DIR = ".versions"
MODELS_DIR = "_models"
KEEP_VERSIONS = 2


class TableSink(Protocol):
    """Writes and reads named tables of one dataset."""

    def write(self, name: str, df: DataFrame) -> str:
        """Replace table ``name`` with ``df``; returns where it was written."""

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        """Read table ``name``."""


class LocalWarehouse:
    """Parquet tables under ``<root>/<dataset>/<table>``, each replaced atomically."""

    def __init__(self, root: str, dataset: str):
        if "://" in root and not root.startswith("file://"):
            raise ConfigError(
                f"sink.path must be a local folder for sink.type local, got {root!r}")
        root = root[len("file://"):] if root.startswith("file://") else root
        self.root = os.path.abspath(os.path.expanduser(root))
        self.dataset = dataset
        self.dataset_dir = os.path.join(self.root, dataset)

    def table_path(self, name: str) -> str:
        """Where table ``name`` is read from."""
        return os.path.join(self.dataset_dir, name)

    def model_path(self, name: str) -> str:
        """Where model ``name`` is read from (``<dataset>/_models/<name>``)."""
        return os.path.join(self.dataset_dir, MODELS_DIR, name)

    def model_location(self, spark: SparkSession, name: str) -> str:
        """The folder holding the current version of model ``name``."""
        del spark  # the link already points at the current version
        return self.model_path(name)

    def exists(self, name: str) -> bool:
        """True when table ``name`` has been written."""
        return os.path.exists(self.table_path(name))

    def write(self, name: str, df: DataFrame) -> str:
        """Write ``df`` as a new version of table ``name`` and switch the table to it."""
        return self._publish(self.dataset_dir, name,
                             lambda target: df.write.mode("errorifexists").parquet(target))

    def save_model(self, name: str, save: Callable[[str], None]) -> str:
        """Publish a model folder written by ``save(path)`` as model ``name``, atomically."""
        return self._publish(os.path.join(self.dataset_dir, MODELS_DIR), name, save)

    def _publish(self, parent: str, name: str, write: Callable[[str], None]) -> str:
        versions = os.path.join(parent, VERSIONS_DIR, name)
        os.makedirs(versions, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{uuid.uuid4().hex[:8]}"
        write(os.path.join(versions, version))
        link = os.path.join(parent, name)
        _switch_link(link, os.path.join(VERSIONS_DIR, name, version))
        _prune(versions, current=version)
        return link

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        """Read table ``name``, failing with one line if it was never written."""
        if not self.exists(name):
            raise InputError(f"table {self.dataset}.{name} not found under {self.dataset_dir}")
        return spark.read.parquet(self.table_path(name))


def _switch_link(link: str, relative_target: str) -> None:
    """Point ``link`` at ``relative_target`` with one atomic rename."""
    parent, name = os.path.split(link)
    if os.path.isdir(link) and not os.path.islink(link):
        # A plain folder (written by something else): move it aside once; from now on the
        # table is a link and every later switch is atomic.
        os.replace(link, os.path.join(parent, VERSIONS_DIR, name, "00000000-legacy"))
    temp_link = os.path.join(parent, f".{name}.{uuid.uuid4().hex}.link")
    os.symlink(relative_target, temp_link)
    os.replace(temp_link, link)


def _prune(versions: str, current: str) -> None:
    """Drop all versions but ``current`` and the newest complete one before it.

    Versions sort by their UTC time prefix. An incomplete folder (a run killed mid-write) is
    never the one kept for readers, whatever its time.
    """
    names = sorted(os.listdir(versions))
    older = [n for n in names if n < current and _complete(os.path.join(versions, n))]
    keep = {current, *older[len(older) - (KEEP_VERSIONS - 1):]}
    for entry in names:
        if entry not in keep:
            shutil.rmtree(os.path.join(versions, entry), ignore_errors=True)


def _complete(folder: str) -> bool:
    """A finished table write (Spark's ``_SUCCESS``) or model save (its last part, the
    metadata, finished); the legacy folder moved aside by ``_switch_link`` counts too."""
    return (os.path.exists(os.path.join(folder, "_SUCCESS"))
            or os.path.exists(os.path.join(folder, "metadata", "_SUCCESS"))
            or folder.endswith("-legacy"))


class VersionedModelStore:
    """Models under any Hadoop path (``gs://...``) without links or renames: each save writes a
    new folder ``<root>/<dataset>/_models/<name>/<version>/``; the newest folder whose
    ``metadata`` exists (written last) is the current model, so an unfinished save is ignored.
    Old versions are not deleted (that needs a filesystem client; use a bucket lifecycle rule).
    """

    def __init__(self, root: str, dataset: str):
        self.base = f"{root.rstrip('/')}/{dataset}/{MODELS_DIR}"

    def model_path(self, name: str) -> str:
        """Folder of model ``name``'s versions."""
        return f"{self.base}/{name}"

    def save_model(self, name: str, save: Callable[[str], None]) -> str:
        """Write a new version of model ``name``."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = f"{self.model_path(name)}/{stamp}-{uuid.uuid4().hex[:8]}"
        save(target)
        return target

    def model_location(self, spark: SparkSession, name: str) -> str:
        """The newest complete version of model ``name``."""
        from pyspark.errors import AnalysisException
        from pyspark.sql import functions as F

        try:
            files = spark.read.text(f"{self.model_path(name)}/*/metadata").select(
                F.input_file_name().alias("f")).distinct().collect()
        except AnalysisException:
            files = []
        versions = sorted(row.f.rsplit("/metadata/", 1)[0] for row in files)
        if not versions:
            raise InputError(f"no trained model at {self.model_path(name)} (run the train job first)")
        return versions[-1]


def model_store(root: str, dataset: str):
    """Versioned model folders: linked local ones, or plain folders on a remote filesystem."""
    if "://" in root and not root.startswith("file://"):
        return VersionedModelStore(root, dataset)
    return LocalWarehouse(root, dataset)


def make_sink(cfg):
    """The sink named by ``sink.type`` (``cfg`` is the whole ``Config``)."""
    if cfg.sink.type == "local":
        return LocalWarehouse(cfg.sink.path, cfg.sink.dataset)
    if cfg.sink.type == "bigquery":
        from recsys.bigquery import BigQuerySink

        return BigQuerySink(cfg.bigquery, cfg.sink.dataset,
                            model_store(cfg.sink.path, cfg.sink.dataset))
    raise ConfigError(f"sink.type {cfg.sink.type!r} is not supported")


def _is_query(ref: str) -> bool:
    from recsys.bigquery import is_query

    return is_query(ref)


def resolve_table(sink, spark: SparkSession, ref: Optional[str]) -> Optional[DataFrame]:
    """A table reference from config: a table name of the sink's dataset, a Parquet path, or
    (BigQuery sink) a ``dataset.table`` id or a ``SELECT`` query."""
    if ref is None:
        return None
    bigquery = hasattr(sink, "connection")
    if bigquery and _is_query(ref):  # before the path test: SQL may hold a '/'
        return sink.connection.read(spark, ref, sink.dataset)
    if "/" in ref or os.sep in ref:
        if "://" not in ref and not os.path.exists(os.path.expanduser(ref)):
            raise InputError(f"table path not found: {ref}")
        return spark.read.parquet(os.path.expanduser(ref))
    if bigquery and ("." in ref or " " in ref.strip()):
        return sink.connection.read(spark, ref, sink.dataset)
    return sink.read(spark, ref)
