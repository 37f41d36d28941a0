"""model: CREATE MODEL and what a model answers. ``train`` is the train stage (options and
``fit``), with the two solvers: ``bqml_als`` + ``normal_equations`` solve BigQuery ML's objective
on Spark, ``spark_als`` runs pyspark.ml ALS on fitted intercepts. ``trained_model`` is the fitted
model, ``scoring`` scores (user, item) pairs with it, ``persistence`` saves and loads it; ``ids``
maps ids to dense indices, ``split`` is DATA_SPLIT_METHOD, ``prediction`` the one prediction
formula, ``recommend`` ML.RECOMMEND and the top-k, ``weights`` ML.WEIGHTS and the embeddings,
``fold_in`` users unseen at training solved against the fixed items, ``rating_blocks`` the
solver's blocks of ratings.
Imports the foundations only; reads and writes no tables.

This package face only hands on the names other packages use (``from recsys.model import fit``).
"""

from recsys.model.persistence import ITEMS_DIR, METADATA_DIR, USERS_DIR, load, save
from recsys.model.scoring import cast_ids, score_pairs, side, training_loss
from recsys.model.spark_als import INTERCEPT_SWEEPS, fit_intercepts
from recsys.model.train import (DEFAULT_REG_PARAM_RULE, SPARK_REG_PARAM_RULES,
                                default_num_factors, describe_training_data, fit,
                                resolve_options, solver_params, spark_reg_param)
from recsys.model.trained_model import FACTORS, INTERCEPT, TrainedModel, with_training_metrics

__all__ = [
    "DEFAULT_REG_PARAM_RULE", "FACTORS", "INTERCEPT", "INTERCEPT_SWEEPS", "ITEMS_DIR",
    "METADATA_DIR", "SPARK_REG_PARAM_RULES", "TrainedModel", "USERS_DIR", "cast_ids",
    "default_num_factors", "describe_training_data", "fit", "fit_intercepts", "load",
    "resolve_options", "save", "score_pairs", "side", "solver_params", "spark_reg_param",
    "training_loss", "with_training_metrics",
]
