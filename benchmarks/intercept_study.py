"""Intercepts fitted first, or jointly inside ALS? The measurement behind the bigquery_ml solver.

    python benchmarks/intercept_study.py [--ratings data/ml-latest-small/ratings.csv]

BigQuery ML's explicit objective is
    sum (r - mu - b_u - b_i - x_u.y_i)^2 + L2_REG * (sum |x_u|^2 + sum |y_i|^2 + sum b_u^2 + sum b_i^2)
Two ways to minimise it with alternating least squares, both in plain NumPy here (a row at a
time, no Spark), on the tutorial's options (rank 34, L2_REG 9.83, 12 iterations, items solved
first from a N(0, 0.1) user start):

- ``first``: ridge intercepts by 5 alternating sweeps b = sum(residual) / (n + L2_REG), then ALS
  on what they leave, the intercepts held fixed;
- ``joint``: the intercepts are one more column of each side's factors (user row [x_u, b_u]
  against item row [y_i, 1], and the mirror), so every half-step is the exact minimiser of the
  whole objective over that side's factors and intercepts together.

Printed per mode, one JSON line each: the objective, in-sample MSE and R2, held-out RMSE on a
seeded 80/20 split (every test row scored; a side unseen in training contributes nothing), and
the number of distinct top-5 lists (already-rated movies kept, as ML.RECOMMEND does).
"""

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fit(u, i, r, n_u, n_i, *, rank, lam, iterations, joint, seed):
    """(mu, b_u, b_i, X, Y) minimising the objective above by ALS, one row's normal equations
    at a time."""
    mu = r.mean()
    b_u, b_i = np.zeros(n_u), np.zeros(n_i)
    if not joint:
        for _ in range(5):
            b_i = np.bincount(i, r - mu - b_u[u], n_i) / (np.bincount(i, minlength=n_i) + lam)
            b_u = np.bincount(u, r - mu - b_i[i], n_u) / (np.bincount(u, minlength=n_u) + lam)
    x = np.random.default_rng(seed).normal(0.0, 0.1, (n_u, rank))
    y = np.zeros((n_i, rank))
    by_u, by_i = _groups(u, n_u), _groups(i, n_i)
    for _ in range(iterations):
        y, b_i = _half(by_i, u, r - mu, x, b_u, b_i, lam, joint)
        x, b_u = _half(by_u, i, r - mu, y, b_i, b_u, lam, joint)
    return mu, b_u, b_i, x, y


def _groups(rows, n):
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n)]


def _half(groups, other, target, fixed, fixed_b, own_b, lam, joint):
    rank = fixed.shape[1]
    out, out_b = np.zeros((len(groups), rank)), own_b.copy()
    design = np.hstack([fixed, np.ones((len(fixed), 1))]) if joint else fixed
    ridge = lam * np.eye(design.shape[1])
    for row, idx in enumerate(groups):
        if not len(idx):
            continue
        a = design[other[idx]]
        t = target[idx] - fixed_b[other[idx]] - (0.0 if joint else own_b[row])
        z = np.linalg.solve(a.T @ a + ridge, a.T @ t)
        out[row] = z[:rank]
        if joint:
            out_b[row] = z[rank]
    return out, out_b


def predict(model, u, i):
    mu, b_u, b_i, x, y = model
    return mu + b_u[u] + b_i[i] + np.einsum("nk,nk->n", x[u], y[i])


def measure(name, model, train, test, n_u, n_i, lam, seconds):
    u, i, r = train
    err = r - predict(model, u, i)
    mu, b_u, b_i, x, y = model
    objective = err @ err + lam * (np.sum(x ** 2) + np.sum(y ** 2) + b_u @ b_u + b_i @ b_i)
    tu, ti, tr = test
    scores = mu + b_u[:, None] + b_i[None, :] + x @ y.T
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    row = {"intercepts": name, "objective": round(float(objective), 1),
            "in_sample_mse": round(float(np.mean(err ** 2)), 4),
            "in_sample_r2": round(float(1 - np.mean(err ** 2) / np.var(r)), 4),
            "distinct_top5": len({tuple(row) for row in top5}), "seconds": round(seconds, 1)}
    if len(tr):
        test_err = tr - predict(model, tu, ti)
        row["held_out_rmse"] = round(float(np.sqrt(np.mean(test_err ** 2))), 4)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default=os.path.join(REPO, "data", "ml-latest-small",
                                                          "ratings.csv"))
    parser.add_argument("--rank", type=int, default=34)
    parser.add_argument("--l2-reg", type=float, default=9.83)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    frame = pd.read_csv(args.ratings)
    users, u = np.unique(frame.iloc[:, 0].to_numpy(), return_inverse=True)
    items, i = np.unique(frame.iloc[:, 1].to_numpy(), return_inverse=True)
    r = frame.iloc[:, 2].to_numpy(dtype=float)
    held_out = np.random.default_rng(args.seed).random(len(r)) < 0.2
    for joint in (False, True):
        for scope, (keep, test) in (("all rows", (slice(None), slice(0))),
                                    ("80/20", (~held_out, held_out))):
            start = time.perf_counter()
            model = fit(u[keep], i[keep], r[keep], len(users), len(items), rank=args.rank,
                        lam=args.l2_reg, iterations=args.iterations, joint=joint, seed=args.seed)
            row = measure("joint" if joint else "first", model, (u[keep], i[keep], r[keep]),
                          (u[test], i[test], r[test]), len(users), len(items), args.l2_reg,
                          time.perf_counter() - start)
            row["trained_on"] = scope
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
