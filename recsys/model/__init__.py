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

import importlib

# Each name and the module that defines it, imported on first use (PEP 562): a Spark task's
# Python worker unpickling a function of one submodule (``rating_blocks``, ``bqml_als``,
# ``scoring``) imports this package first, and importing every submodule here (pyspark.ml,
# compiled from pyspark.zip's sources in each new worker) cost about 0.6 s a worker.
_HOMES = {
    "ITEMS_DIR": "persistence", "METADATA_DIR": "persistence", "USERS_DIR": "persistence",
    "load": "persistence", "save": "persistence",
    "cast_ids": "scoring", "score_pairs": "scoring", "side": "scoring",
    "training_loss": "scoring",
    "INTERCEPT_SWEEPS": "spark_als", "fit_intercepts": "spark_als",
    "DEFAULT_REG_PARAM_RULE": "train", "SPARK_REG_PARAM_RULES": "train",
    "default_num_factors": "train", "describe_training_data": "train", "fit": "train",
    "resolve_options": "train", "solver_params": "train", "spark_reg_param": "train",
    "FACTORS": "trained_model", "INTERCEPT": "trained_model", "TrainedModel": "trained_model",
    "with_training_metrics": "trained_model",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))


__all__ = sorted(_HOMES)
