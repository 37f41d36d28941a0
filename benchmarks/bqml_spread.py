"""Run-to-run spread of BigQuery ML's own objective, for the compare job's default tolerances.

    python benchmarks/bqml_spread.py [--seeds 1 2 3 4] [--formulation joint --early-stop]
                                     [--export DIR --export-seed 1]

Fits BigQuery ML's explicit matrix-factorization objective in NumPy on the shipped sample
(data/ml-latest-small/ratings.csv), once per seed, all else equal: the plain ridge
``L2_REG * I`` per row (not scaled by rating counts), items solved first, users started
N(0, 0.1), rank 34, L2_REG 9.83, at most 12 iterations (the tutorial's iteration count), and
either

- ``--formulation intercepts_first`` (the default, the reference document's fit): global mean;
  user and item intercepts by 5 alternating ridge sweeps ``b = sum(residual) / (count +
  L2_REG)`` (users, then items); ALS on what they leave; or
- ``--formulation joint`` (recsys's ``bigquery_ml`` solver): global mean; each row's intercept
  one more unknown beside its factors, so every half-step minimises the whole objective.

``--early-stop`` stops as BigQuery ML's EARLY_STOP does (MIN_REL_PROGRESS 0.01).

For every pair of seeds it prints (one JSON line each) what the compare job's verdict measures:
the ML.EVALUATE metric differences (in-sample, as BigQuery ML evaluates without a split), the
RMSE and Pearson correlation between the two fits' predictions over every user x item pair seen
in training (ML.RECOMMEND without an input table), and the mean overlap@5 of their top-5 lists;
then a summary line with the worst value over all pairs.

``--export DIR`` also writes one fit's outputs the way BigQuery leaves them (the compare job's
"BigQuery ML side" for a run on the shipped sample): ML.EVALUATE as CSV, ML.TRAINING_INFO as
newline-delimited JSON (INT64 as strings), ML.RECOMMEND as sharded Avro (``recommend-*.avro``),
the tutorial's top-5 query verbatim (column ``f0_``) as JSON, ML.WEIGHTS as Parquet.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

RANK, L2_REG, ITERATIONS, SWEEPS, TOP = 34, 9.83, 12, 5, 5
MIN_REL_PROGRESS = 0.01


def load(path):
    df = pd.read_csv(path)
    users, u = np.unique(df.userId.to_numpy(), return_inverse=True)
    items, i = np.unique(df.movieId.to_numpy(), return_inverse=True)
    return users, items, u, i, df.rating.to_numpy(float)


def intercepts(u, i, r, n_users, n_items):
    mu = r.mean()
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    nu, ni = np.bincount(u, minlength=n_users), np.bincount(i, minlength=n_items)
    for _ in range(SWEEPS):
        bu = np.bincount(u, r - mu - bi[i], n_users) / (nu + L2_REG)
        bi = np.bincount(i, r - mu - bu[u], n_items) / (ni + L2_REG)
    return mu, bu, bi


def ridge_rows(rows, cols, n_rows, fixed, target):
    """argmin_x sum (t - x . f)^2 + L2_REG |x|^2 for every row, the plain ridge."""
    out = np.zeros((n_rows, fixed.shape[1]))
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n_rows + 1))
    eye = L2_REG * np.eye(fixed.shape[1])
    for row in range(n_rows):
        idx = order[bounds[row]:bounds[row + 1]]
        if len(idx):
            f = fixed[cols[idx]]
            out[row] = np.linalg.solve(f.T @ f + eye, f.T @ target[idx])
    return out


def fit(u, i, r, n_users, n_items, seed, formulation="joint", early_stop=False):
    """One fit of the objective from N(0, 0.1) user factors drawn with ``seed``, items first.

    ``joint``: the intercepts are one more unknown of every row (design ``[f, 1]``), so each
    half-step minimises the whole stated objective over one side, as recsys's ``bigquery_ml``
    solver does. ``intercepts_first``: ridge intercepts by alternating sweeps, then ALS on what
    they leave. ``early_stop``: BigQuery ML's EARLY_STOP with MIN_REL_PROGRESS 0.01 (stop after
    the first iteration that improves the loss by less than 1 %, keeping it).
    """
    x = np.random.default_rng(seed).normal(0, 0.1, (n_users, RANK))
    mu = r.mean()
    if formulation == "joint":
        bu, bi = np.zeros(n_users), np.zeros(n_items)
    else:
        mu, bu, bi = intercepts(u, i, r, n_users, n_items)
    losses = []
    for _ in range(ITERATIONS):
        if formulation == "joint":
            yb = ridge_rows(i, u, n_items, np.column_stack([x, np.ones(n_users)]),
                            r - mu - bu[u])
            y, bi = yb[:, :-1], yb[:, -1]
            xb = ridge_rows(u, i, n_users, np.column_stack([y, np.ones(n_items)]),
                            r - mu - bi[i])
            x, bu = xb[:, :-1], xb[:, -1]
        else:
            residual = r - mu - bu[u] - bi[i]
            y = ridge_rows(i, u, n_items, x, residual)
            x = ridge_rows(u, i, n_users, y, residual)
        pred = mu + bu[u] + bi[i] + np.einsum("nk,nk->n", x[u], y[i])
        losses.append(float(np.mean((r - pred) ** 2)))
        if early_stop and len(losses) > 1 and \
                (losses[-2] - losses[-1]) / losses[-2] < MIN_REL_PROGRESS:
            break
    return dict(mu=mu, bu=bu, bi=bi, x=x, y=y, losses=losses, seed=seed)


def all_pairs(m):
    return m["mu"] + m["bu"][:, None] + m["bi"][None, :] + m["x"] @ m["y"].T


def evaluate(m, u, i, r):
    """ML.EVALUATE's explicit metrics on the given ratings."""
    p = m["mu"] + m["bu"][u] + m["bi"][i] + np.einsum("nk,nk->n", m["x"][u], m["y"][i])
    err = r - p
    var = r.var()
    return {"mean_absolute_error": float(np.abs(err).mean()),
            "mean_squared_error": float((err ** 2).mean()),
            "mean_squared_log_error": float(((np.log1p(r) - np.log1p(p)) ** 2)
                                            .mean()),
            "median_absolute_error": float(np.median(np.abs(err))),
            "r2_score": float(1 - (err ** 2).sum() / (len(r) * var)),
            "explained_variance": float(1 - err.var() / var)}


def top_k(scores, k=TOP):
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    return [set(row) for row in part]


def spread(a, b, metrics, tops):
    pa, pb = all_pairs(a), all_pairs(b)
    diff = (pa - pb).ravel()
    overlap = np.mean([len(x & y) / TOP for x, y in zip(tops[a["seed"]], tops[b["seed"]])])
    ma, mb = metrics[a["seed"]], metrics[b["seed"]]
    return {"seeds": [a["seed"], b["seed"]],
            "metric_abs_difference": {k: abs(ma[k] - mb[k]) for k in ma},
            "metric_rel_difference": {k: abs(ma[k] - mb[k]) / abs(ma[k]) for k in ma},
            "prediction_rmse": float(np.sqrt(np.mean(diff ** 2))),
            "prediction_pearson": float(np.corrcoef(pa.ravel(), pb.ravel())[0, 1]),
            "mean_overlap_at_5": float(overlap)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default=os.path.join(REPO, "data", "ml-latest-small",
                                                          "ratings.csv"))
    parser.add_argument("--movies", default=os.path.join(REPO, "data", "ml-latest-small",
                                                         "movies.csv"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--export", help="write one fit's outputs in BigQuery's export formats")
    parser.add_argument("--export-seed", type=int, default=None)
    parser.add_argument("--formulation", choices=["intercepts_first", "joint"],
                        default="intercepts_first",
                        help="intercepts fitted first (as the reference document's NumPy fit) "
                             "or jointly inside ALS (as recsys's bigquery_ml solver)")
    parser.add_argument("--early-stop", action="store_true",
                        help="BigQuery ML's EARLY_STOP (MIN_REL_PROGRESS 0.01) within the "
                             "12 iterations")
    args = parser.parse_args(argv)
    users, items, u, i, r = load(args.ratings)
    models, metrics, tops = {}, {}, {}
    for seed in args.seeds:
        start = time.perf_counter()
        models[seed] = m = fit(u, i, r, len(users), len(items), seed, args.formulation,
                                  args.early_stop)
        metrics[seed] = evaluate(m, u, i, r)
        tops[seed] = top_k(all_pairs(m))
        print(json.dumps({"seed": seed, "seconds": round(time.perf_counter() - start, 1),
                          "loss": [round(x, 5) for x in m["losses"]], **metrics[seed]}),
              flush=True)
    rows = [spread(models[a], models[b], metrics, tops)
            for a, b in itertools.combinations(args.seeds, 2)]
    for row in rows:
        print(json.dumps(row), flush=True)
    if rows:
        print(json.dumps({"summary": "worst over seed pairs", "pairs": len(rows),
                          "max_metric_rel_difference": max(
                              max(x["metric_rel_difference"].values()) for x in rows),
                          "max_metric_abs_difference": {
                              k: max(x["metric_abs_difference"][k] for x in rows)
                              for k in rows[0]["metric_abs_difference"]},
                          "max_prediction_rmse": max(x["prediction_rmse"] for x in rows),
                          "min_prediction_pearson": min(x["prediction_pearson"] for x in rows),
                          "min_mean_overlap_at_5": min(x["mean_overlap_at_5"] for x in rows)}),
              flush=True)
    if args.export:
        seed = args.export_seed if args.export_seed is not None else args.seeds[0]
        export(args.export, models[seed], metrics[seed], users, items, args.movies)
    return 0


def export(folder, m, metrics, users, items, movies_path):
    """The fit's outputs as BigQuery leaves them (see tests/bq_writers.py for the sources)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import bq_writers as bw

    os.makedirs(folder, exist_ok=True)
    names = list(metrics)
    bw.write_csv(os.path.join(folder, "evaluate.csv"), names, [[metrics[k] for k in names]])
    bw.write_json(os.path.join(folder, "training_info.json"), [
        {"training_run": 0, "iteration": it, "loss": loss, "eval_loss": None,
         "learning_rate": None, "duration_ms": 1000} for it, loss in enumerate(m["losses"])])
    scores = all_pairs(m)
    n_users, n_items = scores.shape
    shards = bw.shard_names(os.path.join(folder, "recommend"), "avro", 3)
    bounds = np.linspace(0, n_users, len(shards) + 1).astype(int)
    for path, lo, hi in zip(shards, bounds[:-1], bounds[1:]):
        uu = np.repeat(np.arange(lo, hi), n_items)
        ii = np.tile(np.arange(n_items), hi - lo)
        bw.write_avro_columns(path, {"predicted_rating": scores[lo:hi].ravel(),
                                     "user_id": users[uu], "item_id": items[ii]},
                              {"predicted_rating": "FLOAT64", "user_id": "INT64",
                               "item_id": "INT64"})
    movies = pd.read_csv(movies_path).set_index("movieId")
    top_rows = []
    for row in range(n_users):  # ARRAY_AGG(STRUCT(movie_title, genre, predicted_rating)
        best = np.argsort(-scores[row], kind="stable")[:TOP]  # ORDER BY predicted_rating DESC
        top_rows.append({"user_id": int(users[row]), "f0_": [  # LIMIT 5): no alias -> f0_
            {"movie_title": movies.title.get(items[k]), "genre": movies.genres.get(items[k]),
             "predicted_rating": float(scores[row, k])} for k in best]})
    bw.write_json(os.path.join(folder, "top5.json"), top_rows)
    weight_rows = (
        [("user_id", str(users[k]), [{"factor": f + 1, "weight": float(w)}
                                     for f, w in enumerate(m["x"][k])], float(m["bu"][k]))
         for k in range(n_users)]
        + [("item_id", str(items[k]), [{"factor": f + 1, "weight": float(w)}
                                       for f, w in enumerate(m["y"][k])], float(m["bi"][k]))
           for k in range(n_items)]
        + [(None, "global__intercept__", None, float(m["mu"]))])
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(
        weight_rows, columns=["processed_input", "feature", "factor_weights", "intercept"]),
        preserve_index=False), os.path.join(folder, "weights.parquet"))
    print(json.dumps({"exported": folder, "seed": m["seed"]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
