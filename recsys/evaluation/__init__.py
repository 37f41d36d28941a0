"""evaluation: ML.EVALUATE's metrics (``metrics`` explicit, ``implicit_metrics`` implicit),
held-out rating and ranking evaluation (``ranking``) and the NUM_TRIALS search that selects
a model by them (``tuning``). Imports the model package and the foundations (config, schemas,
sums), never the runner, the sinks or the sources."""

from __future__ import annotations

from typing import Dict, Optional

from pyspark.sql import DataFrame

from recsys import model
from recsys.model import TrainedModel, recommend


def model_metrics_for(trained: TrainedModel, table: DataFrame,
                      col_rating: str) -> Dict[str, Optional[float]]:
    """As ``model_metrics``, given the rating column."""
    if trained.implicit:
        # Each truth user ranks every model item, scored block by block: no table of the pairs.
        return implicit_metrics.metrics_dict(implicit_metrics.model_implicit_metrics(
            trained, table, col_rating=col_rating))
    pred_col = recommend.prediction_column(trained, col_rating)
    scored = model.score_pairs(trained, table, pred_col)
    return metrics.metrics_dict(metrics.regression_metrics(
        scored, col_rating=col_rating, col_prediction=pred_col))


# Imported last: these modules import model_metrics_for's package.
from recsys.evaluation import implicit_metrics, metrics  # noqa: E402
