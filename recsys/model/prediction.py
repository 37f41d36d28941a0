"""The prediction formula, in one place (NumPy; the Spark stages call it in their tasks on the
Arrow batches they receive).

    predicted = ((global intercept + user intercept) + item intercept) + x_u . y_i

with the dot product summed left to right over the factors. An unknown user or item (no row in
the model) contributes 0 for its intercept and its factors: BigQuery ML's fallback to the known
side. Every cell is computed elementwise by the same operations in the same order, whether it
is scored alone (a pair table), in a cross of users and items (ML.RECOMMEND's all pairs) or
re-scored for a top-k; so those tables agree bit for bit on any number of cores or executors
(a BLAS product would not: its summation order depends on the blocking). Crosses are computed
in blocks that stay in the CPU cache, which keeps the elementwise loop near BLAS speed for
MovieLens ranks.

Where only an order is needed over many items (a top-k, a rank among all items), a BLAS product
finds it fast and the formula settles the cells it cannot: ``blas_cross`` is within
``blas_tolerance`` of ``cross_scores`` in every cell, a bound that holds for any summation order.

>>> import numpy as np
>>> base = np.array([3.5 + 0.25])                      # global + user intercept
>>> float(pair_scores(base, np.array([-0.5]), np.array([[1.0, 2.0]]), np.array([[0.5, 0.25]]))[0])
4.25
"""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Cells (users x items) scored at once in a cross: 32k doubles (256 KB) fit in a core's L2 cache.
CROSS_BLOCK_CELLS = 32_768


def pair_scores(base: np.ndarray, item_bias: np.ndarray, user_factors: np.ndarray,
                item_factors: np.ndarray) -> np.ndarray:
    """Predictions of aligned rows: ``base`` (global + user intercept), ``item_bias`` (n,),
    factors (n, rank) with zero rows for a missing side."""
    return (base + item_bias) + row_dots(user_factors, item_factors)


def row_dots(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise dot products, summed left to right over the columns (broadcasting)."""
    total = np.zeros(np.broadcast_shapes(left.shape[:-1], right.shape[:-1]))
    for j in range(left.shape[-1]):
        total = total + left[..., j] * right[..., j]
    return total


def cross_scores(base: np.ndarray, item_bias: np.ndarray, user_factors: np.ndarray,
                 item_factors: np.ndarray) -> np.ndarray:
    """Predictions of every user x item: (n_users, n_items), each cell as ``pair_scores``."""
    return (base[:, None] + item_bias[None, :]) + row_dots(user_factors[:, None, :],
                                                           item_factors[None, :, :])


def cross_blocks(n_rows: int, n_columns: int) -> Iterator[Tuple[int, int]]:
    """(start, stop) of row blocks of a cross with ``n_columns`` columns that fit the cache."""
    step = max(1, CROSS_BLOCK_CELLS // max(n_columns, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def blas_cross(base: np.ndarray, item_bias: np.ndarray, user_factors: np.ndarray,
               item_factors: np.ndarray) -> np.ndarray:
    """``cross_scores`` by one matrix product: each cell within ``blas_tolerance`` of it."""
    scores = user_factors @ item_factors.T
    scores += item_bias[None, :]  # in place: a block is tens of MB
    scores += base[:, None]
    return scores


def blas_tolerance(base: np.ndarray, item_bias: np.ndarray, user_factors: np.ndarray,
                   item_factors: np.ndarray) -> np.ndarray:
    """Per user, a bound on |blas_cross - cross_scores| over its row of items.

    Both dot products of rank k are within gamma_k * sum_j |x_j y_j| <= gamma_k |x| |y| of the
    exact one in any summation order (Higham, Accuracy and Stability of Numerical Algorithms,
    3.1), and each sum with the intercepts adds at most two roundings; the bound is 4x that.
    """
    rank = user_factors.shape[1]
    eps = np.finfo(float).eps  # 2u
    intercepts = np.abs(base) + np.max(np.abs(item_bias), initial=0.0)
    products = (np.linalg.norm(user_factors, axis=1)
                * np.max(np.linalg.norm(item_factors, axis=1), initial=0.0))
    return 8.0 * (rank + 2) * eps * (intercepts + products)


def id_positions(sorted_ids: np.ndarray, wanted) -> np.ndarray:
    """Each wanted id's position in the sorted ``sorted_ids``, -1 where absent."""
    wanted = np.asarray(wanted, dtype=sorted_ids.dtype if len(sorted_ids) else None)
    if not len(sorted_ids) or not len(wanted):
        return np.full(len(wanted), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == wanted, pos, -1).astype(np.int64)


def arrow_bias(values: pa.Array) -> np.ndarray:
    """An intercept column as float64, 0 where NULL (a missing side)."""
    return pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False).astype(float)


def arrow_factors(values: pa.Array, rank: int) -> np.ndarray:
    """An ARRAY<DOUBLE> factors column as (n, rank), zero rows where NULL (a missing side)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    out = np.zeros((len(values), rank))
    if rank == 0 or len(values) == 0:
        return out
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    flat = values.flatten().to_numpy(zero_copy_only=False)  # the valid lists' values, in order
    out[valid] = flat.reshape(-1, rank)
    return out
