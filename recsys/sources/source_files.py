"""Source files: a ``source.ratings`` / ``source.movies`` value (a file, a folder, a glob, or a
list of those; local or any Hadoop URI) expanded into the files to read, after the download
when one is configured."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

from pyspark.sql import SparkSession

from recsys import paths
from recsys.sources import download
from recsys.config import SourceConfig
from recsys.errors import InputError


@dataclass(frozen=True)
class SourceFiles:
    """Resolved ratings and (optional) movies files: every file of a folder, glob or list, in
    the order read (the list's order; each folder's or glob's files sorted by path), and the
    source as configured (for messages). For a BigQuery source, the one table id or query."""

    ratings: List[str]
    movies: Optional[List[str]]
    ratings_label: str = ""
    movies_label: Optional[str] = None


def resolve_files(source: SourceConfig, spark: Optional[SparkSession] = None) -> SourceFiles:
    """Apply the download (if configured) and expand each of ``source.ratings`` and
    ``source.movies`` (a file, a folder, a glob, or a list of those) into its files.

    Local paths are listed here; other Hadoop URIs (``gs://``, ``hdfs://``) through Hadoop's
    FileSystem in the JVM (``spark`` needed). Hidden files (``_SUCCESS``, ``.crc``: names
    starting with ``_`` or ``.``) are skipped, as Spark does. Each entry must give a file.
    """
    ratings, movies = source.ratings, source.movies
    if source.download:
        fetched = download.fetch(source.format, cache_dir=source.cache_dir, url=source.url,
                                 md5=source.md5)
        ratings = _inside(fetched.folder, ratings) or fetched.ratings
        movies = _inside(fetched.folder, movies) or fetched.movies
        if ratings is None:
            raise InputError(f"{source.url}: the archive's layout is not known for format "
                             f"{source.format!r}: set source.ratings (a path inside it)")
    assert ratings is not None  # guaranteed by config validation
    resolved = []
    for label, spec in (("source.ratings", ratings), ("source.movies", movies)):
        if spec is None:
            resolved.append((None, None))
        elif source.format == "bigquery":
            resolved.append(([spec] if isinstance(spec, str) else list(spec), _label(spec)))
        else:
            files: List[str] = []
            for entry in entries(spec):
                files += [f for f in _expand(label, entry, spark) if f not in files]
            resolved.append((files, _label(spec)))
    (r_files, r_label), (m_files, m_label) = resolved
    return SourceFiles(ratings=r_files, movies=m_files, ratings_label=r_label,
                       movies_label=m_label)


def entries(spec: Union[str, Sequence[str]]) -> List[str]:
    """The entries of a ``source.ratings``-like value: one path, or each of a list."""
    return [spec] if isinstance(spec, str) else list(spec)


def _label(spec: Union[str, Sequence[str]]) -> str:
    items = entries(spec)
    if len(items) == 1 and paths.is_local(items[0]) and not _has_glob(items[0]) \
            and os.path.isfile(paths.local_path(items[0])):
        return os.path.abspath(paths.local_path(items[0]))
    return ", ".join(items)


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _expand(label: str, entry: str, spark: Optional[SparkSession]) -> List[str]:
    if not paths.is_local(entry):
        return _expand_hadoop(label, entry, spark)
    local = os.path.abspath(paths.local_path(entry))
    if _has_glob(entry):
        matches = sorted(glob.glob(local, recursive=True))
        files = [m for m in matches if os.path.isfile(m) and not _hidden(os.path.basename(m))]
        folders = [m for m in matches if os.path.isdir(m)]
        for folder in folders:
            files += _folder_files(folder)
        if not files:
            raise InputError(f"{label}: no file matches {entry}")
        files = sorted(dict.fromkeys(files))
    elif os.path.isdir(local):
        files = _folder_files(local)
        if not files:
            raise InputError(f"{label}: folder has no data files: {entry}")
    elif os.path.isfile(local):
        files = [local]
    else:
        raise InputError(f"{label}: file not found: {entry}")
    for path in files:
        if not os.access(path, os.R_OK):
            raise InputError(f"{label}: file not readable: {path}")
    return files


def _folder_files(folder: str) -> List[str]:
    """Every non-hidden file below ``folder`` (hidden folders skipped), sorted by path."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        found += [os.path.join(root, n) for n in names if not _hidden(n)]
    return sorted(found)


def _expand_hadoop(label: str, entry: str, spark: Optional[SparkSession]) -> List[str]:
    """Files of a Hadoop URI (a file, folder or glob), listed by Hadoop's FileSystem."""
    if spark is None:
        return [entry]  # listed when read; only config-time checks get here without Spark
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(entry)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statuses = fs.globStatus(hadoop_path)
    files: List[str] = []
    for status in (statuses or []):
        if status.isDirectory():
            listing = fs.listFiles(status.getPath(), True)
            while listing.hasNext():
                child = listing.next().getPath()
                relative = child.toString()[len(status.getPath().toString()):].split("/")
                if not any(_hidden(part) for part in relative if part):
                    files.append(child.toString())
        elif not _hidden(status.getPath().getName()):
            files.append(status.getPath().toString())
    if not files:
        raise InputError(f"{label}: {'no file matches' if _has_glob(entry) else 'file not found:'}"
                         f" {entry}")
    return sorted(dict.fromkeys(files))


def _inside(folder: Optional[str], path: Optional[str]) -> Optional[str]:
    """A relative ``path`` found inside the extracted archive ``folder``, else ``path``."""
    if path is None or folder is None or os.path.isabs(path) or "://" in path:
        return path
    candidate = os.path.join(folder, path)
    return candidate if os.path.exists(candidate) else path



def hadoop_name(path: str) -> str:
    """A resolved file as Spark is given it (local files as they are)."""
    return path
