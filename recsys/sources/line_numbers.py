"""Line numbers of parsed rows. A task knows a row's place in its split (``split_line``), not in
its file: that needs the line counts of the file's earlier splits, known once every split has
been read (``line_offsets``); ``number_lines`` and ``with_line_numbers`` then give each row its
``line_number``. ``display_file_name`` names the file as ``resolve_files`` does."""

from __future__ import annotations

import re
import urllib.parse
from typing import Dict, Iterable, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys.config import SourceConfig


# A local file's URI scheme, dropped from its display name; other schemes (gs:, hdfs:) are kept.
_LOCAL_SCHEME = re.compile(r"^file:(//(?=/))?")


def display_file_name(path: str, *, escaped: bool = True) -> str:
    """The file a row came from, as ``resolve_files`` names it, from Spark's name for it:
    ``_metadata.file_path`` is a URI with %-escapes (``file:/data/my%20ratings+1.csv``, ``+``
    literal), binaryFile's ``path`` the plain path (``escaped=False``). Local files lose their
    scheme (``/data/my ratings+1.csv``); other schemes keep theirs.

    >>> display_file_name("file:/data/my%20ratings+1%25.csv"), display_file_name("gs://b/r%C3%A9.dat")
    ('/data/my ratings+1%.csv', 'gs://b/ré.dat')
    >>> display_file_name("file:/data/m +%.dat", escaped=False)
    '/data/m +%.dat'
    """
    return _LOCAL_SCHEME.sub("", urllib.parse.unquote(path) if escaped else path, count=1)


def display_file_names(uris: pa.Array) -> pa.Array:
    """``display_file_name`` of each value of a string array, computed once per distinct URI
    (per row in Spark SQL, the decoding cost 1.3-1.8 s per million rows, docs/performance.md)."""
    encoded = uris.dictionary_encode()
    names = pa.array([display_file_name(u) for u in encoded.dictionary.to_pylist()], pa.string())
    return names.take(encoded.indices)


def has_header_lines(source: SourceConfig) -> bool:
    """Whether the source is text files, whose line 1 gives no row when it is a header."""
    return source.format not in ("parquet", "bigquery")


def line_offsets(split_lines: Iterable[Tuple[str, int, int]], *,
                 header_lines: bool) -> Dict[Tuple[str, int], int]:
    """(file, split start) -> the lines of the file before that split, from the (file, split
    start, last ``split_line``) of every split that gave a row. A split without rows holds no
    line, except in text files (``header_lines``), where line 1 gives no row when it is the
    header: a text file whose first split (start 0) gave no row has one line before the others.

    >>> splits = [("a", 0, 3), ("a", 100, 5), ("b", 0, 2), ("a", 250, 1)]
    >>> sorted(line_offsets(splits, header_lines=True).items())
    [(('a', 0), 0), (('a', 100), 3), (('a', 250), 8), (('b', 0), 0)]
    >>> line_offsets([("a", 40, 2)], header_lines=True), line_offsets([("a", 1, 2)], header_lines=False)
    ({('a', 40): 1}, {('a', 1): 0})
    """
    by_file: Dict[str, List[Tuple[int, int]]] = {}
    for file, start, last in split_lines:
        by_file.setdefault(file, []).append((start, last))
    offsets = {}
    for file, splits in by_file.items():
        before = 1 if header_lines and min(start for start, _ in splits) > 0 else 0
        for start, last in sorted(splits):
            offsets[(file, start)] = before
            before += last
    return offsets


def line_offset(offsets: Dict[Tuple[str, int], int], file: str = "source_file",
                start: str = "split_start") -> Column:
    """The lines before a row's split (``line_offsets``), looked up by columns ``file`` and
    ``start`` in a map literal: no join, and no job to build a table of the offsets."""
    if not offsets:
        return F.lit(0).cast("long")
    pairs = []
    for (name, split_start), before in sorted(offsets.items()):
        pairs += [F.lit(f"{split_start}:{name}"), F.lit(before).cast("long")]
    key = F.concat(F.col(start).cast("string"), F.lit(":"), F.col(file))
    return F.coalesce(F.element_at(F.create_map(*pairs), key), F.lit(0).cast("long"))


def with_line_numbers(rows: DataFrame, offsets: Dict[Tuple[str, int], int]) -> DataFrame:
    """Parsed ``rows`` with ``line_number`` (the line in its file) in place of ``split_start``
    and ``split_line``; ``offsets``: ``line_offsets`` of their splits."""
    line = (F.col("split_line") + line_offset(offsets)).alias("line_number")
    return rows.select(*[line if c == "split_start" else F.col(c) for c in rows.columns
                         if c != "split_line"])


def number_lines(parsed: DataFrame, *, header_lines: bool) -> DataFrame:
    """Parsed rows with their ``line_number``: one aggregate of the split line counts, then a
    join (cache ``parsed`` first to read the source once). ``header_lines``: as for
    ``line_offsets``."""
    counts = (parsed.groupBy("source_file", "split_start")
              .agg(F.max("split_line").alias("lines")).collect())
    offsets = line_offsets(((r.source_file, r.split_start, r.lines) for r in counts),
                           header_lines=header_lines)
    return with_line_numbers(parsed, offsets)



def split_line_numbers(batch: pa.RecordBatch, seen) -> np.ndarray:
    """Each line's 1-based number in its split, for a batch of lines in read order; ``seen``
    (updated) counts the lines of each split read before this batch."""
    file = batch.column("_file")
    start = batch.column("_start").to_numpy(zero_copy_only=False)
    n = len(start)
    numbers = np.empty(n, dtype=np.int64)
    opens = np.ones(n, dtype=bool)
    if n > 1:
        opens[1:] = (pc.not_equal(file.slice(1), file.slice(0, n - 1))
                     .to_numpy(zero_copy_only=False) | (start[1:] != start[:-1]))
    runs = np.flatnonzero(opens)
    for k, a in enumerate(runs):
        b = runs[k + 1] if k + 1 < len(runs) else n
        key = (file[a].as_py(), int(start[a]))
        before = seen.get(key, 0)
        numbers[a:b] = before + 1 + np.arange(b - a)
        seen[key] = before + (b - a)
    return numbers
