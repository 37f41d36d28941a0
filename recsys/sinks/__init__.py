"""sinks: where tables go out, and the only code that writes them (``runs``: a job's
writes published as one unit; ``manifests``: the dataset's state; ``lock``: the writer lock).
Imports the foundations and ``recsys.bigquery``.

Table sinks: the only code that writes output tables.

``LocalWarehouse`` keeps each table as Parquet under ``<path>/<dataset>/``, in immutable version
folders ``.versions/<table>/<version>``. Writes belong to a run (``recsys.sinks.runs``): a job's run
takes the dataset's writer lock, writes new versions, and at its end switches every table to them
at once (one atomic rename of ``.current``) and records its manifest. A run that fails or is
killed changes no table; its partial folders are removed by the next successful run. A write
outside any run (library use) is a run of its own. Reads resolve through the run's manifest
(its own writes, then the last successful run's), never through a link that may move.

A table made in Python tasks (``recsys.tasks.TaskTable``, ML.RECOMMEND's crosses) is written
by those tasks themselves, with pyarrow (``task_files``); every other table by Spark's writer.

A BigQuery sink implements the same ``TableSink`` protocol (``write``, ``read``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional, Protocol, Union

from pyspark.sql import DataFrame, SparkSession

from recsys import paths
from recsys.sinks import runs, task_files
from recsys.tasks import TaskTable
from recsys.errors import ConfigError, InputError
from recsys.sinks.runs import MODELS_DIR, VERSIONS_DIR


class TableSink(Protocol):
    """Writes and reads named tables of one dataset."""

    def write(self, name: str, df: Union[DataFrame, TaskTable]) -> str:
        """Replace table ``name`` with ``df``; returns where it was written."""

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        """Read table ``name``."""


class LocalWarehouse:
    """Parquet tables under ``<root>/<dataset>/``, switched together at the end of each run."""

    def __init__(self, root: str, dataset: str):
        if not paths.is_local(root):
            raise ConfigError(
                f"sink.path must be a local folder for sink.type local, got {root!r}")
        self.root = os.path.abspath(paths.local_path(root))
        self.dataset = dataset
        self.dataset_dir = os.path.join(self.root, dataset)
        self._pinned: Optional[dict] = None  # a snapshot's manifest (see ``snapshot``)

    # -- where things are -----------------------------------------------------------------------

    def table_path(self, name: str) -> str:
        """The table's link (``<dataset>/<table>`` -> ``.current/<table>``), for people and
        plain readers; jobs read ``version_path``."""
        return os.path.join(self.dataset_dir, name)

    def model_path(self, name: str) -> str:
        """The model's link (``<dataset>/_models/<name>``)."""
        return os.path.join(self.dataset_dir, MODELS_DIR, name)

    def _manifest_version(self, kind: str, name: str) -> Optional[str]:
        run = runs.active(self.dataset_dir)
        if run is not None:
            return run.table_version(name) if kind == "tables" else run.model_version(name)
        manifest = self._pinned or runs.Dataset(self.dataset_dir).current() or {}
        return (manifest.get(kind) or {}).get(name)

    def version_path(self, name: str) -> Optional[str]:
        """The folder of the version of table ``name`` this reader sees: the open run's own
        write, else the last successful run's (None: no such table)."""
        version = self._manifest_version("tables", name)
        if version is None:
            legacy = self.table_path(name)  # a plain folder not yet moved by any run
            return legacy if os.path.isdir(legacy) and not os.path.islink(legacy) else None
        return os.path.join(self.dataset_dir, VERSIONS_DIR, name, version)

    def model_location(self, spark: SparkSession, name: str) -> str:
        """The folder holding the version of model ``name`` this reader sees."""
        del spark
        version = self._manifest_version("models", name)
        if version is None:
            raise InputError(f"no trained model {name!r} in {self.dataset_dir} "
                             f"(run the train job first)")
        return os.path.join(self.dataset_dir, MODELS_DIR, VERSIONS_DIR, name, version)

    def exists(self, name: str) -> bool:
        """True when table ``name`` has been written."""
        return self.version_path(name) is not None

    # -- writing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _run(self, job: str) -> Iterator[runs.Run]:
        with runs.unit(self.dataset_dir, job) as run:
            yield run

    def write(self, name: str, df: Union[DataFrame, TaskTable]) -> str:
        """Write ``df`` as a new version of table ``name`` in the open run (or a run of its
        own); returns the version folder. A ``TaskTable`` is written by its own tasks
        (``task_files``)."""
        with self._run(f"write {name}") as run:
            target = os.path.join(self.dataset_dir, VERSIONS_DIR, name, runs.new_id())
            if isinstance(df, TaskTable):
                task_files.write_parquet(df, target)
            else:
                df.write.mode("errorifexists").parquet(target)
            run.tables[name] = os.path.basename(target)
        return target

    def save_model(self, name: str, save: Callable[[str], None]) -> str:
        """Write a model folder with ``save(path)`` as a new version of model ``name``."""
        with self._run(f"save model {name}") as run:
            target = os.path.join(self.dataset_dir, MODELS_DIR, VERSIONS_DIR, name, runs.new_id())
            save(target)
            run.models[name] = os.path.basename(target)
        return target

    # -- reading --------------------------------------------------------------------------------

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        """Read table ``name`` (its version folder), failing with one line if it was never
        written."""
        path = self.version_path(name)
        if path is None:
            raise InputError(f"table {self.dataset}.{name} not found under {self.dataset_dir}")
        return spark.read.parquet(path)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["LocalWarehouse"]:
        """A reader of the dataset as of now, for code outside a run (notebooks, exports):
        while it is open every table reads as of the last successful run when it opened, and
        no version it can read is pruned by later runs.

        >>> with LocalWarehouse("warehouse", "bqml_tutorial").snapshot() as wh:  # doctest: +SKIP
        ...     top5 = wh.read(spark, "recommend_top5").toPandas()
        """
        view = LocalWarehouse(self.root, self.dataset)
        with runs.Dataset(self.dataset_dir).reader() as manifest:
            view._pinned = manifest
            yield view


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
        target = f"{self.model_path(name)}/{runs.new_id()}"
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
    if not paths.is_local(root):
        return VersionedModelStore(root, dataset)
    return LocalWarehouse(root, dataset)


def job_unit(cfg, job: str, *, wait: bool = False):
    """The run of a job on the configured sink (``recsys.sinks.runs.unit``): the whole job writes as
    one unit on a local warehouse. A BigQuery sink has no multi-table unit: each table is
    replaced by its own atomic overwrite."""
    if cfg.sink.type != "local":
        return contextlib.nullcontext()
    dataset_dir = LocalWarehouse(cfg.sink.path, cfg.sink.dataset).dataset_dir
    return runs.unit(dataset_dir, job, runs.fingerprint(cfg), wait=wait)


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
    from recsys.schemas import is_query

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
        if paths.is_local(ref) and not os.path.exists(paths.local_path(ref)):
            raise InputError(f"table path not found: {ref}")
        return spark.read.parquet(paths.local_path(ref) if paths.is_local(ref) else ref)
    if bigquery and ("." in ref or " " in ref.strip()):
        return sink.connection.read(spark, ref, sink.dataset)
    return sink.read(spark, ref)


def resolve_model(sink, spark: SparkSession, ref: str) -> str:
    """The folder of a model reference from config: a model name of the sink's dataset (the
    version this reader sees), or a model folder path (local or any Hadoop URI)."""
    if "/" in ref or os.sep in ref:
        if paths.is_local(ref) and not os.path.isdir(paths.local_path(ref)):
            raise InputError(f"model folder not found: {ref}")
        return paths.local_path(ref) if paths.is_local(ref) else ref
    return sink.model_location(spark, ref)
