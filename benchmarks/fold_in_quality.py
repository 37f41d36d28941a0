"""Held-out ranking of users unseen at training: intercepts only, fold-in, and a retrain.

    python benchmarks/fold_in_quality.py --ratings data/ml-latest-small/ratings.csv

Every ``--every``-th user (user_id % every == 0) is left out of training. Each such user's
earlier half of ratings (by timestamp) is what the system learns about them after training; the
later half is held out (relevant: rating >= 4). Three answers for those users, each ranking
every training item the user's earlier half does not contain:

- intercepts: what BigQuery ML answers an unseen user (global + item intercept);
- fold_in: ``recommend.fold_in`` with the earlier halves, against the trained model's items;
- retrain: a model trained with the earlier halves in its training data (the cost fold-in
  saves), the same options and seed.

The tutorial's options (34 factors, L2_REG 9.83, early stop). One JSON object per line, then a
Markdown table; metrics are recsys.evaluation.ranking's (full ranking, binary NDCG).
"""

import argparse
import json
import time

import pandas as pd
from pyspark.sql import functions as F

from recsys.config import ModelConfig
from recsys.evaluation.ranking import ranking_metrics
from recsys.model import fit
from recsys.model.fold_in import fold_in
from recsys.model.recommend import ranked_top_k
from recsys.session import build_session


def split(ratings: pd.DataFrame, every: int):
    """(training rows, the held-out users' earlier halves, their later halves)."""
    held = ratings.user_id % every == 0
    order = ratings[held].sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    position = order.groupby("user_id").cumcount()
    size = order.groupby("user_id").user_id.transform("size")
    return ratings[~held], order[position < size // 2], order[position >= size // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default="data/ml-latest-small/ratings.csv")
    parser.add_argument("--every", type=int, default=5, help="hold out users with id %% N == 0")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    spark = build_session(extra_conf={"spark.sql.shuffle.partitions": "4"})
    ratings = pd.read_csv(args.ratings).rename(columns={"userId": "user_id",
                                                        "movieId": "item_id"})
    columns = ["user_id", "item_id", "rating"]
    train, early, late = (spark.createDataFrame(part[columns]).cache()
                          for part in split(ratings, args.every))
    cfg = ModelConfig(num_factors=34, l2_reg=9.83, max_iterations=20)
    users = early.select("user_id").distinct()

    def answer(model, known):
        # Ranked over the training items the user has not rated in what the system knows.
        top = ranked_top_k(model, k=args.k, users=users,
                           exclude=known.select("user_id", "item_id"), col_prediction="score")
        metrics = ranking_metrics(top.withColumnRenamed("_rank", "rank"), late, known,
                                  k=args.k)
        precision_5 = ranking_metrics(
            top.where(F.col("_rank") <= 5).withColumnRenamed("_rank", "rank"), late, known,
            k=5)["precision_at_k"]
        return {f"ndcg@{args.k}": metrics["ndcg_at_k"], "precision@5": precision_5,
                f"recall@{args.k}": metrics["recall_at_k"],
                "ranked_users": int(metrics["ranked_users"])}

    rows = []
    started = time.perf_counter()
    model = fit(train, cfg)
    trained = time.perf_counter() - started
    known = train.unionByName(early)
    rows.append({"answer": "intercepts", **answer(model, known),
                 "iterations": len(model.training_info)})
    started = time.perf_counter()
    folded = fold_in(model, early)
    seconds = time.perf_counter() - started
    rows.append({"answer": "fold_in", **answer(folded.model, known),
                 "iterations": len(model.training_info), "users": folded.n_users,
                 "rows": folded.n_rows, "fold_in_seconds": round(seconds, 1),
                 "train_seconds": round(trained, 1)})
    started = time.perf_counter()
    retrained = fit(known, cfg)
    rows.append({"answer": "retrain", **answer(retrained, known),
                 "iterations": len(retrained.training_info),
                 "train_seconds": round(time.perf_counter() - started, 1)})
    for row in rows:
        print(json.dumps(row), flush=True)
    keys = [f"ndcg@{args.k}", "precision@5", f"recall@{args.k}", "ranked_users"]
    print("\n| answer | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for row in rows:
        print(f"| {row['answer']} | " + " | ".join(
            f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    spark.stop()


if __name__ == "__main__":
    main()
