"""CREATE MODEL: BigQuery ML matrix-factorization options mapped onto pyspark.ml ALS.

Regularisation. BigQuery ML minimises
    sum (r_ui - x_u.y_i)^2 + L2_REG * (sum_u |x_u|^2 + sum_i |y_i|^2)
while pyspark.ml ALS (ALS-WR) minimises
    sum (r_ui - x_u.y_i)^2 + regParam * (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2),
n_u and n_i being rating counts. In the per-user normal equations the ridge term is
L2_REG * I against regParam * n_u * I, so regParam = L2_REG / n_u would be exact for one user. No
single regParam is exact for all; recsys matches the *average* ridge strength over all users and
items:
    regParam = L2_REG * (|U| + |I|) / (2 N)
(the mean of L2_REG / mean(n_u) and L2_REG / mean(n_i)). ``reg_param`` sets Spark's value directly.

>>> round(spark_reg_param(9.83, n_rows=1_000_209, n_users=6_040, n_items=3_706), 4)
0.0479
>>> default_num_factors(1_000_209)
20
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import schemas
from recsys.config import ModelConfig, to_dict
from recsys.errors import InputError

INT32_MAX = 2 ** 31 - 1
METADATA_FILE = "metadata.json"
ALS_DIR = "als"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted ALS model with the options it was trained with and what it was trained on."""

    als: ALSModel
    options: Dict[str, Any]
    data: Dict[str, Any]
    training_metrics: Dict[str, Optional[float]] = field(default_factory=dict)

    @property
    def global_mean(self) -> float:
        """Mean training rating: the prediction for a user or item the model has not seen."""
        return float(self.data["mean_rating"])

    def metadata(self) -> Dict[str, Any]:
        """JSON-serialisable description saved beside the ALS model."""
        return {"options": self.options, "training_data": self.data,
                "training_metrics": self.training_metrics}


def spark_reg_param(l2_reg: float, *, n_rows: int, n_users: int, n_items: int) -> float:
    """pyspark.ml regParam matching BigQuery ML's L2_REG on average (see module docstring)."""
    return l2_reg * (n_users + n_items) / (2.0 * n_rows)


def default_num_factors(n_rows: int) -> int:
    """BigQuery ML's NUM_FACTORS default, log2(training rows), within its range 2..200."""
    return int(min(200, max(2, round(math.log2(max(n_rows, 2))))))


def describe_training_data(ratings: DataFrame, *, col_user: str, col_item: str,
                           col_rating: str) -> Dict[str, Any]:
    """Counts, id ranges, mean rating and an order-independent fingerprint, in one pass."""
    row_hash = F.xxhash64(*[F.col(c) for c in ratings.columns])
    row = ratings.agg(
        F.count(F.lit(1)).alias("n_rows"),
        F.countDistinct(col_user).alias("n_users"),
        F.countDistinct(col_item).alias("n_items"),
        F.avg(col_rating).alias("mean_rating"),
        F.min(col_user).alias("min_user"), F.max(col_user).alias("max_user"),
        F.min(col_item).alias("min_item"), F.max(col_item).alias("max_item"),
        F.sum(row_hash.cast("decimal(38,0)")).cast("string").alias("hash_sum"),
        F.expr(f"bit_xor(xxhash64({', '.join(f'`{c}`' for c in ratings.columns)}))").alias("hash_xor"),
    ).head().asDict()
    digest = hashlib.sha256(f"{row['n_rows']}|{row.pop('hash_sum')}|{row.pop('hash_xor')}"
                            .encode()).hexdigest()
    row["fingerprint"] = digest[:32]
    return row


def resolve_options(cfg: ModelConfig, data: Dict[str, Any]) -> Dict[str, Any]:
    """The config's options with defaults filled in and Spark's regParam worked out."""
    options = to_dict(cfg)
    if options["num_factors"] is None:
        options["num_factors"] = default_num_factors(data["n_rows"])
    if cfg.reg_param is not None:
        options["spark_reg_param"] = cfg.reg_param
        options["reg_param_rule"] = "reg_param (set directly)"
    else:
        options["spark_reg_param"] = spark_reg_param(
            cfg.l2_reg, n_rows=data["n_rows"], n_users=data["n_users"], n_items=data["n_items"])
        options["reg_param_rule"] = "l2_reg * (n_users + n_items) / (2 * n_rows)"
    return options


def fit(ratings: DataFrame, cfg: ModelConfig) -> TrainedModel:
    """Train ALS on ``ratings`` (columns ``cfg.user_col``, ``cfg.item_col``, ``cfg.rating_col``)."""
    missing = [c for c in (cfg.user_col, cfg.item_col, cfg.rating_col) if c not in ratings.columns]
    if missing:
        raise InputError(f"training table has no column {missing[0]!r} "
                         f"(columns: {', '.join(ratings.columns)})")
    data = describe_training_data(ratings, col_user=cfg.user_col, col_item=cfg.item_col,
                                  col_rating=cfg.rating_col)
    if data["n_rows"] == 0:
        raise InputError("training table is empty")
    for side in ("user", "item"):
        lo, hi = data[f"min_{side}"], data[f"max_{side}"]
        if lo < 0 or hi > INT32_MAX:
            raise InputError(f"{side} ids must be between 0 and {INT32_MAX} for ALS; "
                             f"found {lo}..{hi}")
    options = resolve_options(cfg, data)
    als = ALS(
        rank=options["num_factors"],
        maxIter=cfg.max_iterations,
        regParam=options["spark_reg_param"],
        implicitPrefs=cfg.feedback_type == "implicit",
        alpha=cfg.wals_alpha,
        userCol=cfg.user_col,
        itemCol=cfg.item_col,
        ratingCol=cfg.rating_col,
        nonnegative=False,
        coldStartStrategy="nan",
        seed=cfg.seed,
    )
    if cfg.num_blocks is not None:
        als = als.setNumUserBlocks(cfg.num_blocks).setNumItemBlocks(cfg.num_blocks)
    return TrainedModel(als=als.fit(ratings), options=options, data=data)


def with_training_metrics(model: TrainedModel, metrics: Dict[str, Optional[float]]) -> TrainedModel:
    """A copy of ``model`` carrying its in-sample metrics (ML.EVALUATE without input)."""
    return TrainedModel(als=model.als, options=model.options, data=model.data,
                        training_metrics=dict(metrics))


def save(model: TrainedModel, path: str) -> None:
    """Write the ALS model and ``metadata.json`` into the folder ``path`` (which must not exist)."""
    model.als.write().save(os.path.join(path, ALS_DIR))
    with open(os.path.join(path, METADATA_FILE), "w", encoding="utf-8") as fh:
        json.dump(model.metadata(), fh, indent=2, sort_keys=True)


def load(path: str) -> TrainedModel:
    """Read a model saved by ``save``."""
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise InputError(f"no trained model at {path} (run the train job first)")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    return TrainedModel(als=ALSModel.load(os.path.join(path, ALS_DIR)), options=meta["options"],
                        data=meta["training_data"], training_metrics=meta["training_metrics"])

