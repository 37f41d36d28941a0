"""The ``spark_als`` solver: ridge-regularised intercepts fitted first (``fit_intercepts``),
then pyspark.ml ALS (ALS-WR) on the residual they leave (``recsys.model.train`` explains why
its regParam cannot give BigQuery ML's model)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Dict, List, Tuple

from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys.model import bqml_als, ids
from recsys.config import ModelConfig
from recsys.errors import InputError
from recsys.model.scoring import training_loss
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel
from recsys.sums import exact_sum

INTERCEPT_SWEEPS = 5


def fit_intercepts(ratings: DataFrame, *, global_mean: float, l2_reg: float,
                   col_user: str = "user_id", col_item: str = "item_id",
                   col_rating: str = "rating",
                   sweeps: int = INTERCEPT_SWEEPS) -> Tuple[DataFrame, DataFrame]:
    """Ridge-regularised user and item intercepts by alternating (Gauss-Seidel) sweeps.

    Minimises sum (r - global - b_u - b_i)^2 + l2_reg * (sum b_u^2 + sum b_i^2): each half-step
    is the exact minimiser b_i = sum(r - global - b_u) / (n_i + l2_reg), and likewise for b_u.
    Returns (users: [col_user, intercept], items: [col_item, intercept]).
    """
    rating = F.col(col_rating).cast("double")
    users = ratings.select(col_user).distinct().withColumn(INTERCEPT, F.lit(0.0))
    items = None
    for _ in range(sweeps):
        items = _intercept_step(ratings, users, col_user, col_item, rating, global_mean, l2_reg)
        users = _intercept_step(ratings, items, col_item, col_user, rating, global_mean, l2_reg)
    return users, items


def _intercept_step(ratings, other, other_col, own_col, rating, global_mean, l2_reg):
    # The side tables are small (one row per user or item): broadcast them into the join.
    joined = ratings.join(F.broadcast(other.withColumnRenamed(INTERCEPT, "_other")), other_col)
    step = joined.groupBy(own_col).agg(
        (exact_sum(rating - F.lit(global_mean) - F.col("_other"))
         / (F.count(F.lit(1)) + F.lit(l2_reg))).alias(INTERCEPT))
    # Cut the lineage between sweeps; a reliable checkpoint survives a lost executor.
    return step.checkpoint(eager=True)


def fit_spark_als(ratings, cfg: ModelConfig, eval_ratings, options, data,
                  timings) -> TrainedModel:
    """pyspark.ml ALS (ALS-WR) on the residual of ridge intercepts fitted first."""
    clock = time.perf_counter()
    implicit = cfg.feedback_type == "implicit"
    cols = dict(col_user=cfg.user_col, col_item=cfg.item_col, col_rating=cfg.rating_col)

    if implicit:
        global_intercept = 0.0
        users_b = ratings.select(cfg.user_col).distinct().withColumn(INTERCEPT, F.lit(0.0))
        items_b = ratings.select(cfg.item_col).distinct().withColumn(INTERCEPT, F.lit(0.0))
        target = ratings.withColumn("_target", F.col(cfg.rating_col))
    else:
        global_intercept = float(data["mean_rating"])
        users_b, items_b = fit_intercepts(ratings, global_mean=global_intercept,
                                          l2_reg=cfg.l2_reg, **cols)
        target = (ratings.join(F.broadcast(users_b.withColumnRenamed(INTERCEPT, "_bu")), cfg.user_col)
                  .join(F.broadcast(items_b.withColumnRenamed(INTERCEPT, "_bi")), cfg.item_col)
                  .withColumn("_target", F.col(cfg.rating_col) - F.lit(global_intercept)
                              - F.col("_bu") - F.col("_bi")))

    timings["intercepts"] = time.perf_counter() - clock
    clock = time.perf_counter()
    try:
        user_index = ids.build_index(ratings, cfg.user_col, index_col="_u")
        item_index = ids.build_index(ratings, cfg.item_col, index_col="_i")
    except ValueError as exc:  # more distinct ids than ALS can index
        raise InputError(str(exc)) from None
    als_input = ids.to_index(ids.to_index(target, user_index, cfg.user_col, index_col="_u"),
                             item_index, cfg.item_col, index_col="_i").select("_u", "_i", "_target")
    als_input = als_input.cache()
    timings["index"] = time.perf_counter() - clock
    timings["als_fit"] = 0.0

    def assemble(als_model) -> TrainedModel:
        def table(factors, index, idx_col, id_col, intercepts):
            named = factors.select(F.col("id").alias(idx_col),
                                   F.col("features").cast("array<double>").alias(FACTORS))
            keyed = index.join(named, idx_col).drop(idx_col)
            return intercepts.join(keyed, id_col, "left").select(id_col, INTERCEPT, FACTORS)

        return TrainedModel(
            users=table(als_model.userFactors, user_index, "_u", cfg.user_col, users_b),
            items=table(als_model.itemFactors, item_index, "_i", cfg.item_col, items_b),
            global_intercept=global_intercept, options=options, data=data)

    def als(max_iter: int):
        estimator = ALS(rank=options["num_factors"], maxIter=max_iter,
                        regParam=options["spark_reg_param"], implicitPrefs=implicit,
                        alpha=cfg.wals_alpha, userCol="_u", itemCol="_i", ratingCol="_target",
                        nonnegative=False, seed=cfg.seed)
        # Spark's default is 10 blocks whatever the cores; one per core measured faster
        # (docs/performance.md: 21.5 s against 24.1 s for ML-1M's 20 iterations on 2 cores).
        blocks = cfg.num_blocks or max(2, ratings.sparkSession.sparkContext.defaultParallelism)
        estimator = estimator.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
        return estimator.fit(als_input)

    # Each iterate is a fresh fit with maxIter = k: with a fixed seed ALS starts from the same
    # factors, so that fit *is* iterate k of the longer run. Costly (k fits); see docs/solvers.md.
    schedule = (range(1, cfg.max_iterations + 1) if cfg.training_info == "every_iteration"
                else [cfg.max_iterations])
    history: List[Dict[str, Any]] = []
    model = None
    for k in schedule:
        start = time.perf_counter()
        als_model = als(k)  # ALS.fit runs every iteration and materialises the factors
        timings["als_fit"] += time.perf_counter() - start
        model = assemble(als_model)
        model = replace(model, users=model.users.checkpoint(eager=True),
                        items=model.items.checkpoint(eager=True))
        loss = training_loss(model, ratings, col_rating=cfg.rating_col)
        eval_loss = (training_loss(model, eval_ratings, col_rating=cfg.rating_col)
                     if eval_ratings is not None else None)
        history.append({"training_run": 0, "iteration": k - 1, "loss": loss, "eval_loss": eval_loss,
                        "learning_rate": None,
                        "duration_ms": int(round((time.perf_counter() - start) * 1000))})
        if (cfg.early_stop and len(history) >= 2
                and bqml_als.rel_progress(history) < cfg.min_rel_progress):
            break
    assert model is not None
    als_input.unpersist()
    return replace(model, training_info=history)
