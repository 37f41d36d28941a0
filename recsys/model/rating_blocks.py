"""The ratings grouped into blocks of rows, the input of ``recsys.model.bqml_als``'s half-steps.

Row ``k`` of a side (a user or an item index) lives in block ``k % num_blocks``; each block is
built in one task from all of its ratings (``RowBlock.build`` sorts them), so a block's content
depends only on the ratings and the block count, never on how Spark partitioned the input.
"""

from __future__ import annotations

import pickle
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
from pyspark import RDD, StorageLevel
from pyspark.sql import DataFrame

from recsys.model.normal_equations import RowBlock
from recsys.tasks import forget_zip_importers

# Input columns: dense row indices of both sides, the rating (the blocks fit it less their
# ``center``), the evaluation flag (a split's held-out rows: scored, never fitted) and the user
# id's hash (starting factors).
USER_IDX, ITEM_IDX, VALUE, IS_EVAL, USER_HASH = "_u", "_i", "_value", "_eval", "_h"
# Ratings per pickled piece when grouping into blocks (a Spark binary value stays far below 2 GB).
PIECE_ROWS = 1 << 20


def persist(rdd: RDD) -> RDD:
    """``rdd`` kept in memory, spilling to disk (the solver's blocks and states)."""
    return rdd.persist(StorageLevel.MEMORY_AND_DISK)


def user_blocks(ratings: DataFrame, num_blocks: int, center: float = 0.0) -> RDD:
    """The user side's blocks alone (``both_blocks``), for a solve against fixed items."""
    return both_blocks(ratings, num_blocks, sides=(0,), center=center)[0]


def both_blocks(ratings: DataFrame, num_blocks: int, sides=(0, 1), center: float = 0.0,
                id_values: Optional[Tuple[Sequence, Sequence]] = None) -> Tuple[RDD, ...]:
    """(user blocks, item blocks), or the ``sides`` asked for (0 users, 1 items): RDDs of
    (block, RowBlock), block b in partition b, cached and materialised. ``center``: what the
    blocks subtract from every rating before fitting it (``RowBlock.center``).

    The input is read once, as Arrow batches: each partition is cut into per-block pieces for
    both sides (pickled NumPy arrays), kept until both sides are built. Reading it once per side,
    as before, paid a second Arrow pass and, in the train job, a second run of the indexing
    joins that produce ``ratings``.

    ``id_values``: (user ids, item ids), each in index order, when USER_IDX and ITEM_IDX hold
    the ids themselves (integers or strings): the tasks look each id's index up there, and the
    ratings need no join with the indices (``ids.counted_index``'s ``values``)."""
    names = [USER_IDX, ITEM_IDX, VALUE, IS_EVAL, USER_HASH]
    # Kept for the blocks' lineage: a lost block is rebuilt from the ratings.
    lookup = (None if id_values is None
              else ratings.sparkSession.sparkContext.broadcast(tuple(map(list, id_values))))

    def cut_rows(parts: list, indices: Optional[list]) -> Iterator:
        users, items, values, is_eval, hashes = [np.concatenate(a) for a in parts]
        if indices is not None:
            users, items = (_positions(index, found)
                            for index, found in zip(indices, (users, items)))
        # side 0: users by user block, with their hashes; side 1: items by item block.
        if 0 in sides:
            yield from _cut(0, (users, items, values, is_eval, hashes), num_blocks)
        if 1 in sides:
            yield from _cut(1, (items, users, values, is_eval), num_blocks)

    def pieces(batches: Iterator) -> Iterator:
        # Cut every PIECE_ROWS ratings, not once per partition: a task holds a few copies of
        # what it has gathered, and a partition read straight from a table's file split (as
        # with ``id_values``: no shuffle before) may hold tens of millions of ratings.
        forget_zip_importers()
        indices = None if lookup is None else [_hashed(ids) for ids in lookup.value]
        parts, gathered = [[] for _ in names], 0
        for batch in batches:
            for k, name in enumerate(names):
                parts[k].append(batch.column(name).to_numpy(zero_copy_only=False))
            gathered += batch.num_rows
            if gathered >= PIECE_ROWS:
                yield from cut_rows(parts, indices)
                parts, gathered = [[] for _ in names], 0
        if gathered:
            yield from cut_rows(parts, indices)

    cut = ratings.select(*names).mapInArrow(pieces, "side int, block int, payload binary")
    # On disk only: the pieces (every rating twice) are read once per side and dropped, and in
    # memory they hold heap the blocks being built from them need. A 2 GB driver at ML-25M
    # shape ran out of heap persisting the built blocks with the pieces in memory and disk, and
    # completed with them on disk; at ML-1M disk costs nothing measurable (docs/performance.md).
    cached = cut.rdd.map(lambda r: ((r[0], r[1]), bytes(r[2]))).persist(StorageLevel.DISK_ONLY)
    both = tuple(_side_blocks(cached, side, num_blocks, center) for side in sides)
    cached.unpersist()
    return both


def _hashed(known: list):
    """``known`` as a pandas Index (a hash table of the ids, built once per task)."""
    import pandas as pd

    return pd.Index(known)


def _positions(known, ids: np.ndarray) -> np.ndarray:
    """The position in ``known`` (``_hashed``) of each of ``ids``; every id must be there."""
    found = known.get_indexer(ids)
    if len(found) and found.min() < 0:  # cannot happen: the index holds every id of the rows
        raise RuntimeError(f"id {ids[np.argmin(found)]!r} is not in the id index")
    return found.astype(np.int64)


def _cut(side: int, arrays: Tuple[np.ndarray, ...], num_blocks: int) -> Iterator:
    """Arrow batches (side, block, payload) of one side's ratings cut by the block of their row
    (``arrays[0]``), at most PIECE_ROWS ratings a piece."""
    import pyarrow as pa

    block_of = arrays[0] % num_blocks
    for block in np.unique(block_of):
        where = np.flatnonzero(block_of == block)
        for lo in range(0, len(where), PIECE_ROWS):
            take = where[lo:lo + PIECE_ROWS]
            payload = pickle.dumps(tuple(a[take] for a in arrays), protocol=4)
            yield pa.RecordBatch.from_arrays(
                [pa.array([side], pa.int32()), pa.array([int(block)], pa.int32()),
                 pa.array([payload], pa.binary())], names=["side", "block", "payload"])


def _side_blocks(pieces: RDD, side: int, num_blocks: int, center: float) -> RDD:
    """One side's pieces shuffled to their block's partition and built there into RowBlocks
    (persisted and counted)."""

    def build(items: Iterator) -> Iterator:
        forget_zip_importers()
        grouped: Dict[int, list] = {}
        for block, payload in items:
            grouped.setdefault(block, []).append(pickle.loads(payload))
        for block, found in sorted(grouped.items()):
            arrays = [np.concatenate(a) for a in zip(*found)]
            yield block, RowBlock.build(arrays[0], arrays[1], arrays[2], arrays[3],
                                        num_blocks=num_blocks, center=center,
                                        hashes=arrays[4] if len(arrays) > 4 else None)

    blocks = (pieces.filter(lambda kv: kv[0][0] == side).map(lambda kv: (kv[0][1], kv[1]))
              .partitionBy(num_blocks).mapPartitions(build, preservesPartitioning=True))
    persist(blocks)
    blocks.count()
    return blocks
