"""The bare pyspark.ml ALS script that benchmarks/bench.py measures recsys against.

    python benchmarks/bare_als.py --ratings /tmp/recsys-bench/data/ml-1m-seed0/ratings.dat

What a data engineer would write without recsys: load the ratings file (ml-1m ``::`` format),
fit pyspark.ml ALS (rank 34, the given iterations), score the RMSE on the training rows and
count ``recommendForAllUsers(5)``. No validation, no rejects, no tables written. Prints one JSON
line with the wall seconds from before the JVM starts to the last result.
"""

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", required=True)
    parser.add_argument("--rank", type=int, default=34)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--reg-param", type=float, default=0.1)
    parser.add_argument("--driver-memory", default="4g")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master("local[*]").appName("bare-als")
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.sql.shuffle.partitions", "8").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.setCheckpointDir("/tmp/bare-als-checkpoints")
    parts = F.split("value", "::")
    ratings = spark.read.text(args.ratings).select(
        parts[0].cast("int").alias("user"), parts[1].cast("int").alias("item"),
        parts[2].cast("float").alias("rating")).cache()
    model = ALS(rank=args.rank, maxIter=args.iterations, regParam=args.reg_param,
                userCol="user", itemCol="item", ratingCol="rating", seed=42).fit(ratings)
    rmse = RegressionEvaluator(labelCol="rating").evaluate(model.transform(ratings))
    users = model.recommendForAllUsers(5).count()
    seconds = time.perf_counter() - start
    spark.stop()
    print(json.dumps({"bare_als_s": round(seconds, 2), "rmse": round(rmse, 4), "users": users}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
