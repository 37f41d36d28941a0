"""How close each solver comes to BigQuery ML's model; prints a Markdown table and JSON lines.

    python benchmarks/fidelity.py [--data sample ml-1m] [--rules default]

For each data set (the shipped sample; ML-1M-shaped synthetic data from ``synthetic``,
seed 0) and the tutorial's options (NUM_FACTORS 34, L2_REG 9.83, MAX_ITERATIONS 20, EARLY_STOP
as BigQuery ML), fits the ``bigquery_ml`` solver (BigQuery ML's objective) and ``spark_als``
(pyspark.ml ALS) with each regParam rule asked for, in one Spark session, and reports per model:
in-sample MSE and R2, training iterations, the number of distinct top-5 lists (already-rated
items kept, as ML.RECOMMEND), and the RMSE between its predictions and the bigquery_ml solver's,
on the training pairs and on 100,000 seeded random (user, item) pairs that have no rating.

regParam rules for spark_als (``--rules``; ``default`` is what recsys uses when only l2_reg is
set): see ``recsys.model.SPARK_REG_PARAM_RULES``.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from pyspark.sql import functions as F  # noqa: E402

from recsys.config import ModelConfig  # noqa: E402
from recsys.model import fit, score_pairs  # noqa: E402
from recsys.runner.pipeline import model_metrics_for  # noqa: E402
from recsys.model.recommend import top_k_for_users  # noqa: E402
from recsys.session import build_session  # noqa: E402

TUTORIAL = ModelConfig(num_factors=34, l2_reg=9.83, max_iterations=20, seed=42)
UNSEEN_PAIRS = 100_000


def load(spark, name: str, data_dir: str):
    if name == "sample":
        frame = pd.read_csv(os.path.join(REPO, "data", "ml-latest-small", "ratings.csv"))
    else:
        from bench import ensure_data

        frame = pd.read_csv(ensure_data(name, 0, data_dir), sep=":", header=None,
                            usecols=[0, 2, 4], engine="c")
    frame = frame.iloc[:, :3]
    frame.columns = ["user_id", "item_id", "rating"]
    frame = frame.astype({"user_id": "int64", "item_id": "int64", "rating": "float64"})
    return spark.createDataFrame(frame).cache(), frame


def unseen(frame: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users, items = frame.user_id.unique(), frame.item_id.unique()
    pairs = pd.DataFrame({"user_id": rng.choice(users, 2 * n), "item_id": rng.choice(items, 2 * n)})
    rated = pd.MultiIndex.from_frame(frame[["user_id", "item_id"]])
    keep = ~pd.MultiIndex.from_frame(pairs).isin(rated)
    return pairs[keep].drop_duplicates().head(n)


def predictions(model, pairs):
    return score_pairs(model, pairs, "_p").select("user_id", "item_id", "_p")


def rmse_between(a, b, pairs) -> float:
    joined = predictions(a, pairs).join(predictions(b, pairs).withColumnRenamed("_p", "_q"),
                                        ["user_id", "item_id"])
    return float(joined.agg(F.sqrt(F.avg(F.pow(F.col("_p") - F.col("_q"), 2)))).head()[0])


def describe(model, ratings, reference, pairs, label, rule, seconds):
    metrics = model_metrics_for(model, ratings, "rating")
    top = top_k_for_users(model, k=5)
    lists = top.select(F.col("recommendations.item_id").alias("ids")).distinct().count()
    iterations = (len(model.training_info) if model.options["solver"] == "bigquery_ml"
                  else model.options["max_iterations"])
    row = {"model": label, "rule": rule, "reg_param": model.options.get("spark_reg_param"),
           "iterations": iterations, "in_sample_mse": round(metrics["mean_squared_error"], 4),
           "in_sample_r2": round(metrics["r2_score"], 4), "distinct_top5": lists,
           "users": model.data["n_users"], "fit_s": round(seconds, 1)}
    if reference is not None:
        row["rmse_vs_bqml_train"] = round(rmse_between(model, reference, ratings), 4)
        row["rmse_vs_bqml_unseen"] = round(rmse_between(model, reference, pairs), 4)
    return row


def main(argv=None):
    from recsys.model import SPARK_REG_PARAM_RULES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["sample", "ml-1m"],
                        choices=["sample", "ml-1m"])
    parser.add_argument("--rules", nargs="+", default=["default"],
                        help=f"spark_als regParam rules: {', '.join(SPARK_REG_PARAM_RULES)}")
    parser.add_argument("--data-dir", default="/tmp/recsys-bench/data")
    args = parser.parse_args(argv)
    spark = build_session(extra_conf={"spark.sql.shuffle.partitions": "4",
                                      "spark.driver.memory": "6g"})
    spark.sparkContext.setLogLevel("ERROR")
    rows = []
    for name in args.data:
        ratings, frame = load(spark, name, args.data_dir)
        pairs = spark.createDataFrame(unseen(frame, UNSEEN_PAIRS)).cache()
        start = time.perf_counter()
        reference = fit(ratings, TUTORIAL)
        rows.append({"data": name, **describe(reference, ratings, None, pairs, "bigquery_ml",
                                              "-", time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
        for rule in args.rules:
            cfg = dataclasses.replace(TUTORIAL, solver="spark_als", reg_param_rule=rule)
            start = time.perf_counter()
            model = fit(ratings, cfg)
            rows.append({"data": name, **describe(model, ratings, reference, pairs, "spark_als",
                                                  rule, time.perf_counter() - start)})
            print(json.dumps(rows[-1]), flush=True)
    spark.stop()
    cols = ["data", "model", "rule", "reg_param", "iterations", "in_sample_mse", "in_sample_r2",
            "distinct_top5", "users", "rmse_vs_bqml_train", "rmse_vs_bqml_unseen"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [row.get(c) for c in cols]
        print("| " + " | ".join("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
                                for v in cells) + " |")


if __name__ == "__main__":
    main()
