"""Single-node NumPy ALS: the floor pyspark.ml ALS is benchmarked against.

Explicit ALS-WR with pyspark.ml ALS's objective,
    sum (r_ui - x_u . y_i)^2 + reg_param * (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2),
n_u and n_i being rating counts. Each half-step solves every row's normal equations exactly,
    (Y_u^T Y_u + reg_param * n_u * I) x_u = Y_u^T r_u,
so the objective never increases. As in Spark, each iteration solves the items from the user
factors, then the users from the item factors; user factors start as random unit vectors (Spark
draws Gaussian components and normalises them). A row without ratings gets zero factors. Spark
keeps factors in float32 and draws its start from its own generator; here everything is float64
from numpy's, so results match Spark's in distribution, not bit for bit.

Vectorised: ratings are grouped by row once; rows sorted by count are cut into chunks of similar
counts, each gathered into a zero-padded (rows, count, rank) tensor, whose Gram matrices come from
batched ``matmul`` (long rows cut into tiles, see ``GEMM_CELLS``) and are solved by one batched
``np.linalg.solve``. A chunk holds about
``CHUNK_CELLS`` padded ratings, so memory stays bounded whatever the data size.

>>> rng = np.random.default_rng(0)
>>> x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
>>> u, i = np.divmod(np.arange(600), 20)
>>> uf, itf = fit_als(u, i, np.sum(x[u] * y[i], axis=1), n_users=30, n_items=20, rank=2,
...                   reg_param=1e-9, max_iter=20, seed=1)
>>> rmse(u, i, np.sum(x[u] * y[i], axis=1), uf, itf) < 1e-4
True
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

# Chunking (padded ratings per chunk, counts within 1.25x, at most 4096 rows) is the bigquery_ml
# solver's, shared.
from recsys.model.normal_equations import CHUNK_CELLS, chunk_rows

# A gemm of rank x tile x rank with more than this many cells is multithreaded by OpenBLAS, which
# on a busy 2-core machine runs ~10x slower than one thread: longer rows are cut into tiles.
GEMM_CELLS = 1 << 18


class RowPlan:
    """The ratings of one side grouped by row, in chunks ready for batched normal equations."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int,
                 n_cols: int, chunk_cells: int = CHUNK_CELLS):
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        counts = np.bincount(rows, minlength=n_rows)
        self.n_rows, self.n_cols, self.counts = n_rows, n_cols, counts
        self.chunks = chunk_rows(np.asarray(cols)[order], np.asarray(values, np.float64)[order],
                                 counts, n_cols, chunk_cells)

    def solve(self, fixed: np.ndarray, reg_param: float) -> np.ndarray:
        """New factors of this side's rows given the other side's ``fixed`` factors."""
        rank = fixed.shape[1]
        padded = np.vstack([fixed, np.zeros((1, rank))])  # row n_cols: padding gathers zeros
        out = np.zeros((self.n_rows, rank))
        diag = np.arange(rank)
        tile = max(8, GEMM_CELLS // rank ** 2)
        for chunk in self.chunks:
            t = padded[chunk.cols]                                   # (rows, width, rank)
            n, width = chunk.cols.shape
            rhs = np.einsum("nwk,nw->nk", t, chunk.values)           # (rows, rank)
            full = width // tile if width > tile else 0
            if full:  # long rows: one small gemm per tile of ratings (views, no copy), summed
                head = t[:, :full * tile].reshape(n, full, tile, rank)
                gram = np.matmul(head.transpose(0, 1, 3, 2), head).sum(axis=1)
                tail = t[:, full * tile:]
                gram += np.matmul(tail.transpose(0, 2, 1), tail)
            else:
                gram = np.matmul(t.transpose(0, 2, 1), t)            # (rows, rank, rank)
            gram[:, diag, diag] += reg_param * chunk.counts[:, None]
            out[chunk.rows] = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
        return out


def half_step(rows, cols, values, fixed: np.ndarray, *, n_rows: int,
              reg_param: float) -> np.ndarray:
    """One ALS half-step: the factors of ``rows`` minimising the objective for ``fixed`` factors
    of ``cols`` (call with users as rows for the user step, items as rows for the item step)."""
    return RowPlan(rows, cols, values, n_rows, len(fixed)).solve(fixed, reg_param)


def initial_factors(n: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors (Gaussian components, normalised), as Spark's ALS starts."""
    f = rng.standard_normal((n, rank))
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def fit_als(user_idx, item_idx, ratings, *, n_users: int, n_items: int, rank: int,
            reg_param: float, max_iter: int, seed: int = 0,
            callback: Optional[Callable[[int, np.ndarray, np.ndarray], None]] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
    """Explicit ALS-WR on dense 0-based indices; returns (user_factors, item_factors), float64
    arrays of shape (n_users, rank) and (n_items, rank). ``callback(iteration, user_factors,
    item_factors)`` is called after each iteration (from 1)."""
    user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
    if len(user_idx) and (user_idx.min() < 0 or user_idx.max() >= n_users
                          or item_idx.min() < 0 or item_idx.max() >= n_items):
        raise ValueError("user_idx and item_idx must be dense 0-based indices "
                         "below n_users and n_items")
    users = RowPlan(user_idx, item_idx, ratings, n_users, n_items)
    items = RowPlan(item_idx, user_idx, ratings, n_items, n_users)
    rng = np.random.default_rng(seed)
    user_factors = initial_factors(n_users, rank, rng)
    item_factors = np.zeros((n_items, rank))
    for iteration in range(1, max_iter + 1):
        item_factors = items.solve(user_factors, reg_param)
        user_factors = users.solve(item_factors, reg_param)
        if callback is not None:
            callback(iteration, user_factors, item_factors)
    return user_factors, item_factors


def predict(user_idx, item_idx, user_factors: np.ndarray, item_factors: np.ndarray,
            chunk: int = 1 << 16) -> np.ndarray:
    """x_u . y_i for each (user, item) pair, in chunks."""
    user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
    out = np.empty(len(user_idx))
    for lo in range(0, len(user_idx), chunk):
        u, i = user_idx[lo:lo + chunk], item_idx[lo:lo + chunk]
        out[lo:lo + chunk] = np.einsum("nk,nk->n", user_factors[u], item_factors[i])
    return out


def rmse(user_idx, item_idx, ratings, user_factors: np.ndarray, item_factors: np.ndarray) -> float:
    """Root mean squared error of the factors' predictions on the given ratings."""
    err = np.asarray(ratings, dtype=np.float64) - predict(user_idx, item_idx, user_factors,
                                                          item_factors)
    return float(np.sqrt(np.mean(err ** 2)))


def objective(user_idx, item_idx, ratings, user_factors: np.ndarray, item_factors: np.ndarray,
              reg_param: float) -> float:
    """ALS-WR's loss: squared error plus reg_param * (sum n_u |x_u|^2 + sum n_i |y_i|^2)."""
    err = np.asarray(ratings, dtype=np.float64) - predict(user_idx, item_idx, user_factors,
                                                          item_factors)
    n_u = np.bincount(user_idx, minlength=len(user_factors))
    n_i = np.bincount(item_idx, minlength=len(item_factors))
    penalty = n_u @ np.sum(user_factors ** 2, axis=1) + n_i @ np.sum(item_factors ** 2, axis=1)
    return float(err @ err + reg_param * penalty)


def main(argv=None) -> int:
    """``python benchmarks/numpy_als.py --ratings FILE.parquet [--rank 34] [--reg-param 0.05]
    [--max-iter 10] [--seed 0]``: fit on a ratings Parquet file (as ``synthetic`` writes)
    and print the fit time and training RMSE."""
    import argparse
    import time

    import pyarrow.parquet as pq

    parser = argparse.ArgumentParser(prog="python benchmarks/numpy_als.py")
    parser.add_argument("--ratings", required=True)
    parser.add_argument("--rank", type=int, default=34)
    parser.add_argument("--reg-param", type=float, default=0.05)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = pq.read_table(args.ratings, columns=["user_id", "item_id", "rating"])
    users, user_idx = np.unique(table["user_id"].to_numpy(), return_inverse=True)
    items, item_idx = np.unique(table["item_id"].to_numpy(), return_inverse=True)
    ratings = table["rating"].to_numpy()
    del table
    started = time.perf_counter()
    uf, itf = fit_als(user_idx, item_idx, ratings, n_users=len(users), n_items=len(items),
                      rank=args.rank, reg_param=args.reg_param, max_iter=args.max_iter,
                      seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"numpy ALS: {len(ratings):,} ratings, {len(users):,} users, {len(items):,} items, "
          f"rank {args.rank}, {args.max_iter} iterations in {seconds:.1f} s; training RMSE "
          f"{rmse(user_idx, item_idx, ratings, uf, itf):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
