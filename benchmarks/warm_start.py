"""Iterations to the same loss: a fit started from yesterday's model against a cold one.

    python benchmarks/warm_start.py --ratings data/ml-latest-small/ratings.csv

Yesterday's model is fitted on the ratings up to the ``--cut`` quantile of their timestamps;
today's fit is on all of them, cold (the seeded start) and warm (``model.warm_start``:
yesterday's users start from their saved factors and intercepts, users new today from the
seeded start). Each is run twice with the tutorial's options (34 factors, L2_REG 9.83): with
BigQuery ML's EARLY_STOP (MIN_REL_PROGRESS 0.01), and without it for ``--max-iterations``
iterations, to see when each first reaches the loss the cold early-stopped fit ends at. One
JSON object per line, then a Markdown table.
"""

import argparse
import dataclasses
import json

import pandas as pd

from recsys.config import ModelConfig
from recsys.model import fit
from recsys.session import build_session


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default="data/ml-latest-small/ratings.csv")
    parser.add_argument("--cut", type=float, default=0.9,
                        help="yesterday: the ratings up to this quantile of the timestamps")
    parser.add_argument("--max-iterations", type=int, default=20)
    args = parser.parse_args(argv)

    spark = build_session(extra_conf={"spark.sql.shuffle.partitions": "4"})
    ratings = pd.read_csv(args.ratings).rename(columns={"userId": "user_id",
                                                        "movieId": "item_id"})
    columns = ["user_id", "item_id", "rating"]
    early = ratings[ratings.timestamp <= ratings.timestamp.quantile(args.cut)]
    cfg = ModelConfig(num_factors=34, l2_reg=9.83, max_iterations=args.max_iterations)
    yesterday = fit(spark.createDataFrame(early[columns]), cfg)
    today = spark.createDataFrame(ratings[columns]).cache()
    runs = {}
    for start, warm in (("cold", None), ("warm", yesterday)):
        for early_stop in (True, False):
            model = fit(today, dataclasses.replace(cfg, early_stop=early_stop), warm_start=warm)
            runs[start, early_stop] = [row["loss"] for row in model.training_info]
    target = runs["cold", True][-1]
    rows = []
    for start in ("cold", "warm"):
        curve = runs[start, False]
        reached = next((n + 1 for n, loss in enumerate(curve) if loss <= target), None)
        rows.append({"start": start, "early_stop_iterations": len(runs[start, True]),
                     "early_stop_loss": runs[start, True][-1],
                     "iterations_to_cold_loss": reached,
                     f"loss_after_{args.max_iterations}": curve[-1],
                     "first_losses": [round(v, 4) for v in curve[:6]]})
    print(json.dumps({"yesterday_ratings": len(early), "today_ratings": len(ratings),
                      "yesterday_users": int(early.user_id.nunique()),
                      "today_users": int(ratings.user_id.nunique()),
                      "cold_early_stop_loss": target}), flush=True)
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"\n| start | iterations (EARLY_STOP) | loss there | iterations to {target:.4f} | "
          f"loss after {args.max_iterations} |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['start']} | {row['early_stop_iterations']} | {row['early_stop_loss']:.4f} "
              f"| {row['iterations_to_cold_loss']} | "
              f"{row[f'loss_after_{args.max_iterations}']:.4f} |")
    spark.stop()


if __name__ == "__main__":
    main()
