"""Hyperparameter tuning, like BigQuery ML's NUM_TRIALS.

Trials are drawn from the grid ``tuning.num_factors x l2_reg x intercept_l2_reg (x wals_alpha)``
for the ``bigquery_ml`` solver, ``tuning.num_factors x l2_reg x reg_param (x wals_alpha)`` for
``spark_als`` (an empty ``intercept_l2_reg`` list means the intercepts take each trial's l2_reg):
``grid`` takes the first ``num_trials`` combinations in a fixed order, ``random`` a seeded sample
of ``num_trials`` of them. Each trial trains on the training rows minus a validation split
carved from them (RANDOM, ``validation_fraction``, the model seed) and is scored on that split:
explicit models by MEAN_SQUARED_ERROR (BigQuery ML's objective), implicit ones by
mean_average_precision. The test rows are never seen. The best trial's options then train the
final model on all training rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from typing import Any, Dict, List, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession

from recsys.config import ModelConfig, TuningConfig
from recsys.schemas import TRIALS_SCHEMA
from recsys.evaluation import model_metrics_for
from recsys.model import fit
from recsys.model.split import split_ratings

def candidates(tuning: TuningConfig, *, implicit: bool, seed: int,
               solver: str = "bigquery_ml") -> List[Dict[str, Any]]:
    """The trials' hyperparameters, in trial order.

    >>> from recsys.config import TuningConfig
    >>> t = TuningConfig(num_trials=3, num_factors=(8, 16), l2_reg=(1.0,), reg_param=(0.1, 0.2))
    >>> [(c["num_factors"], c["reg_param"]) for c in candidates(t, implicit=False, seed=1,
    ...                                                          solver="spark_als")]
    [(8, 0.1), (8, 0.2), (16, 0.1)]
    >>> t = TuningConfig(num_trials=4, num_factors=(8,), l2_reg=(1.0, 2.0), intercept_l2_reg=(3.0,))
    >>> [(c["l2_reg"], c["intercept_l2_reg"], c["reg_param"]) for c in candidates(
    ...     t, implicit=False, seed=1)]
    [(1.0, 3.0, None), (2.0, 3.0, None)]
    """
    alphas = tuning.wals_alpha if implicit else (None,)
    if solver == "bigquery_ml":
        second = [("intercept_l2_reg", v) for v in (tuning.intercept_l2_reg or (None,))]
    else:
        second = [("reg_param", v) for v in tuning.reg_param]
    grid = [{"num_factors": f, "l2_reg": l2, "reg_param": None, "intercept_l2_reg": None,
             second_key: value, "wals_alpha": a}
            for f, l2, (second_key, value), a in itertools.product(
                tuning.num_factors, tuning.l2_reg, second, alphas)]
    if tuning.algorithm == "random" and tuning.num_trials < len(grid):
        return random.Random(seed).sample(grid, tuning.num_trials)
    return grid[: tuning.num_trials]


def tune(spark: SparkSession, train: DataFrame, model_cfg: ModelConfig, tuning: TuningConfig,
         ) -> Tuple[ModelConfig, DataFrame]:
    """Run the trials; returns the best trial's ModelConfig and the ``trials`` table."""

    implicit = model_cfg.feedback_type == "implicit"
    # A seed of its own: the training rows may come from a RANDOM split with the model's seed,
    # and the same hash would put none of them below the validation fraction.
    parts = split_ratings(train, method="RANDOM", eval_fraction=tuning.validation_fraction,
                          seed=model_cfg.seed + 1, col_user=model_cfg.user_col,
                          col_item=model_cfg.item_col)
    fit_rows, valid_rows = parts.train.cache(), parts.eval.cache()
    if valid_rows.limit(1).count() == 0:
        raise ValueError("tuning: the validation split is empty; raise tuning.validation_fraction")
    results: List[Dict[str, Any]] = []
    trials = candidates(tuning, implicit=implicit, seed=model_cfg.seed, solver=model_cfg.solver)
    for trial_id, params in enumerate(trials):
        cfg = dataclasses.replace(model_cfg, num_factors=params["num_factors"],
                                  l2_reg=params["l2_reg"], reg_param=params["reg_param"],
                                  intercept_l2_reg=params["intercept_l2_reg"],
                                  wals_alpha=(model_cfg.wals_alpha if params["wals_alpha"] is None
                                              else params["wals_alpha"]),
                                  training_info="final", data_split_method="no_split")
        start = time.perf_counter()
        model = fit(fit_rows, cfg)
        metrics = model_metrics_for(model, valid_rows, model_cfg.rating_col)
        objective = metrics["mean_average_precision" if implicit else "mean_squared_error"]
        results.append({
            "trial_id": trial_id, **params, "objective": objective,
            "eval_rmse": None if implicit or objective is None else objective ** 0.5,
            "duration_ms": int(round((time.perf_counter() - start) * 1000)), "cfg": cfg,
        })
    fit_rows.unpersist()
    valid_rows.unpersist()
    best = _best(results, maximise=implicit)
    rows = [tuple(({**r, "is_optimal": r is best}).get(f.name) for f in TRIALS_SCHEMA.fields)
            for r in results]
    final_cfg = dataclasses.replace(best["cfg"], training_info=model_cfg.training_info,
                                    data_split_method=model_cfg.data_split_method)
    return final_cfg, spark.createDataFrame(rows, TRIALS_SCHEMA)


def _best(results: List[Dict[str, Any]], maximise: bool) -> Dict[str, Any]:
    scored = [r for r in results if r["objective"] is not None]
    if not scored:
        raise ValueError("no tuning trial produced a score")
    key = (lambda r: (-r["objective"], r["trial_id"])) if maximise else \
        (lambda r: (r["objective"], r["trial_id"]))
    return min(scored, key=key)


def trial_summary(trials: DataFrame) -> Optional[str]:
    """One line describing the optimal trial."""
    best = trials.where("is_optimal").head()
    if best is None:
        return None
    if best.reg_param is not None:
        second = f"reg_param {best.reg_param}"
    else:
        ridge = best.intercept_l2_reg if best.intercept_l2_reg is not None else best.l2_reg
        second = f"intercept_l2_reg {ridge:g}"
    return (f"best of {trials.count()} trials: trial {best.trial_id} (num_factors "
            f"{best.num_factors}, l2_reg {best.l2_reg:g}, {second}, "
            f"validation objective {best.objective:.4f})")
