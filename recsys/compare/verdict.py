"""The compare job's verdict: does the recsys run reproduce BigQuery ML within the tolerances the
config states (``compare.tolerances``)? A pure stage: figures in, a ``Verdict`` out (rendered
by ``recsys.compare.render``).

Criteria (each with its figure; a criterion whose input was not compared is "not evaluated"):

- ML.EVALUATE: the largest relative difference |recsys - bqml| / |bqml| over the metrics both
  sides report, at most ``metric_relative_difference``;
- ML.RECOMMEND: RMSE between the two predictions on the same (user, item) pairs, at most
  ``prediction_rmse``; their Pearson correlation, at least ``prediction_correlation``;
- top-k: mean overlap@k over every user of BigQuery ML's top-k table, at least
  ``mean_overlap_at_k``.

The verdict is PASS when every criterion passes, FAIL when one fails, INCOMPLETE when none fails
but one could not be evaluated (a migration gate should not pass on missing evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from recsys.config import CompareTolerances

PASS, FAIL, INCOMPLETE = "PASS", "FAIL", "INCOMPLETE"


@dataclass(frozen=True)
class Criterion:
    """One figure against its tolerance; ``passed`` None: not evaluated (input not compared)."""

    name: str
    figure: Optional[float]
    rule: str          # "<=": figure at most tolerance; ">=": at least
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> Optional[bool]:
        if self.figure is None:
            return None
        return self.figure <= self.tolerance if self.rule == "<=" else self.figure >= self.tolerance


@dataclass(frozen=True)
class Verdict:
    """PASS, FAIL or INCOMPLETE over every criterion."""

    criteria: Tuple[Criterion, ...]

    @property
    def status(self) -> str:
        results = [c.passed for c in self.criteria]
        if any(r is False for r in results):
            return FAIL
        return PASS if results and all(r is True for r in results) else INCOMPLETE


def worst_relative(metrics: Dict[str, Tuple[Optional[float], Optional[float]]]
                   ) -> Tuple[Optional[float], str]:
    """The largest |recsys - bqml| / |bqml| over metrics both sides have (bqml non-zero)."""
    rel = {name: abs(r - b) / abs(b) for name, (b, r) in metrics.items()
           if b is not None and r is not None and b != 0}
    if not rel:
        return None, ""
    name = max(rel, key=rel.get)
    return rel[name], name


def judge(tol: CompareTolerances, figures: Dict[str, object], k: int) -> Verdict:
    """The verdict of the figures the compare stages measured (missing: not compared)."""
    rel, worst = worst_relative(figures.get("metrics") or {})
    return Verdict((
        Criterion("ML.EVALUATE largest relative metric difference", rel, "<=",
                  tol.metric_relative_difference, f"worst: {worst}" if worst else ""),
        Criterion("ML.RECOMMEND prediction RMSE between the sides",
                  figures.get("prediction_rmse"), "<=", tol.prediction_rmse),
        Criterion("ML.RECOMMEND prediction Pearson correlation",
                  figures.get("prediction_correlation"), ">=", tol.prediction_correlation),
        Criterion(f"top-{k} mean overlap@{k}", figures.get("mean_overlap_at_k"), ">=",
                  tol.mean_overlap_at_k),
    ))


def rows(v: Verdict) -> List[tuple]:
    """The ``compare_verdict`` table's rows."""
    return [(c.name, c.figure, c.rule, float(c.tolerance), c.passed) for c in v.criteria]
