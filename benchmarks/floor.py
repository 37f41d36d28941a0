"""Single-node NumPy floors the Spark fits are measured against; prints one JSON object.

    python benchmarks/floor.py --ratings ratings.dat --objective bigquery_ml [--rank 34]
        [--l2-reg 9.83] [--iterations 20] [--reg-param 0.05]

- ``bigquery_ml``: BigQuery ML's explicit objective with the very kernel the Spark solver runs in
  its tasks (``recsys.model.normal_equations``: joint intercepts, plain ridge, batched Cholesky), on one
  block per side in this one process. The start is drawn from the user ids themselves (the
  solver hashes them with Spark SQL first; the cost is the same).
- ``als_wr``: pyspark.ml ALS's objective (``numpy_als``), on the intercept-free residual
  ``r - mean``, as before.

Only the fit is timed (reading and indexing the file is not). Run with OPENBLAS_NUM_THREADS=1
(benchmarks/bench.py does) for the single-core floor.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy_als  # noqa: E402  (benchmarks/numpy_als.py, beside this script)
from recsys.model.normal_equations import RowBlock, design_and_offset, initial_factors  # noqa: E402


def read_dat(path: str) -> np.ndarray:
    """user, item, rating columns of a `u::i::r::t` file ("::" read as two ':' separators)."""
    import pandas as pd

    frame = pd.read_csv(path, sep=":", header=None, usecols=[0, 2, 4], engine="c", dtype=np.int64)
    return frame.to_numpy()


def fit_bigquery_ml(u, i, r, n_users, n_items, *, rank, l2_reg, iterations, user_ids):
    """The bigquery_ml solver's iterations on one node; returns the last training MSE."""
    mu = r.mean()
    users = RowBlock.build(u, i, r - mu, np.zeros(len(r), bool), num_blocks=1, hashes=user_ids[u])
    items = RowBlock.build(i, u, r - mu, np.zeros(len(r), bool), num_blocks=1)
    ridge = np.full(rank + 1, l2_reg)
    user_state = np.zeros((n_users, rank + 1))
    user_state[users.row_ids, :rank] = initial_factors(users.hashes, rank)
    solved = None
    for _ in range(iterations):
        design, offset = design_and_offset(user_state[items.needed], rank, intercepts=True)
        item_state = np.zeros((n_items, rank + 1))
        item_state[items.row_ids] = items.solve(design, offset, ridge).state
        design, offset = design_and_offset(item_state[users.needed], rank, intercepts=True)
        solved = users.solve(design, offset, ridge)
        user_state[solved.row_ids] = solved.state
    return solved.train_sse / len(r)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", required=True)
    parser.add_argument("--objective", choices=("bigquery_ml", "als_wr"), required=True)
    parser.add_argument("--rank", type=int, default=34)
    parser.add_argument("--l2-reg", type=float, default=9.83)
    parser.add_argument("--reg-param", type=float, default=0.05)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    table = read_dat(args.ratings)
    users, u = np.unique(table[:, 0], return_inverse=True)
    items, i = np.unique(table[:, 1], return_inverse=True)
    r = table[:, 2].astype(float)
    start = time.perf_counter()
    if args.objective == "bigquery_ml":
        loss = fit_bigquery_ml(u, i, r, len(users), len(items), rank=args.rank,
                               l2_reg=args.l2_reg, iterations=args.iterations, user_ids=users)
    else:
        uf, itf = numpy_als.fit_als(u, i, r - r.mean(), n_users=len(users), n_items=len(items),
                                    rank=args.rank, reg_param=args.reg_param,
                                    max_iter=args.iterations, seed=args.seed)
        loss = numpy_als.rmse(u, i, r - r.mean(), uf, itf) ** 2
    seconds = time.perf_counter() - start
    print(json.dumps({"objective": args.objective, "fit_s": round(seconds, 2),
                      "training_mse": round(float(loss), 4),
                      "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
