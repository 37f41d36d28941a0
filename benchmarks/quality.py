"""Held-out quality of three models on the same split, one JSON object per line.

    python benchmarks/quality.py --ratings data/ml-latest-small/ratings.csv --split random --seed 42
    python benchmarks/quality.py --train u1.base --test u1.test --format ml-100k

Models: the tutorial's options on the ``bigquery_ml`` solver (34 factors, L2_REG 9.83, BigQuery
ML's objective and early stop: what BigQuery ML itself would give), raw pyspark.ml ALS (the peer: no
intercepts, cold test rows dropped as its coldStartStrategy does; its regParam picked on a
validation split carved from training), and the tuned configuration of conf/recommended.yaml,
tuned on a validation split when its tuning.num_trials > 0 (with and without its minimum-support
remedy for the top-k lists).
Rating metrics are over every test row (cold rows get the intercept fallback) except for raw
ALS; ranking metrics follow recsys.evaluation.ranking's full-ranking protocol with k = 10.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F

from recsys.config import IngestConfig, ModelConfig, SourceConfig, load_config
from recsys.sources.ingest import ingest
from recsys.model import FACTORS, INTERCEPT, TrainedModel, fit
from recsys.evaluation.ranking import rating_metrics, ranking_metrics, recommend_unseen
from recsys.session import build_session
from recsys.model.split import split_ratings
from recsys.evaluation.tuning import tune

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10


def read(spark, path, fmt, scale):
    result = ingest(spark, SourceConfig(format=fmt, ratings=path),
                    IngestConfig(rating_min=scale[0], rating_max=scale[1], max_reject_fraction=1))
    return result.ratings.select("user_id", "item_id", "rating").cache()


def evaluate(name, model, train, test, seconds, min_item_ratings=0, known_only=False):
    scored_test = test
    if known_only:  # raw ALS cannot score cold rows: drop them, as coldStartStrategy="drop"
        scored_test = (test.join(model.users.select("user_id"), "user_id")
                       .join(model.items.select("item_id"), "item_id"))
    values = rating_metrics(model, scored_test)
    top = recommend_unseen(model, train, test.select("user_id"), k=K,
                           min_item_ratings=min_item_ratings)
    ranks = ranking_metrics(top, test, train, k=K)
    row = {"model": name, "rmse": values["rmse"], "mae": values["mean_absolute_error"],
           "r2": values["r2_score"], "test_rows": test.count(),
           "scored_rows": int(values["scored_rows"]),
           **{f"{key.replace('_at_k', '')}@{K}" if key.endswith("_at_k") else key: value
              for key, value in ranks.items()},
           "train_seconds": round(seconds, 1)}
    print(json.dumps(row), flush=True)
    return row


def raw_als(spark, train, rank, seed):
    """pyspark.ml ALS alone, regParam chosen on a validation split of the training rows."""
    parts = split_ratings(train, method="RANDOM", eval_fraction=0.1, seed=seed + 1)
    best = None
    for reg in (0.05, 0.1, 0.2, 0.3):
        als = ALS(rank=rank, maxIter=20, regParam=reg, userCol="user_id", itemCol="item_id",
                  ratingCol="rating", coldStartStrategy="drop", seed=seed)
        pred = als.fit(parts.train).transform(parts.eval)
        mse = pred.agg(F.avg(F.pow(F.col("rating") - F.col("prediction"), 2))).head()[0]
        best = min(best or (mse, reg), (mse, reg))
    model = ALS(rank=rank, maxIter=20, regParam=best[1], userCol="user_id", itemCol="item_id",
                ratingCol="rating", seed=seed).fit(train)

    def table(factors, col):
        return factors.select(F.col("id").cast("long").alias(col), F.lit(0.0).alias(INTERCEPT),
                              F.col("features").cast("array<double>").alias(FACTORS))

    return TrainedModel(users=table(model.userFactors, "user_id"),
                        items=table(model.itemFactors, "item_id"), global_intercept=0.0,
                        options={"user_col": "user_id", "item_col": "item_id",
                                 "feedback_type": "explicit", "reg_param": best[1],
                                 "num_factors": rank},
                        data={})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train")
    parser.add_argument("--test")
    parser.add_argument("--ratings")
    parser.add_argument("--split", choices=["random"], default="random")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", default="ml-latest",
                        choices=["ml-latest", "ml-1m", "ml-100k", "csv", "parquet"])
    parser.add_argument("--config", default=os.path.join(REPO, "conf", "recommended.yaml"),
                        help="the tuned configuration (tuning grid, remedy)")
    args = parser.parse_args(argv)
    if not ((args.train and args.test) or args.ratings):
        parser.error("give --train and --test, or --ratings")
    scale = (0.5, 5.0)
    spark = build_session(extra_conf={"spark.sql.shuffle.partitions": "4"})
    try:
        if args.ratings:
            parts = split_ratings(read(spark, args.ratings, args.format, scale), method="RANDOM",
                                  eval_fraction=0.2, seed=args.seed)
            train, test = parts.train.cache(), parts.eval.cache()
        else:
            train = read(spark, args.train, args.format, scale)
            test = read(spark, args.test, args.format, scale)

        tutorial = ModelConfig(num_factors=34, l2_reg=9.83, seed=args.seed)
        start = time.perf_counter()
        model = fit(train, tutorial)
        evaluate("tutorial options on bigquery_ml (BigQuery ML's model)", model, train, test,
                 time.perf_counter() - start)

        start = time.perf_counter()
        model = raw_als(spark, train, rank=34, seed=args.seed)
        evaluate(f"raw pyspark.ml ALS (regParam {model.options['reg_param']})", model, train,
                 test, time.perf_counter() - start, known_only=True)

        recommended = load_config(args.config)
        start = time.perf_counter()
        best_cfg = dataclasses.replace(recommended.model, seed=args.seed)
        if recommended.tuning.num_trials > 0:
            best_cfg, _ = tune(spark, train, best_cfg, recommended.tuning)
        model = fit(train, best_cfg)
        seconds = time.perf_counter() - start
        second = (f"reg_param {best_cfg.reg_param}" if best_cfg.solver == "spark_als" else
                  f"intercept_l2_reg {best_cfg.intercept_l2_reg}")
        name = (f"recommended ({best_cfg.solver}, num_factors {best_cfg.num_factors}, "
                f"l2_reg {best_cfg.l2_reg:g}, {second})")
        evaluate(name, model, train, test, seconds)
        support = recommended.recommend.min_item_ratings
        if support:
            evaluate(f"{name} + min_item_ratings {support}", model, train, test, seconds,
                     min_item_ratings=support)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
