"""What the comparison stages measured: frozen result objects, the contract between the stages
(``stages``, ``topk``) and the renderer (``render``). Plain Python values, no DataFrames; a
``row()`` (and each ``MetricRow``, ``LossRow``) is a ``compare_*`` table's row in
``recsys.schemas``' column order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from recsys.config import COMPARE_OUTPUTS


@dataclass(frozen=True)
class IdCounts:
    """Distinct ids (or rows) of each side, how many both have, how many only one has."""

    bqml: int
    recsys: int
    compared: int
    bqml_only: Optional[int]
    recsys_only: Optional[int]

    def row(self, what: str) -> tuple:
        """A ``compare_counts`` row."""
        return (what, self.bqml, self.recsys, self.compared, self.bqml_only, self.recsys_only)


@dataclass(frozen=True)
class MetricRow:
    metric: str
    bqml: Optional[float]
    recsys: Optional[float]
    difference: Optional[float]  # recsys - bqml


@dataclass(frozen=True)
class MetricsComparison:
    """ML.EVALUATE's two rows side by side, in BigQuery ML's metric order."""

    rows: Tuple[MetricRow, ...]

    def values(self) -> Dict[str, Tuple[Optional[float], Optional[float]]]:
        """{metric: (bqml, recsys)}, what the verdict judges."""
        return {r.metric: (r.bqml, r.recsys) for r in self.rows}


@dataclass(frozen=True)
class LossRow:
    iteration: int
    bqml_loss: Optional[float]
    recsys_loss: Optional[float]
    bqml_eval_loss: Optional[float]
    recsys_eval_loss: Optional[float]


@dataclass(frozen=True)
class TrainingComparison:
    """ML.TRAINING_INFO's last training run of each side, by iteration."""

    rows: Tuple[LossRow, ...]

    def iterations(self) -> IdCounts:
        """Iteration rows with a loss on each side and on both."""
        return IdCounts(sum(r.bqml_loss is not None for r in self.rows),
                        sum(r.recsys_loss is not None for r in self.rows),
                        sum(r.bqml_loss is not None and r.recsys_loss is not None
                            for r in self.rows), None, None)

    def last_loss(self, side: str) -> Optional[float]:
        """The loss of the side's last iteration."""
        losses = [getattr(r, f"{side}_loss") for r in self.rows]
        return next((x for x in reversed(losses) if x is not None), None)

    @property
    def has_eval_loss(self) -> bool:
        return any(r.bqml_eval_loss is not None or r.recsys_eval_loss is not None
                   for r in self.rows)


@dataclass(frozen=True)
class DensityGrid:
    """Counts of (x, y) points: ``counts[i][j]`` in x bin i, y bin j of ``bins`` equal bins
    over the common range [low, high] of both coordinates."""

    counts: Tuple[Tuple[int, ...], ...]
    low: float
    high: float


@dataclass(frozen=True)
class PredictionAgreement:
    """The ``compare_predictions`` row: agreement on the pairs both sides predicted."""

    pairs: IdCounts  # (user, item) pairs
    rmse: Optional[float]
    mean_abs_difference: Optional[float]
    mean_difference: Optional[float]  # recsys - bqml
    pearson: Optional[float]
    spearman: Optional[float]

    def row(self) -> tuple:
        p = self.pairs
        return (p.bqml, p.recsys, p.compared, p.bqml_only, p.recsys_only, self.rmse,
                self.mean_abs_difference, self.mean_difference, self.pearson, self.spearman)


@dataclass(frozen=True)
class PredictionComparison:
    """ML.RECOMMEND of both sides on the same (user, item) pairs."""

    agreement: PredictionAgreement
    repeated: Mapping[str, int]  # side -> repeated (user, item) rows averaged
    users: IdCounts
    items: IdCounts
    grid: DensityGrid            # bqml (x) against recsys (y) prediction


@dataclass(frozen=True)
class TopkComparison:
    """The two top-k tables over every user of BigQuery ML's (the ``compare_topk_summary``
    row, and the overlap distribution)."""

    k: int
    matched_by: str               # "item" or "title"
    how: str                      # how the lists were matched, for the report
    users: IdCounts               # users of each side's top-k table
    users_compared: int
    mean_overlap_at_k: Optional[float]
    mean_jaccard: Optional[float]
    identical_sets: int
    identical_order: int
    overlaps: Tuple[int, ...]     # users with 0, 1, ..., k items in both lists
    catalogue_size: Optional[int]  # items rated (None: no ratings table)
    distinct_items: Mapping[str, int]
    coverage: Mapping[str, Optional[float]]
    mean_rating_count: Mapping[str, Optional[float]]
    median_rating_count: Mapping[str, Optional[float]]
    ambiguous_titles: Optional[int]  # None: not matched through titles
    unknown_titles: Optional[int]
    has_ratings: bool

    def row(self) -> tuple:
        """The ``compare_topk_summary`` row."""
        per_side = [getattr(self, name)[side] for name in
                    ("distinct_items", "coverage", "mean_rating_count", "median_rating_count")
                    for side in ("bqml", "recsys")]
        return (self.k, self.matched_by, self.users_compared, self.users.bqml_only,
                self.users.recsys_only, self.mean_overlap_at_k, self.mean_jaccard,
                self.identical_sets, self.identical_order, self.catalogue_size, *per_side,
                self.ambiguous_titles, self.unknown_titles)


@dataclass(frozen=True)
class InterceptStats:
    """User or item intercepts of the features both sides have."""

    kind: str                     # "user" or "item"
    compared: int
    rmse: Optional[float]         # of the difference recsys - bqml
    mean_difference: Optional[float]
    pearson: Optional[float]
    ids: IdCounts                 # features of each side
    grid: Optional[DensityGrid]   # None: nothing compared


@dataclass(frozen=True)
class InterceptComparison:
    """ML.WEIGHTS' intercepts (factors are identified only up to a rotation: not compared)."""

    global_bqml: Optional[float]
    global_recsys: Optional[float]
    global_difference: Optional[float]
    factors: Mapping[str, Optional[int]]  # side -> number of factors
    kinds: Tuple[InterceptStats, ...]     # user, item


@dataclass(frozen=True)
class Comparison:
    """Every compared output's result; None: that output was not compared."""

    metrics: Optional[MetricsComparison] = None
    training: Optional[TrainingComparison] = None
    predictions: Optional[PredictionComparison] = None
    topk: Optional[TopkComparison] = None
    intercepts: Optional[InterceptComparison] = None

    def compared(self) -> List[str]:
        """The outputs compared, by their config names."""
        results = (self.metrics, self.training, self.predictions, self.topk, self.intercepts)
        return [name for name, r in zip(COMPARE_OUTPUTS, results) if r is not None]

    def counts(self) -> List[tuple]:
        """The ``compare_counts`` rows: what each side has and what both have."""
        rows = []
        if self.training:
            rows.append(self.training.iterations().row("training iterations"))
        if self.predictions:
            p = self.predictions
            rows += [p.users.row("recommend users"), p.items.row("recommend items"),
                     p.agreement.pairs.row("recommend (user, item) pairs")]
        if self.topk:
            rows.append(self.topk.users.row("top-k users"))
        if self.intercepts:
            rows += [s.ids.row(f"weights {s.kind}s") for s in self.intercepts.kinds]
        return rows

    def figures(self) -> Dict[str, object]:
        """What the verdict judges (``recsys.compare.verdict.judge``)."""
        agreement = self.predictions.agreement if self.predictions else None
        return {"metrics": self.metrics.values() if self.metrics else None,
                "prediction_rmse": agreement.rmse if agreement else None,
                "prediction_correlation": agreement.pearson if agreement else None,
                "mean_overlap_at_k": self.topk.mean_overlap_at_k if self.topk else None}
