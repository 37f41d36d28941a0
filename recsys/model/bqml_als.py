"""BigQuery ML's matrix factorization objective, solved by alternating least squares on Spark.

The ``bigquery_ml`` solver. Explicit feedback minimises

    sum (r - mu - b_u - b_i - x_u.y_i)^2 + L2_REG (sum |x_u|^2 + sum |y_i|^2)
                                         + INTERCEPT_L2_REG (sum b_u^2 + sum b_i^2)

mu being the mean training rating and the ridge *not* scaled by rating counts (pyspark.ml ALS
scales it: ALS-WR). The intercepts are one more unknown of each side's rows
(``recsys.model.normal_equations``), so every half-step minimises the whole objective exactly over
that side. Items are solved first, from the users' starting factors (``initial_factors`` of
Spark SQL's ``xxhash64(user_id, seed)``; intercepts start at 0).

How it is distributed (after Spark's ALS, ``mllib/.../recommendation/ALS.scala``):

- the ratings are read once and grouped by user block and by item block (row ``k`` of a side
  lives in block ``k % num_blocks``) into ``RowBlock`` objects, one per partition, cached
  (``recsys.model.rating_blocks``);
- each half-step ships the fixed side's states to the tasks of the side being solved: as one
  broadcast array while it is at most ``broadcast_max_bytes``, else as messages from every fixed
  block to the blocks that reference its rows, shuffled to them and assembled there (the join
  path). Both give every task the same numbers, so both give the same factors;
- every row's k x k (k + 1 with its intercept) system is solved in the task by batched NumPy
  (``RowBlock.solve``); the driver only ever holds factor-sized arrays (broadcast path) or
  per-block sums (join path);
- the pass that solves the users also returns each block's squared errors on its training and
  evaluation ratings: ML.TRAINING_INFO's ``loss`` and ``eval_loss`` cost no extra pass;
- on the join path the lineage is cut every ``checkpoint_interval`` iterations.

Block membership depends only on the row index, and the row index only on the set of ids, so the
same ratings, options and seed give the same factors on any number of cores or executors.

A warm start (``model.warm_start``) replaces the seeded start of the users a saved model has
(``_warm_start``); ``solve_against`` is one half-step against a fixed side (fold-in).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
from pyspark import RDD
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from recsys.model.normal_equations import RowBlock, Solved, design_and_offset, initial_factors
from recsys.model.rating_blocks import both_blocks, persist as _persist
from recsys.tasks import forget_zip_importers

RATINGS_PER_BLOCK = 1_000_000
MAX_DEFAULT_BLOCKS = 1024


@dataclass(frozen=True)
class SolverParams:
    """Options of one fit (already resolved: no None)."""

    rank: int
    l2_reg: float
    intercept_l2_reg: float
    max_iterations: int
    early_stop: bool
    min_rel_progress: float
    num_blocks: int
    broadcast_max_bytes: int
    checkpoint_interval: int
    wals_alpha: Optional[float] = None   # None: explicit feedback; else implicit (WALS)

    @property
    def implicit(self) -> bool:
        return self.wals_alpha is not None

    @property
    def width(self) -> int:
        """Unknowns per row: the factors, and the intercept for explicit feedback."""
        return self.rank if self.implicit else self.rank + 1

    def ridge(self) -> np.ndarray:
        return np.array([self.l2_reg] * self.rank
                        + ([] if self.implicit else [self.intercept_l2_reg]))


@dataclass
class SolvedSides:
    """The fit's final states per side, as RDDs of (block, Solved), and ML.TRAINING_INFO."""

    users: "States"
    items: "States"
    history: List[Dict]
    path: str  # "broadcast" or "join": how the fixed side reached the tasks
    rank: int
    _blocks: list  # the cached rating blocks; see release()

    def training_predictions(self) -> Optional["TrainingPredictions"]:
        """The final model's predictions of the training ratings, from the cached user blocks
        (explicit feedback on the broadcast path, where the driver holds the users' states and
        the items' are broadcast already); None otherwise. Call before ``release``."""
        if self.path != "broadcast" or self.users.full is None or self.users.shipped is None:
            return None
        if self.users.full.shape[1] != self.rank + 1:  # implicit feedback: no intercepts
            return None
        blocks = self._blocks[0]
        return TrainingPredictions(blocks, blocks.context.broadcast(self.users.full),
                                   self.users.shipped, self.rank,
                                   sum(s[0][1] for s in self.users.sums))

    def release(self) -> None:
        """Free the cached blocks, states and broadcasts once the states are written out."""
        self.users.release()
        self.items.release()
        for blocks in self._blocks:
            blocks.unpersist()


@dataclass
class TrainingPredictions:
    """Every training rating of a fit beside the final model's prediction of it, read where the
    fit holds them (its cached user blocks and its states), with no table read or joined.
    ``map(fn)`` calls ``fn(ratings, predictions)`` (NumPy arrays) in the tasks, once per block,
    and returns the results in block order. Valid until the fit's ``release``."""

    blocks: RDD
    users: object   # broadcast: every user's [factors, intercept]
    items: object   # broadcast: every item's [factors, intercept] (the fit's own)
    rank: int
    n_ratings: int

    def map(self, fn: Callable[[np.ndarray, np.ndarray], object]) -> list:
        users, items, rank = self.users, self.items, self.rank

        def one(block: RowBlock):
            forget_zip_importers()
            return fn(*block.predictions(users.value[block.row_ids], items.value[block.needed],
                                         rank))

        return [value for _, value in sorted(self.blocks.mapValues(one).collect(),
                                             key=lambda kv: kv[0])]

    def release(self) -> None:
        """Drop the users' broadcast (the items' is the fit's, released with it)."""
        self.users.destroy()


def default_num_blocks(n_ratings: int) -> int:
    """Blocks per side when ``model.num_blocks`` is not set: one per million ratings, rounded up
    to a power of two (so that they spread evenly over 2, 4, 8, ... cores), at least 2. Derived
    from the data, never from the cores, so the factors do not depend on the cluster.

    >>> default_num_blocks(100_004), default_num_blocks(1_000_209), default_num_blocks(25_000_095)
    (2, 2, 32)
    """
    wanted = max(2, math.ceil(n_ratings / RATINGS_PER_BLOCK))
    return int(min(MAX_DEFAULT_BLOCKS, 1 << (wanted - 1).bit_length()))


def solve(ratings: DataFrame, params: SolverParams, *, n_users: int, n_items: int,
          center: float = 0.0, progress: Optional[Callable[[str], None]] = None,
          warm_users: Optional[RDD] = None, id_values: Optional[Tuple[list, list]] = None
          ) -> SolvedSides:
    """Fit BigQuery ML's objective (explicit, or implicit when ``params.wals_alpha`` is set) on
    ``ratings`` (columns USER_IDX, ITEM_IDX, VALUE, IS_EVAL, USER_HASH; indices dense in 0..n-1,
    or the ids themselves with ``id_values``, as for ``rating_blocks.both_blocks``).
    ``center``: subtracted from every VALUE before it is fitted (explicit feedback's mu).
    ``warm_users``: (index, state) rows that replace those users' seeded start (warm start).
    Returns the final states and one ML.TRAINING_INFO row per iteration (``_info_row``)."""
    p = params
    user_blocks, item_blocks = both_blocks(ratings, p.num_blocks, center=center,
                                           id_values=id_values)
    state_bytes = max(n_users, n_items) * p.width * 8
    path = "broadcast" if state_bytes <= p.broadcast_max_bytes else "join"
    step = (_BroadcastStep(ratings.sparkSession, p.implicit) if path == "broadcast"
            else _JoinStep(p.num_blocks, p.implicit))
    solve_block = _block_solver(p)
    rank, width = p.rank, p.width

    def start(block: RowBlock) -> Solved:
        # Rows with evaluation ratings only never enter the training sums: they start at 0.
        state = np.zeros((len(block.row_ids), width))
        state[:, :rank] = initial_factors(block.hashes, rank) * (block.counts > 0)[:, None]
        return Solved(block.row_ids, state, block.counts)

    starting = (user_blocks.mapValues(start) if warm_users is None
                else _warm_start(user_blocks, warm_users, start, p.num_blocks))
    users = step.start(user_blocks, starting, n_users)
    items = None
    history: List[Dict] = []
    for iteration in range(p.max_iterations):
        started = time.perf_counter()
        new_items = step.half(item_blocks, users, solve_block, n_items)
        # Superseded states go once their successors are computed; on the join path a lost
        # partition is recomputed from the last checkpoint.
        users.release()
        if items is not None:
            items.release()
        items = new_items
        cut = p.checkpoint_interval > 0 and (iteration + 1) % p.checkpoint_interval == 0
        users = step.half(user_blocks, items, solve_block, n_users, checkpoint=cut)
        history.append(_info_row(iteration, users.sums, items.sums, p.implicit,
                                 time.perf_counter() - started))
        if progress is not None:
            row = history[-1]
            eval_text = f", eval_loss {row['eval_loss']:.4f}" if row["eval_loss"] is not None else ""
            progress(f"iteration {iteration}: loss {row['loss']:.4f}{eval_text} "
                     f"({row['duration_ms'] / 1000:.1f}s)")
        if p.early_stop and len(history) >= 2 and rel_progress(history) < p.min_rel_progress:
            break
    return SolvedSides(users=users, items=items, history=history, path=path, rank=rank,
                       _blocks=[user_blocks, item_blocks])


def _block_solver(p: SolverParams):
    """The task-side solve of one block given the fixed side's states and Gram matrix."""
    ridge, rank, alpha = p.ridge(), p.rank, p.wals_alpha

    def solve_block(block: RowBlock, fixed: np.ndarray, gram: Optional[np.ndarray]) -> Solved:
        forget_zip_importers()
        design, offset = design_and_offset(fixed, rank, intercepts=alpha is None)
        return block.solve(design, offset, ridge, gram=gram if alpha is not None else None,
                           alpha=alpha)

    return solve_block


def _part(solved: Solved, implicit: bool) -> Tuple:
    """What the driver keeps of a block's half-step: its sums, and for implicit feedback its part
    of the Gram matrix (explicit feedback never uses one)."""
    return solved.sums(), solved.gram() if implicit else None


def _gram(sums: List[Tuple]) -> Optional[np.ndarray]:
    """The side's Y^T Y from the per-block parts, added in block order (deterministic); None
    for explicit feedback."""
    if sums[0][1] is None:
        return None
    total = sums[0][1].copy()
    for _, part in sums[1:]:
        total += part
    return total


def _info_row(iteration: int, user_sums, item_sums, implicit: bool, seconds: float) -> Dict:
    """One ML.TRAINING_INFO row from the user step's per-block sums.

    Explicit: loss = MSE over the training ratings, eval_loss = MSE over the evaluation ratings.
    Implicit: loss = the WALS data term sum c (p - s)^2 over every (user, item) pair of the
    training users and items, divided by their number; eval_loss = mean c (1 - s)^2 over the
    evaluation ratings."""
    train, n_ratings, held, n_eval, users = (
        math.fsum(s[0][k] for s in user_sums) for k in range(5))
    items = math.fsum(s[0][4] for s in item_sums)
    loss = train / (users * items) if implicit else train / n_ratings
    return {"training_run": 0, "iteration": iteration, "loss": loss,
            "eval_loss": held / n_eval if n_eval else None, "learning_rate": None,
            "duration_ms": int(round(seconds * 1000))}


def rel_progress(history: List[Dict]) -> float:
    """Relative improvement of the last iteration's loss over the one before (EARLY_STOP)."""
    before, after = history[-2]["loss"], history[-1]["loss"]
    return (before - after) / before if before else 0.0


def state_rows(sides: SolvedSides, which: str, rank: int) -> RDD:
    """(index, intercept, factors) tuples of the rows that had training ratings (intercept 0
    for implicit feedback, which has none)."""
    return solved_rows((sides.users if which == "user" else sides.items).rdd, rank)


def solved_rows(rdd: RDD, rank: int) -> RDD:
    """``state_rows`` of an RDD of (block, Solved)."""

    def rows(kv):
        solved = kv[1]
        trained = solved.train_counts > 0
        for idx, state in zip(solved.row_ids[trained].tolist(), solved.state[trained]):
            intercept = float(state[rank]) if len(state) > rank else 0.0
            yield idx, intercept, state[:rank].tolist()

    return rdd.flatMap(rows)


STATE_SCHEMA = T.StructType([T.StructField("_idx", T.LongType(), False),
                             T.StructField("intercept", T.DoubleType(), False),
                             T.StructField("factors", T.ArrayType(T.DoubleType(), False), False)])


# --- the two ways of shipping the fixed side ----------------------------------------------------

@dataclass
class States:
    """One side's states after a half-step: RDD of (block, Solved) partitioned like ``blocks``,
    and each block's ``_part`` (sums, Gram part) in block order."""

    rdd: RDD
    blocks: RDD
    sums: List[Tuple] = field(default_factory=list)
    full: Optional[np.ndarray] = None   # broadcast path: every row's state in one array
    shipped: Optional[object] = None    # broadcast path: the broadcast these states came from

    def release(self) -> None:
        self.rdd.unpersist()
        if self.shipped is not None:
            self.shipped.destroy()


class _BroadcastStep:
    """The fixed side's states collected and broadcast to every task."""

    def __init__(self, spark: SparkSession, implicit: bool):
        self.sc = spark.sparkContext
        self.implicit = implicit

    def start(self, blocks: RDD, started: RDD, n_rows: int) -> States:
        return self._materialise(States(_persist(started), blocks), n_rows, self.implicit)

    def half(self, blocks: RDD, fixed: States, solve_block, n_rows: int,
             checkpoint: bool = False) -> States:
        shipped = self.sc.broadcast(fixed.full)
        fixed.full = None
        gram = _gram(fixed.sums)
        rdd = blocks.mapValues(lambda block: solve_block(block, shipped.value[block.needed], gram))
        return self._materialise(States(_persist(rdd), blocks, shipped=shipped), n_rows,
                                 self.implicit)

    @staticmethod
    def _materialise(states: States, n_rows: int, implicit: bool) -> States:
        for _, solved in sorted(states.rdd.collect(), key=lambda kv: kv[0]):
            if states.full is None:
                states.full = np.zeros((n_rows, solved.state.shape[1]))
            states.full[solved.row_ids] = solved.state
            states.sums.append(_part(solved, implicit))
        return states


class _JoinStep:
    """The fixed side's states shipped block to block: each fixed block sends every solving
    block the rows it references; the pieces are shuffled to the solving block's partition."""

    def __init__(self, num_blocks: int, implicit: bool):
        self.num_blocks = num_blocks
        self.implicit = implicit

    def start(self, blocks: RDD, started: RDD, n_rows: int) -> States:
        return self._materialise(States(_persist(started), blocks), self.implicit)

    def half(self, blocks: RDD, fixed: States, solve_block, n_rows: int,
             checkpoint: bool = False) -> States:
        messages = _messages(fixed.rdd, fixed.blocks).partitionBy(self.num_blocks)
        gram = _gram(fixed.sums)

        def solve_partition(items: Iterator) -> Iterator:
            found, pieces = [], []
            for key, value in items:
                (found if isinstance(value, RowBlock) else pieces).append((key, value))
            for key, block in found:  # one block per partition (block b in partition b)
                yield key, solve_block(block, block.gather([p for _, p in pieces]), gram)

        # Both RDDs are partitioned by block with the same partitioner, so the union is
        # partition-aware: partition b holds block b and every message addressed to it.
        rdd = _persist(blocks.union(messages).mapPartitions(solve_partition,
                                                            preservesPartitioning=True))
        if checkpoint:
            rdd.checkpoint()
        return self._materialise(States(rdd, blocks), self.implicit)

    @staticmethod
    def _materialise(states: States, implicit: bool) -> States:
        parts = states.rdd.mapValues(lambda solved: _part(solved, implicit)).collect()
        states.sums = [value for _, value in sorted(parts, key=lambda kv: kv[0])]
        return states


def _warm_start(blocks: RDD, warm: RDD, start: Callable[[RowBlock], Solved],
                num_blocks: int) -> RDD:
    """(block, Solved) starting states: ``start``'s, except for the rows ``warm`` holds an
    (index, state) for, which start there. The warm rows are shuffled to their block's
    partition (row k lives in block k % num_blocks), as the join path ships states."""
    pieces = warm.map(lambda row: (row[0] % num_blocks, row)).partitionBy(num_blocks)

    def begin(items: Iterator) -> Iterator:
        forget_zip_importers()
        found, rows = [], []
        for key, value in items:
            if isinstance(value, RowBlock):
                found.append((key, value))
            else:
                rows.append(value)
        for key, block in found:  # one block per partition
            solved = start(block)
            if rows:
                ids = np.array([row[0] for row in rows], dtype=np.int64)
                at = np.searchsorted(block.row_ids, ids)
                if np.any(at >= len(block.row_ids)) or np.any(block.row_ids[at] != ids):
                    raise RuntimeError("warm-start rows outside their block")
                trained = (block.counts[at] > 0)[:, None]
                solved.state[at] = np.array([row[1] for row in rows], dtype=float) * trained
            yield key, solved

    # Both sides are partitioned by block with one partitioner: the union is partition-aware.
    return blocks.union(pieces).mapPartitions(begin, preservesPartitioning=True)


def solve_against(blocks: RDD, fixed: np.ndarray, params: SolverParams,
                  gram: Optional[np.ndarray]) -> Tuple[RDD, object]:
    """One half-step of ``blocks``' rows against the fixed side's states ``fixed`` (every row
    of that side, broadcast): RDD of (block, Solved), persisted, and the broadcast (destroy it
    after use). ``gram``: the fixed side's Y^T Y for implicit feedback, else None."""
    shipped = blocks.context.broadcast(fixed)
    solve_block = _block_solver(params)
    solved = blocks.mapValues(lambda block: solve_block(block, shipped.value[block.needed], gram))
    return _persist(solved), shipped


def _messages(states: RDD, fixed_blocks: RDD) -> RDD:
    """(target block, (row ids, states)) pieces of every fixed block's states."""

    def send(items: Iterator) -> Iterator:
        forget_zip_importers()
        block, solved = None, None
        for key, value in items:
            if isinstance(value, RowBlock):
                block = value
            else:
                solved = value
        if block is not None and solved is not None:
            yield from block.messages(solved.state)

    return fixed_blocks.union(states).mapPartitions(send)
