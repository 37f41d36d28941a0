"""The compare job: read both sides (``inputs``), run each comparison stage, write the
``compare_*`` tables through the sink, judge the verdict and write the report (``render``).
The only module of the package that writes.
"""

from __future__ import annotations

import os
from dataclasses import astuple
from typing import Dict, List, Optional, Sequence, Tuple

from pyspark.sql import DataFrame, SparkSession

from recsys import schemas
from recsys.compare import render, verdict
from recsys.compare.frames import title_index
from recsys.compare.inputs import ComparedInputs, read_inputs
from recsys.compare.results import Comparison, InterceptComparison, MetricsComparison, \
    PredictionComparison, TopkComparison, TrainingComparison
from recsys.compare.stages import compare_intercepts, compare_metrics, compare_recommend, \
    compare_training, small_table, summarize_intercepts
from recsys.compare.topk import compare_topk, match_topk, summarize_topk
from recsys.config import Config
from recsys.errors import EXIT_MISMATCH, InputError
from recsys.job_report import JobReport, StageTimer
from recsys.sinks import make_sink


class _Tables:
    """Writes ``compare_*`` tables through the sink and reads each back, so a later figure is
    computed from the table as written rather than from its plan again."""

    def __init__(self, spark: SparkSession, sink):
        self.spark, self.sink = spark, sink
        self.written: Dict[str, str] = {}  # table -> location

    def write(self, name: str, df: DataFrame) -> DataFrame:
        self.written[name] = self.sink.write(name, df)
        return self.sink.read(self.spark, name)

    def write_rows(self, name: str, rows: Sequence[tuple], schema) -> None:
        self.write(name, small_table(self.spark, rows, schema))


def run_compare(spark: SparkSession, cfg: Config, report: Optional[JobReport] = None
                ) -> JobReport:
    """Read and check both sides, write the ``compare_*`` tables, then
    ``<compare.output>/report.md`` (opening with the verdict) and ``report.html``; with
    ``compare.fail_on_mismatch`` the report's exit code is 4 unless the verdict is PASS."""
    report = report or JobReport("compare")
    c = cfg.compare
    sink = make_sink(cfg)
    # Every input is read and checked (files, columns, the ML.EVALUATE row) before anything is
    # written, so a bad input leaves no partial compare_* tables behind.
    with StageTimer(report, "inputs"):
        inputs = read_inputs(spark, cfg, sink)
    tables = _Tables(spark, sink)
    comparison = _compare(cfg, inputs, tables, report)
    if not comparison.compared():
        raise InputError("compare: nothing to compare: no compare.bqml.* table has a recsys "
                         "counterpart")
    if comparison.counts():
        tables.write_rows(schemas.COMPARE_COUNTS, comparison.counts(),
                          schemas.COMPARE_COUNTS_SCHEMA)
    outcome = verdict.judge(c.tolerances, comparison.figures(), c.top_k)
    tables.write_rows(schemas.COMPARE_VERDICT, verdict.rows(outcome),
                      schemas.COMPARE_VERDICT_SCHEMA)
    parts = render.sections(comparison)
    folder = os.path.abspath(os.path.expanduser(c.output))
    _write_files(folder, render.report_files(comparison, outcome, inputs, parts,
                                             fail_on_mismatch=c.fail_on_mismatch))
    report.tables.update(tables.written)
    for line in [*(line for part in parts for line in part.console),
                 *render.closing_lines(outcome, folder, sum(len(p.plots) for p in parts),
                                       sink.dataset_dir, report.tables)]:
        report.add(line)
    report.metrics.update(_job_metrics(comparison))
    if c.fail_on_mismatch and outcome.status != verdict.PASS:
        report.exit_code = EXIT_MISMATCH
    return report


def _compare(cfg: Config, inputs: ComparedInputs, tables: _Tables, report: JobReport
             ) -> Comparison:
    """Each stage in turn (timed under its name), writing its tables."""
    stages = (("evaluate", _evaluate), ("training_info", _training), ("recommend", _recommend),
              ("top_k", _topk), ("weights", _weights))
    results = []
    for stage, run in stages:
        with StageTimer(report, stage):
            results.append(run(cfg, inputs, tables))
    return Comparison(*results)


def _evaluate(cfg: Config, inputs: ComparedInputs, tables: _Tables
              ) -> Optional[MetricsComparison]:
    pair = inputs.pair("evaluate")
    if pair is None:
        return None
    result = compare_metrics(*pair)
    tables.write_rows(schemas.COMPARE_METRICS, [astuple(r) for r in result.rows],
                      schemas.COMPARE_METRICS_SCHEMA)
    return result


def _training(cfg: Config, inputs: ComparedInputs, tables: _Tables
              ) -> Optional[TrainingComparison]:
    pair = inputs.pair("training_info")
    if pair is None:
        return None
    result = compare_training(*pair)
    tables.write_rows(schemas.COMPARE_TRAINING, [astuple(r) for r in result.rows],
                      schemas.COMPARE_TRAINING_SCHEMA)
    return result


def _recommend(cfg: Config, inputs: ComparedInputs, tables: _Tables
               ) -> Optional[PredictionComparison]:
    pair = inputs.pair("recommend")
    if pair is None:
        return None
    result = compare_recommend(*pair, bins=cfg.compare.bins)
    tables.write_rows(schemas.COMPARE_PREDICTIONS, [result.agreement.row()],
                      schemas.COMPARE_PREDICTIONS_SCHEMA)
    return result


def _topk(cfg: Config, inputs: ComparedInputs, tables: _Tables) -> Optional[TopkComparison]:
    pair = inputs.pair("top5")
    if pair is None:
        return None
    k, movies = cfg.compare.top_k, inputs.movies
    match = match_topk(*pair, title_index(movies) if movies is not None else None, k)
    per_user = tables.write(schemas.COMPARE_TOPK,
                            compare_topk(match.bqml, match.recsys, k, match.by)).cache()
    result = summarize_topk(per_user, match, ratings=inputs.ratings, movies=movies,
                            item_col=cfg.model.item_col, k=k)
    tables.write_rows(schemas.COMPARE_TOPK_SUMMARY, [result.row()],
                      schemas.COMPARE_TOPK_SUMMARY_SCHEMA)
    for frame in (per_user, match.bqml, match.recsys):
        frame.unpersist()
    return result


def _weights(cfg: Config, inputs: ComparedInputs, tables: _Tables
             ) -> Optional[InterceptComparison]:
    pair = inputs.pair("weights")
    if pair is None:
        return None
    bqml, recsys = (frame.cache() for frame in pair)
    table = tables.write(schemas.COMPARE_INTERCEPTS, compare_intercepts(bqml, recsys))
    result = summarize_intercepts(table, bqml, recsys, user_col=cfg.model.user_col,
                                  item_col=cfg.model.item_col, bins=cfg.compare.bins)
    bqml.unpersist(), recsys.unpersist()
    return result


def _job_metrics(c: Comparison) -> Dict[str, Optional[float]]:
    """The job report's metrics: each ML.EVALUATE difference, the mean overlap@k."""
    out = {r.metric: r.difference for r in c.metrics.rows} if c.metrics else {}
    if c.topk:
        out["mean_overlap_at_k"] = c.topk.mean_overlap_at_k
    return out


def _write_files(folder: str, files: List[Tuple[str, str]]) -> None:
    """Write each (name, text) into ``folder`` (created)."""
    os.makedirs(folder, exist_ok=True)
    for name, text in files:
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
