"""The trained model: per-user and per-item intercepts and factors, keyed by the original ids,
with the options, training data summary and ML.TRAINING_INFO rows they came from. Every stage
after CREATE MODEL (scoring, persistence, ML.RECOMMEND, ML.WEIGHTS) reads this one type."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

from pyspark.sql import DataFrame

# Column names of the model's side tables: id, intercept, factors (ARRAY<DOUBLE>).
INTERCEPT, FACTORS = "intercept", "factors"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model: per-user and per-item intercepts and factors, keyed by original ids."""

    users: DataFrame
    items: DataFrame
    global_intercept: float
    options: Dict[str, Any]
    data: Dict[str, Any]
    training_metrics: Dict[str, Optional[float]] = field(default_factory=dict)
    training_info: List[Dict[str, Any]] = field(default_factory=list)
    # Wall seconds of the fit's parts (intercepts, als_fit, ...): for reports and benchmarks.
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def col_user(self) -> str:
        """Name of the user id column (USER_COL)."""
        return self.options["user_col"]

    @property
    def col_item(self) -> str:
        """Name of the item id column (ITEM_COL)."""
        return self.options["item_col"]

    @property
    def rank(self) -> int:
        """Number of latent factors (NUM_FACTORS)."""
        return int(self.options["num_factors"])

    @property
    def implicit(self) -> bool:
        """True for FEEDBACK_TYPE implicit."""
        return self.options["feedback_type"] == "implicit"

    def metadata(self) -> Dict[str, Any]:
        """JSON-serialisable description saved beside the factor tables."""
        return {"options": self.options, "training_data": self.data,
                "global_intercept": self.global_intercept,
                "training_metrics": self.training_metrics, "training_info": self.training_info}


def with_training_metrics(model: TrainedModel, metrics: Dict[str, Optional[float]]) -> TrainedModel:
    """A copy of ``model`` carrying its training-time ML.EVALUATE metrics."""
    return replace(model, training_metrics=dict(metrics))
