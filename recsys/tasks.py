"""What every Python function run by a Spark task (mapInArrow, mapInPandas, mapPartitions) does
first: ``python_task`` wraps such a function; ``TaskTable`` is a table such a function makes."""

from __future__ import annotations

import dataclasses
import functools
import sys
import zipimport
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

T = TypeVar("T")


def forget_zip_importers() -> None:
    """Drop the zip importers from this Python worker's import cache (task side).

    PySpark's worker calls ``importlib.invalidate_caches()`` before every task, and on Python 3.11
    every ``zipimporter`` in ``sys.path_importer_cache`` then rereads its archive's whole
    directory. A warm worker holds one per package it imported from ``pyspark.zip`` (16 after a
    solver half-step), and rereading them took ~0.2 s of every task on 2 loaded cores (a
    do-nothing Python job: 0.34 s, 0.12 s without them). A dropped entry is rebuilt by the next
    import from that archive, from zipimport's directory cache (no reread); imported modules are
    untouched. So only that per-task cost changes, never a result."""
    for path, finder in list(sys.path_importer_cache.items()):
        if isinstance(finder, zipimport.zipimporter):
            del sys.path_importer_cache[path]


def python_task(fn: Callable[[Iterator], Iterator[T]]) -> Callable[[Iterator], Iterator[T]]:
    """``fn`` (a task's function of its input iterator) that first forgets the worker's zip
    importers, so that the worker's next task starts without rereading the archives."""
    @functools.wraps(fn)
    def run(iterator: Iterator) -> Iterator[T]:
        forget_zip_importers()
        return fn(iterator)
    return run


@dataclasses.dataclass(frozen=True)
class TaskTable:
    """A table whose rows a Python function makes in the tasks: ``fn`` (a ``python_task``) turns
    each partition of ``source``, as Arrow batches, into batches of ``schema`` (a Spark
    StructType). ``frame()`` is the table as a DataFrame, its batches crossing back to the JVM;
    a sink may instead have each task write its own batches (``recsys.sinks.task_files``),
    which spares the JVM every row of a large table."""

    source: "DataFrame"
    fn: Callable[[Iterator], Iterator]
    schema: "StructType"

    def frame(self) -> "DataFrame":
        """The table as a DataFrame."""
        return self.source.mapInArrow(self.fn, self.schema)
