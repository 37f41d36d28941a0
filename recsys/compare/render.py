"""The compare report: result objects (``results``) and the verdict in; Markdown, SVG plots,
console lines and ``report.html`` out.

The one module that decides what the report says; ``text``, ``svg`` and ``html_page`` only
format numbers, draw plots and turn Markdown into a page. Every function returns text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from recsys.compare import html_page, svg
from recsys.compare.frames import LABELS, SIDES
from recsys.compare.inputs import ComparedInputs
from recsys.compare.results import Comparison, InterceptComparison, MetricsComparison, \
    PredictionComparison, TopkComparison, TrainingComparison
from recsys.compare.text import fmt, md_table
from recsys.compare.verdict import FAIL, PASS, Criterion, Verdict

TITLE = "# recsys against BigQuery ML"
ROTATION = ("Latent factors are identified only up to a rotation (any orthogonal Q turns X, Y "
            "into XQ, YQ with the same predictions), so raw factor weights are not compared; "
            "predictions (above) and intercepts are.")


@dataclass(frozen=True)
class Section:
    """One compared output as report text: its Markdown, its plots, its console lines."""

    markdown: Tuple[str, ...]
    plots: Tuple[Tuple[str, str], ...] = ()  # (file name, SVG)
    console: Tuple[str, ...] = ()


def sections(c: Comparison) -> List[Section]:
    """The sections of every compared output, in the report's order."""
    parts = [(c.metrics, metrics_section), (c.training, training_section),
             (c.predictions, predictions_section), (c.topk, topk_section),
             (c.intercepts, intercepts_section)]
    return [draw(result) for result, draw in parts if result is not None]


def report_files(c: Comparison, v: Verdict, inputs: ComparedInputs, parts: Sequence[Section],
                 *, fail_on_mismatch: bool) -> List[Tuple[str, str]]:
    """(file name, text) of every plot, ``report.md`` and ``report.html``."""
    md = [TITLE, "", *verdict_markdown(v, fail_on_mismatch), *inputs_markdown(inputs, c)]
    counts = c.counts()
    if counts:
        md += ["## What was compared", "",
               *md_table(["what", "BigQuery ML", "recsys", "compared", "BigQuery ML only",
                          "recsys only"], counts), ""]
    md += [line for part in parts for line in part.markdown]
    text = "\n".join(md) + "\n"
    plots = [plot for part in parts for plot in part.plots]
    return [*plots, ("report.md", text), ("report.html", html_page.page(text, dict(plots)))]


def closing_lines(v: Verdict, folder: str, plots: int, dataset_dir: str,
                  tables: Sequence[str]) -> List[str]:
    """The console's last lines: the verdict, where the report and the tables are."""
    return [verdict_line(v),
            f"  report     {os.path.join(folder, 'report.md')} and report.html ({plots} plots)",
            f"  tables in  {dataset_dir}: {', '.join(sorted(tables))}"]


# --- verdict and inputs ------------------------------------------------------------------------

def _result(c: Criterion) -> str:
    return {True: "pass", False: "**FAIL**", None: "not evaluated"}[c.passed]


def verdict_markdown(v: Verdict, fail_on_mismatch: bool) -> List[str]:
    """The report's opening: the verdict, then each criterion with its figure."""
    failed = [c.name for c in v.criteria if c.passed is False]
    missing = [c.name for c in v.criteria if c.passed is None]
    if v.status == PASS:
        say = "the recsys run reproduces BigQuery ML within every tolerance below."
    elif v.status == FAIL:
        say = f"the recsys run does NOT reproduce BigQuery ML: {'; '.join(failed)} out of tolerance."
    else:
        say = ("no criterion failed, but not all could be evaluated (" + "; ".join(missing)
               + " not compared), so reproduction is not shown.")
    gate = ("`compare.fail_on_mismatch` is on: the job exits with code 4 unless the verdict is "
            "PASS." if fail_on_mismatch else
            "(`compare.fail_on_mismatch: true` makes the job exit with code 4 unless PASS.)")
    rows = [(c.name, fmt(c.figure), f"{c.rule} {fmt(c.tolerance)}", _result(c), c.detail)
            for c in v.criteria]
    return [f"**Verdict: {v.status}** — {say}", "",
            *md_table(["criterion", "figure", "tolerance (compare.tolerances)", "result",
                       "note"], rows), "",
            "Tolerances default to the run-to-run spread of BigQuery ML's own objective on the "
            "shipped sample, with margin (`benchmarks/bqml_spread.py`). " + gate, ""]


def verdict_line(v: Verdict) -> str:
    """The verdict as one console line."""
    def result(c: Criterion) -> str:
        return "ok" if c.passed else "FAIL" if c.passed is False else "not evaluated"

    return f"  verdict    {v.status}: " + "; ".join(
        f"{c.name} {fmt(c.figure)} ({c.rule} {fmt(c.tolerance)}) {result(c)}"
        for c in v.criteria)


def inputs_markdown(inputs: ComparedInputs, c: Comparison) -> List[str]:
    """Where each side's tables came from, the id types, and what was left out."""
    rows = [(name, src.get("bqml", "—"), src.get("recsys", "—"))
            for name, src in inputs.sources.items()]
    out = ["## Inputs", "", *md_table(["output", "BigQuery ML", "recsys"], rows), "",
           f"Compared: {', '.join(c.compared())}. Ids are compared as text (INT64 ids as their "
           f"digits), so INT64 on one side matches STRING on the other.", ""]
    notes = list(inputs.notes)
    if c.predictions:
        notes += [f"{LABELS[side]} recommend: {n:,} repeated (user, item) rows averaged"
                  for side, n in c.predictions.repeated.items() if n]
    types = sorted(set(n for n in notes if " is " in n and "`" in n))
    others = [n for n in notes if n not in types]
    if types:
        out += ["Id types: " + "; ".join(types) + ".", ""]
    out += [f"- {n}" for n in dict.fromkeys(others)]
    return out + ([""] if others else [])


# --- one section per compared output -----------------------------------------------------------

def _relative(diff: Optional[float], base: Optional[float]) -> str:
    if diff is None or base in (None, 0):
        return "NULL"
    return f"{100 * diff / abs(base):+.2f}%"


def metrics_section(m: MetricsComparison) -> Section:
    """ML.EVALUATE side by side."""
    table = md_table(["metric", "BigQuery ML", "recsys", "difference (recsys − BigQuery ML)",
                      "relative"], [(x.metric, x.bqml, x.recsys, x.difference,
                                     _relative(x.difference, x.bqml)) for x in m.rows])
    console = tuple(f"  evaluate   {x.metric:<24} bqml {fmt(x.bqml, 6):>10}  "
                    f"recsys {fmt(x.recsys, 6):>10}  diff {fmt(x.difference, 4)}"
                    for x in m.rows)
    return Section(("## ML.EVALUATE", "", *table, ""), (), console)


def training_section(t: TrainingComparison) -> Section:
    """ML.TRAINING_INFO's loss curves: a plot and the table."""
    its = [x.iteration for x in t.rows]
    series = [("BigQuery ML loss", its, [x.bqml_loss for x in t.rows]),
              ("recsys loss", its, [x.recsys_loss for x in t.rows])]
    if t.has_eval_loss:
        series += [("BigQuery ML eval_loss", its, [x.bqml_eval_loss for x in t.rows]),
                   ("recsys eval_loss", its, [x.recsys_eval_loss for x in t.rows])]
    plot = svg.line_chart(series, title="Training loss by iteration",
                          xlabel="iteration (from 0)", ylabel="loss (training MSE)")
    n = t.iterations()
    last = {side: fmt(t.last_loss(side), 6) for side in SIDES}
    table = md_table(["iteration", "BigQuery ML loss", "recsys loss", "BigQuery ML eval_loss",
                      "recsys eval_loss"],
                     [(str(x.iteration), x.bqml_loss, x.recsys_loss, x.bqml_eval_loss,
                       x.recsys_eval_loss) for x in t.rows])
    md = ("## Training loss (ML.TRAINING_INFO)", "",
          f"BigQuery ML: {n.bqml} iteration rows, last loss {last['bqml']}; "
          f"recsys: {n.recsys} iteration rows, last loss {last['recsys']}. "
          "(recsys's `bigquery_ml` solver writes a row per iteration; `spark_als` one row, "
          "the last, unless `model.training_info: every_iteration`.)",
          "", "![training loss](loss.svg)", "", *table, "")
    console = f"  training   last loss bqml {last['bqml']}, recsys {last['recsys']}"
    return Section(md, (("loss.svg", plot),), (console,))


def predictions_section(p: PredictionComparison) -> Section:
    """ML.RECOMMEND on the same pairs: agreement statistics and a density plot."""
    a, pairs = p.agreement, p.agreement.pairs
    plot = svg.density(p.grid.counts, (p.grid.low, p.grid.high), (p.grid.low, p.grid.high),
                       title="Predicted rating on the same (user, item) pairs",
                       xlabel="BigQuery ML predicted_rating", ylabel="recsys predicted_rating")
    md = ("## Predictions on the same (user, item) pairs (ML.RECOMMEND)", "",
          f"{fmt(pairs.compared)} pairs predicted by both sides ({fmt(pairs.bqml_only)} only "
          f"by BigQuery ML, {fmt(pairs.recsys_only)} only by recsys).", "",
          *md_table(["statistic", "value"], [
              ("RMSE between the two predictions", a.rmse),
              ("mean absolute difference", a.mean_abs_difference),
              ("mean difference (recsys − BigQuery ML)", a.mean_difference),
              ("Pearson correlation", a.pearson),
              ("Spearman correlation (average ranks for ties)", a.spearman),
          ]), "", "![predictions](predictions.svg)", "")
    console = (f"  recommend  {pairs.compared:,} pairs compared: RMSE {fmt(a.rmse)}, Pearson "
               f"{fmt(a.pearson)}, Spearman {fmt(a.spearman)}")
    return Section(md, (("predictions.svg", plot),), (console,))


def topk_section(t: TopkComparison) -> Section:
    """The top-k lists: overlap statistics, per-side popularity, the overlap distribution."""
    k = t.k
    rows = [("users compared (every user of BigQuery ML's top-k table)", t.users_compared),
            (f"mean overlap@{k} (items in both lists / {k}; no recsys list counts 0)",
             t.mean_overlap_at_k),
            ("mean Jaccard (|A ∩ B| / |A ∪ B|)", t.mean_jaccard),
            ("users with identical lists (same items)", t.identical_sets),
            ("users with identical lists (same items, same order)", t.identical_order)]
    if t.ambiguous_titles is not None:
        rows += [("titles shared by several movies (ambiguous)", t.ambiguous_titles),
                 ("titles not in the movies table", t.unknown_titles)]
    side_rows = [(label, *(getattr(t, name)[side] for side in SIDES)) for label, name in (
        ("distinct items recommended", "distinct_items"),
        (f"catalogue coverage (of {fmt(t.catalogue_size)} items)", "coverage"),
        ("mean rating count of recommended items", "mean_rating_count"),
        ("median rating count of recommended items", "median_rating_count"))]
    source = "the ratings table" if t.has_ratings else "no ratings table (not computed)"
    md = ("## Top-k recommendations", "",
          f"Lists matched by {t.how}; the first {k} of each list; over every user of "
          f"BigQuery ML's top-k table ({fmt(t.users.bqml_only)} of them have no recsys list, "
          f"{fmt(t.users.recsys_only)} recsys users are not in BigQuery ML's table). Rating "
          f"counts from {source}.",
          "", *md_table(["statistic", "value"], rows), "",
          "![overlap distribution](overlap.svg)", "",
          *md_table(["per side", "BigQuery ML", "recsys"], side_rows), "",
          *md_table([f"overlap (of {k})", "users"],
                    [(str(i), n) for i, n in enumerate(t.overlaps)]), "")
    plot = svg.bar_chart([str(i) for i in range(k + 1)], list(t.overlaps),
                         title=f"Items shared by the two top-{k} lists, per user",
                         xlabel=f"overlap (items in both top-{k} lists)", ylabel="users")
    console = (f"  top {k}      {t.users_compared:,} users compared by {t.matched_by}: mean "
               f"overlap@{k} {fmt(t.mean_overlap_at_k)}, mean Jaccard {fmt(t.mean_jaccard)}, "
               f"{t.identical_sets:,} identical sets")
    return Section(md, (("overlap.svg", plot),), (console,))


def intercepts_section(i: InterceptComparison) -> Section:
    """ML.WEIGHTS' intercepts: the global one, the factor counts, user and item agreement."""
    b, r = i.factors["bqml"], i.factors["recsys"]
    rows = [("global intercept", i.global_bqml, i.global_recsys, i.global_difference),
            ("number of factors", b, r, None if b is None or r is None else r - b)]
    stats = [(f"{s.kind} intercepts", s.compared, s.rmse, s.mean_difference, s.pearson)
             for s in i.kinds]
    plots = tuple((f"intercepts_{s.kind}.svg", svg.density(
        s.grid.counts, (s.grid.low, s.grid.high), (s.grid.low, s.grid.high),
        title=f"{s.kind.capitalize()} intercepts", xlabel="BigQuery ML intercept",
        ylabel="recsys intercept")) for s in i.kinds if s.grid is not None)
    md = ("## Intercepts (ML.WEIGHTS)", "", ROTATION, "",
          *md_table(["", "BigQuery ML", "recsys", "difference (recsys − BigQuery ML)"], rows),
          "", *md_table(["", "compared", "RMSE of the difference", "mean difference",
                         "Pearson"], stats), "",
          *(f"![{s.kind} intercepts](intercepts_{s.kind}.svg)" for s in i.kinds
            if s.grid is not None), "")
    console = (f"  weights    global intercept bqml {fmt(i.global_bqml, 6)}, recsys "
               f"{fmt(i.global_recsys, 6)}; " + "; ".join(
                   f"{s.kind} intercepts RMSE {fmt(s.rmse)} over {s.compared:,}"
                   for s in i.kinds))
    return Section(md, plots, (console,))
