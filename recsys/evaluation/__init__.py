"""evaluation: ML.EVALUATE's metrics (``metrics`` explicit, ``implicit_metrics`` implicit),
held-out rating and ranking evaluation (``ranking``) and the NUM_TRIALS search that selects
a model by them (``tuning``). Imports the model package and the foundations (config, schemas,
sums), never the runner, the sinks or the sources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from recsys.model import TrainedModel


def model_metrics_for(trained: "TrainedModel", table: "DataFrame",
                      col_rating: str) -> Dict[str, Optional[float]]:
    """As ``model_metrics``, given the rating column."""
    # Imported here, not with the package: a task's Python worker that unpickles a function of
    # ``metrics`` imports this package first, and the model's modules cost it about 0.6 s.
    from recsys.evaluation import implicit_metrics, metrics
    from recsys.model import recommend, scoring

    if trained.implicit:
        # Each truth user ranks every model item, scored block by block: no table of the pairs.
        return implicit_metrics.metrics_dict(implicit_metrics.model_implicit_metrics(
            trained, table, col_rating=col_rating))
    pred_col = recommend.prediction_column(trained, col_rating)
    scored = scoring.score_pairs(trained, table, pred_col)
    return metrics.metrics_dict(metrics.regression_metrics(
        scored, col_rating=col_rating, col_prediction=pred_col))


def prediction_metrics(predictions) -> Optional[Dict[str, Optional[float]]]:
    """ML.EVALUATE's explicit metrics of a fit's own predictions of its training ratings
    (``metrics.prediction_metrics``; ``fit``'s ``score_training``)."""
    from recsys.evaluation import metrics

    return metrics.prediction_metrics(predictions)

