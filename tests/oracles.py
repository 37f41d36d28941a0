"""Independent numpy implementations the Spark code is checked against."""

import numpy as np


def regression_metrics(label, pred):
    """ML.EVALUATE's explicit metrics, straight from their formulas."""
    label, pred = np.asarray(label, dtype=float), np.asarray(pred, dtype=float)
    err = label - pred
    return {
        "mean_absolute_error": np.mean(np.abs(err)),
        "mean_squared_error": np.mean(err ** 2),
        "mean_squared_log_error": np.mean((np.log1p(label) - np.log1p(pred)) ** 2),
        "median_absolute_error": np.median(np.abs(err)),
        "r2_score": 1 - np.sum(err ** 2) / (len(label) * np.var(label)),
        "explained_variance": 1 - np.var(err) / np.var(label),
    }
