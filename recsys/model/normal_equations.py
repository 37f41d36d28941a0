"""The arithmetic of one ALS half-step on one block of rows: pure NumPy, no Spark.

A *row* is a user (user half-step) or an item (item half-step); the *fixed* side is the other
one. For every row the half-step solves the ridge normal equations

    (sum_j w_j a_j a_j^T + G + diag(ridge)) z = sum_j c_j t_j a_j

over the row's ratings j, where ``a_j`` is the fixed side's design row of the rated column,
``t_j = value_j - offset[col_j]`` its target, ``G`` an optional Gram matrix shared by all rows
(implicit feedback's Y^T Y), and ``w_j = c_j = 1`` for explicit feedback. ``ridge`` is one weight
per unknown, *not* scaled by the row's rating count (BigQuery ML's penalty; pyspark.ml ALS's
ALS-WR scales it, see ``count_scaled``).

BigQuery ML's explicit model carries its intercepts as one more unknown of each side: a user's
state is ``[x_u, b_u]`` and an item's ``[y_i, b_i]``, so when users are solved the item design row
is ``[y_i, 1]`` and the target ``(r - mu) - b_i`` (``design_and_offset``; a block holds the
ratings themselves and its ``center`` mu). Each half-step is then the exact minimiser of the whole
objective over that side's factors and intercepts together.

Batched: a block's rows are cut into chunks of similar rating counts, each gathered into a
zero-padded (rows, width, d) tensor (padding points at an all-zero design row, so it adds exact
zeros); Gram matrices come from batched ``matmul`` and are solved by batched Cholesky
(``np.linalg.cholesky``) and a forward and a back substitution vectorised over the chunk. A row's
result depends only on its own ratings, in ascending column order, and on which rows share its
block, never on partitions, cores or executors.

>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(3, 4, 2)); gram = np.matmul(a.transpose(0, 2, 1), a) + np.eye(2)
>>> rhs = rng.normal(size=(3, 2))
>>> bool(np.allclose(cholesky_solve(gram, rhs), np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from recsys.model.prediction import pair_scores

CHUNK_CELLS = 1 << 18     # padded ratings per chunk (x d x 8 bytes: ~73 MB at d = 35)
MAX_PADDING = 1.25        # rows of one chunk have counts within this ratio
MAX_CHUNK_ROWS = 4096     # rows per chunk (their Gram matrices: ~40 MB at d = 35)
# A gemm of d x tile x d with more than this many cells is multithreaded by OpenBLAS, which on a
# busy machine runs far slower than one thread: longer rows are cut into tiles and summed.
GEMM_CELLS = 1 << 18

# SplitMix64 (Steele, Lea, Flood 2014) constants: the increment and the two mix multipliers.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
INIT_SCALE = 0.1


def initial_factors(hashes: np.ndarray, rank: int, scale: float = INIT_SCALE) -> np.ndarray:
    """Starting factors, N(0, scale^2) per component, from a 64-bit hash of each id.

    Component j of the row with hash h is ``scale * sqrt(-2 ln u_2j) * cos(2 pi u_2j+1)`` (Box-
    Muller), where u_m = ((s_m >> 11) + 0.5) / 2^53 and s_m is the m-th output (from 0) of
    SplitMix64 seeded with h: s_m = mix(h + (m + 1) * 0x9E3779B97F4A7C15) (wrapping), mix(z) =
    z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31).
    recsys hashes an id with Spark SQL's ``xxhash64(id, seed)``, so an id's start depends only
    on the id and the seed.

    >>> initial_factors(np.array([0, 1]), 3).shape
    (2, 3)
    """
    h = np.asarray(hashes, dtype=np.int64).view(np.uint64)[:, None]
    steps = np.arange(1, 2 * rank + 1, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        z = h + steps * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    radius = np.sqrt(-2.0 * np.log(u[:, 0::2]))
    return scale * radius * np.cos(2.0 * np.pi * u[:, 1::2])


def design_and_offset(state: np.ndarray, rank: int, *, intercepts: bool
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """The fixed side's design rows and target offsets, with an all-zero row appended (the
    padding target). With intercepts a state row is [factors, intercept]: the design row is
    [factors, 1] and the offset the intercept; without, the factors and 0."""
    n = len(state)
    if intercepts:
        design = np.zeros((n + 1, rank + 1))
        design[:n, :rank] = state[:, :rank]
        design[:n, rank] = 1.0
        offset = np.append(state[:, rank], 0.0)
    else:
        design = np.vstack([state[:, :rank], np.zeros((1, rank))])
        offset = np.zeros(n + 1)
    return design, offset


def cholesky_solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``gram[n] z[n] = rhs[n]`` for a batch of symmetric positive definite systems:
    batched Cholesky, then forward and back substitution vectorised over the batch."""
    lower = np.linalg.cholesky(gram)
    d = rhs.shape[1]
    y = np.empty_like(rhs)
    for j in range(d):
        y[:, j] = (rhs[:, j] - np.einsum("nk,nk->n", lower[:, j, :j], y[:, :j])) / lower[:, j, j]
    z = np.empty_like(rhs)
    for j in range(d - 1, -1, -1):
        z[:, j] = (y[:, j] - np.einsum("nk,nk->n", lower[:, j + 1:, j], z[:, j + 1:])) \
            / lower[:, j, j]
    return z


@dataclass(frozen=True)
class _Chunk:
    rows: np.ndarray      # local row positions solved by this chunk
    counts: np.ndarray    # their training rating counts
    cols: np.ndarray      # (rows, width) local column positions, padding -> len(needed)
    values: np.ndarray    # (rows, width) values, padding the block's center (a target of 0)


@dataclass(frozen=True)
class Solved:
    """A half-step's result for one block: states of ``row_ids`` and the squared errors."""

    row_ids: np.ndarray
    state: np.ndarray
    train_counts: np.ndarray   # training ratings per row (0: no factors in the model)
    train_sse: float = 0.0
    eval_sse: float = 0.0
    eval_n: int = 0

    def sums(self) -> Tuple[float, int, float, int, int]:
        """(training data term, training ratings, evaluation data term, evaluation ratings,
        rows with training ratings)."""
        return (self.train_sse, int(self.train_counts.sum()), self.eval_sse, self.eval_n,
                int(np.count_nonzero(self.train_counts)))

    def gram(self) -> np.ndarray:
        """Sum of state state^T over the block's rows (implicit feedback's Y^T Y, in parts)."""
        return self.state.T @ self.state


@dataclass
class RowBlock:
    """One block of rows with their ratings, ready for batched half-steps.

    Built from the block's ratings in any order (``build``): rows and their columns are sorted,
    so the block is the same whatever order Spark delivered them in.
    """

    row_ids: np.ndarray            # int64 global indices of the block's rows, ascending
    counts: np.ndarray             # training ratings per row
    needed: np.ndarray             # int64 global indices of the columns referenced, ascending
    chunks: List[_Chunk]
    eval_rows: np.ndarray          # local positions of the evaluation ratings' rows
    eval_cols: np.ndarray          # ... and columns
    eval_values: np.ndarray
    hashes: Optional[np.ndarray]   # int64 id hash per row (the side that starts the fit)
    # other side's block -> local positions of the rows that block's columns reference
    out_links: Dict[int, np.ndarray] = field(default_factory=dict)
    # Subtracted from every value before it is fitted (explicit feedback's global mean): the
    # block keeps the ratings themselves, which the training metrics score (``predictions``).
    center: float = 0.0

    @classmethod
    def build(cls, rows, cols, values, is_eval, *, num_blocks: int,
              hashes: Optional[np.ndarray] = None, center: float = 0.0,
              chunk_cells: int = CHUNK_CELLS) -> "RowBlock":
        """A block from its ratings: global row and column indices, values (the ratings; the
        target is ``value - center`` before the fixed side's offset), an evaluation flag per
        rating, and optionally an id hash per rating (the hash of its row). ``num_blocks`` is
        the other side's block count (column ``c`` lives in block ``c % num_blocks``)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        is_eval = np.asarray(is_eval, dtype=bool)
        order = np.lexsort((values, cols, is_eval, rows))
        rows, cols, values, is_eval = rows[order], cols[order], values[order], is_eval[order]
        row_ids, row_pos = np.unique(rows, return_inverse=True)
        needed, col_pos = np.unique(cols, return_inverse=True)
        row_hashes = None
        if hashes is not None:
            first = np.searchsorted(rows, row_ids)
            row_hashes = np.asarray(hashes, dtype=np.int64)[order][first]
        train = ~is_eval
        counts = np.bincount(row_pos[train], minlength=len(row_ids))
        chunks = chunk_rows(col_pos[train], values[train], counts, len(needed), chunk_cells,
                            padding_value=center)
        out_links = {}
        col_block = cols % num_blocks
        for other in np.unique(col_block):
            out_links[int(other)] = np.unique(row_pos[col_block == other])
        return cls(row_ids=row_ids, counts=counts, needed=needed, chunks=chunks,
                   eval_rows=row_pos[is_eval], eval_cols=col_pos[is_eval],
                   eval_values=values[is_eval], hashes=row_hashes, out_links=out_links,
                   center=float(center))

    def solve(self, design: np.ndarray, offset: np.ndarray, ridge: np.ndarray, *,
              gram: Optional[np.ndarray] = None, alpha: Optional[float] = None,
              count_scaled: bool = False) -> Solved:
        """New states of the block's rows given the fixed side's ``design`` rows and target
        ``offset`` for ``needed`` (each with the all-zero padding row last, as
        ``design_and_offset`` gives). Rows without training ratings get 0.

        Explicit (``alpha`` None): weights 1, target ``(value - center) - offset``. Implicit (WALS):
        ``alpha`` gives confidence c = 1 + alpha * value for every rated column and 1 for every
        other one, preference 1 where rated and 0 elsewhere; ``gram`` is the fixed side's
        Y^T Y over all its rows, so the unrated columns are never materialised. ``count_scaled``
        multiplies the ridge by each row's rating count (ALS-WR, pyspark.ml ALS's penalty).

        Also returns the data term of the objective at the new states: explicit, the squared
        errors on the training ratings; implicit, sum over every (row, column) pair of
        c (p - s)^2 = sum_rated [c (1 - s)^2 - s^2] + sum_rows x^T gram x. On the evaluation
        ratings: explicit (value - prediction)^2, implicit c (1 - s)^2.
        """
        d = design.shape[1]
        state = np.zeros((len(self.row_ids), d))
        diag = np.arange(d)
        tile = max(8, GEMM_CELLS // d ** 2)
        train_sse = 0.0
        padding = len(self.needed)
        for chunk in self.chunks:
            t = design[chunk.cols]                                   # (rows, width, d)
            if alpha is None:
                # Padding: (center - center) - 0, an exact 0.
                target = (chunk.values - self.center) - offset[chunk.cols]
                normal = _gram(t, tile)
                rhs = np.einsum("nwk,nw->nk", t, target)
            else:
                confidence = np.where(chunk.cols < padding, 1.0 + alpha * chunk.values, 0.0)
                normal = _gram(t, tile, weights=alpha * chunk.values)
                rhs = np.einsum("nwk,nw->nk", t, confidence)
            scale = chunk.counts[:, None] if count_scaled else 1.0
            normal[:, diag, diag] += ridge[None, :] * scale
            if gram is not None:
                normal += gram
            z = cholesky_solve(normal, rhs)
            state[chunk.rows] = z
            fitted = np.einsum("nwk,nk->nw", t, z)
            if alpha is None:
                residual = target - fitted
                train_sse += float(np.sum(residual * residual))
            else:
                train_sse += float(np.sum(confidence * (1.0 - fitted) ** 2
                                          - (chunk.cols < padding) * fitted ** 2)
                                   + np.einsum("nk,kl,nl->", z, gram, z))
        eval_sse = 0.0
        if len(self.eval_values):
            fitted = np.einsum("nk,nk->n", design[self.eval_cols], state[self.eval_rows])
            if alpha is None:
                err = (self.eval_values - self.center) - offset[self.eval_cols] - fitted
                eval_sse = float(err @ err)
            else:
                eval_sse = float(np.sum((1.0 + alpha * self.eval_values) * (1.0 - fitted) ** 2))
        return Solved(self.row_ids, state, self.counts, train_sse, eval_sse,
                      len(self.eval_values))

    def predictions(self, row_states: np.ndarray, col_states: np.ndarray,
                    rank: int) -> Tuple[np.ndarray, np.ndarray]:
        """(ratings, predictions) of the block's training ratings, rows being users:
        ``row_states`` of ``row_ids`` and ``col_states`` of ``needed`` ([factors, intercept]
        each). Predicted by ``prediction.pair_scores``, as the model's tables are scored, so
        each is the same double as the scored table's."""
        padding = len(self.needed)
        ratings, predicted = [], []
        for chunk in self.chunks:
            rated = chunk.cols < padding
            rows = np.broadcast_to(chunk.rows[:, None], chunk.cols.shape)[rated]
            user, item = row_states[rows], col_states[chunk.cols[rated]]
            ratings.append(chunk.values[rated])
            predicted.append(pair_scores(self.center + user[:, rank], item[:, rank],
                                         user[:, :rank], item[:, :rank]))
        if not ratings:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(ratings), np.concatenate(predicted)

    def messages(self, state: np.ndarray) -> List[Tuple[int, Tuple[np.ndarray, np.ndarray]]]:
        """(other block, (global row ids, their states)) for every block whose columns
        reference these rows: what the join path ships to the other side."""
        return [(other, (self.row_ids[pos], state[pos])) for other, pos in
                sorted(self.out_links.items())]

    def gather(self, pieces) -> np.ndarray:
        """The fixed side's states for ``needed``, assembled from ``messages`` pieces."""
        ids = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, np.int64)
        states = np.concatenate([p[1] for p in pieces]) if pieces else None
        order = np.argsort(ids, kind="stable")
        if not np.array_equal(ids[order], self.needed):
            raise RuntimeError("factor messages do not cover the block's columns")
        return states[order]


def chunk_rows(cols, values, counts, n_cols, chunk_cells=CHUNK_CELLS,
               padding_value: float = 0.0) -> List[_Chunk]:
    """Rows with ratings cut into chunks of similar counts: ``cols`` and ``values`` of every
    rating grouped by row in row order, ``counts`` ratings per row; padding points at column
    ``n_cols`` (the all-zero design row) with value ``padding_value``."""
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    cols_sorted = np.append(cols.astype(np.int32), np.int32(n_cols))
    values_sorted = np.append(values, float(padding_value))
    sentinel = len(cols_sorted) - 1
    by_count = np.argsort(counts, kind="stable")
    by_count = by_count[counts[by_count] > 0]
    sorted_counts = counts[by_count]
    chunks, lo = [], 0
    while lo < len(by_count):
        hi = int(np.searchsorted(sorted_counts, MAX_PADDING * sorted_counts[lo], side="right"))
        width = int(sorted_counts[hi - 1])
        hi = min(hi, lo + max(1, min(chunk_cells // width, MAX_CHUNK_ROWS)))
        width = int(sorted_counts[hi - 1])
        chunk_rows = by_count[lo:hi]
        offsets = np.arange(width)
        pos = starts[chunk_rows][:, None] + offsets
        pos = np.where(offsets < counts[chunk_rows][:, None], pos, sentinel)
        chunks.append(_Chunk(chunk_rows, counts[chunk_rows], cols_sorted[pos], values_sorted[pos]))
        lo = hi
    return chunks


def _gram(t: np.ndarray, tile: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """sum over the width of w a a^T per row of ``t`` (rows, width, d), w = ``weights`` (rows,
    width) or 1; long rows in tiles."""
    n, width, d = t.shape
    left = t if weights is None else t * weights[:, :, None]
    full = width // tile if width > tile else 0
    if not full:
        return np.matmul(left.transpose(0, 2, 1), t)
    head = t[:, :full * tile].reshape(n, full, tile, d)
    left_head = left[:, :full * tile].reshape(n, full, tile, d)
    gram = np.matmul(left_head.transpose(0, 1, 3, 2), head).sum(axis=1)
    return gram + np.matmul(left[:, full * tile:].transpose(0, 2, 1), t[:, full * tile:])
