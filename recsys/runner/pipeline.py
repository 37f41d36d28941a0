"""The jobs: ingest, train, evaluate, recommend, and all four in one application (pipeline).

Each ``run_*`` function takes a SparkSession and a ``Config``, reads and writes tables through the
configured sink, and returns a ``Report`` for the job runner to print.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait as wait_all
from typing import Dict, List, Optional

from pyspark.sql import DataFrame, SparkSession

from recsys.sources import ingest as ingest_stage
from recsys import model as model_stage
from recsys.model import fold_in as fold_in_stage
from recsys.model import recommend as recommend_stage
from recsys import schemas
from recsys.model import split as split_stage
from recsys.evaluation import tuning as tuning_stage
from recsys.model import weights as weights_stage
from recsys.config import Config
from recsys.job_report import JobReport, StageTimer, progress as _progress
from recsys.evaluation import model_metrics_for, prediction_metrics
from recsys.errors import ConfigError, InputError
from recsys.sinks import job_unit, make_sink, resolve_model, resolve_table

SAMPLE_USERS = 3

# Table writes that run in a thread beside the stages after them (``run_pipeline``): Spark runs
# jobs from several threads at once, and those small single-task jobs would otherwise leave a
# core idle. Its thread starts with the first write.
_BESIDE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-beside")


# The job report and its stage timer are the neutral module's (compare reports the same way).
Report = JobReport


def _write(report: Report, sink, name: str, df: DataFrame) -> str:
    """``sink.write`` timed into ``report.details['write.<name>']``. Spark is lazy, so the time
    includes computing whatever of ``df`` was not computed before (all of it for the pairs)."""
    start = time.perf_counter()
    location = sink.write(name, df)
    report.details[f"write.{name}"] = time.perf_counter() - start
    return location


def _as_run(job: str):
    """Run the job as one unit of the warehouse (``recsys.sinks.runs``), or inside the unit already
    open (the pipeline's, or the job runner's)."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(spark, cfg, *args, **kwargs):
            with job_unit(cfg, job):
                return fn(spark, cfg, *args, **kwargs)
        return run
    return wrap


# --- ingest ------------------------------------------------------------------------------------

@_as_run("ingest")
def run_ingest(spark: SparkSession, cfg: Config, report: Optional[Report] = None) -> Report:
    """Read the source, write ratings/movies and their rejects; fail over the reject threshold."""
    report = report or Report("ingest")
    sink = make_sink(cfg)
    with StageTimer(report, "ingest"):
        result = ingest_stage.ingest(spark, cfg.source, cfg.ingest, _table_reader(spark, cfg))
        # Rejects are written first so that a run failing on the threshold still shows them.
        report.tables[schemas.RATINGS_REJECTED] = _write(
            report, sink, schemas.RATINGS_REJECTED, result.ratings_rejected)
        if result.movies_rejected is not None:
            report.tables[schemas.MOVIES_REJECTED] = _write(
                report, sink, schemas.MOVIES_REJECTED, result.movies_rejected)
        for stats, what, table in ((result.ratings_stats, "ratings", schemas.RATINGS_REJECTED),
                                   (result.movies_stats, "movies", schemas.MOVIES_REJECTED)):
            if stats is None:
                continue
            try:
                ingest_stage.check_rejects(stats, cfg.ingest.max_reject_fraction, what)
            except InputError as exc:
                # The failed run publishes nothing: say where its rejects are kept.
                raise InputError(f"{exc}; rejected rows in {report.tables[table]}") from None
        report.tables[schemas.RATINGS] = _write(report, sink, schemas.RATINGS, result.ratings)
        if result.movies is not None:
            report.tables[schemas.MOVIES] = _write(report, sink, schemas.MOVIES, result.movies)
    stats = result.ratings_stats
    report.add(f"  ingest     {stats.total_rows - stats.rejected_rows:,} ratings kept, "
               f"{stats.rejected_rows:,} rejected ({stats.source_file})")
    if result.movies_stats is not None:
        mstats = result.movies_stats
        report.add(f"             {mstats.total_rows - mstats.rejected_rows:,} movies kept, "
                   f"{mstats.rejected_rows:,} rejected ({mstats.source_file})")
    return report


def _table_reader(spark: SparkSession, cfg: Config):
    """Reader of BigQuery tables and queries for a ``bigquery`` source, else None."""
    if cfg.source.format != "bigquery":
        return None
    from recsys.bigquery import BigQueryConnection

    connection = BigQueryConnection(cfg.bigquery)
    return lambda ref: connection.read(spark, ref, cfg.sink.dataset)


# --- train -------------------------------------------------------------------------------------

@_as_run("train")
def run_train(spark: SparkSession, cfg: Config, report: Optional[Report] = None,
              beside: Optional[List[Future]] = None) -> Report:
    """CREATE MODEL: split, fit, record training-time metrics, save the model and write
    ``training_info`` (ML.TRAINING_INFO), ``weights`` (ML.WEIGHTS) and ``embeddings``
    (ML.GENERATE_EMBEDDING): here, or, given a ``beside`` list, in a thread whose future is
    appended to it, which the caller waits for."""
    report = report or Report("train")
    sink = make_sink(cfg)
    m = cfg.model
    ratings = resolve_table(sink, spark, m.input)
    with StageTimer(report, "train"):
        try:
            parts = split_stage.split_ratings(
                ratings, method=m.data_split_method, eval_fraction=m.data_split_eval_fraction,
                split_col=m.data_split_col, seed=m.seed, col_user=m.user_col, col_item=m.item_col)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        if cfg.tuning.num_trials > 0:
            try:
                m, trials = tuning_stage.tune(spark, parts.train, m, cfg.tuning)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            report.tables[schemas.TRIALS] = _write(report, sink, schemas.TRIALS,
                                                   trials.coalesce(1))
            report.add(f"  tuning     {tuning_stage.trial_summary(sink.read(spark, schemas.TRIALS))}")
        warm = (model_stage.load(spark, resolve_model(sink, spark, m.warm_start))
                if m.warm_start else None)
        # Without a split, ML.EVALUATE at training time scores the training ratings: the
        # bigquery_ml fit does it from the predictions it holds (``score_training``), with no
        # pass over the table; otherwise, or where the fit cannot, the table is scored.
        trained = model_stage.fit(parts.train, m, parts.eval,
                                  progress=lambda text: _progress(f"{report.job}: train {text}"),
                                  warm_start=warm, score_training=prediction_metrics)
        scored_on = parts.eval if parts.eval is not None else parts.train
        metrics = trained.training_metrics or model_metrics(trained, scored_on, cfg)
        trained = model_stage.with_training_metrics(trained, metrics)
        sink.save_model(m.name, lambda path: model_stage.save(trained, path))
    # Built here, in the calling thread: the stage's place in the summary is after train's.
    timer = StageTimer(report, "weights", beside=beside is not None)
    if beside is None:
        _write_model_tables(spark, timer, sink, trained)
    else:  # the pipeline goes on to evaluate and recommend meanwhile
        beside.append(_BESIDE.submit(_write_model_tables, spark, timer, sink, trained))
    opts, data = trained.options, trained.data
    # spark_als's "final" mode runs max_iterations in one fit and records one row.
    iterations = (m.max_iterations if opts["solver"] == "spark_als" and m.training_info == "final"
                  else len(trained.training_info))
    report.add(f"  train      {opts['feedback_type']} matrix factorization, solver {opts['solver']}"
               f" ({solver_text(opts)}), {opts['num_factors']} factors, {iterations} "
               f"iterations on {data['n_rows']:,} ratings ({data['n_users']:,} users x "
               f"{data['n_items']:,} items)")
    if parts.eval is not None:
        report.add(f"             split {parts.method}: {parts.eval_fraction:.3g} of the rows held "
                   f"out for eval_loss and ML.EVALUATE ({parts.eval_only_users:,} users and "
                   f"{parts.eval_only_items:,} items appear only there)")
    if warm is not None:
        report.add(f"             warm start: {opts['warm_start_users']:,} of "
                   f"{data['n_users']:,} users from {m.warm_start}")
    last = trained.training_info[-1]
    eval_text = f", eval_loss {last['eval_loss']:.4f}" if last["eval_loss"] is not None else ""
    report.add(f"             training loss {last['loss']:.4f}{eval_text}; "
               f"global intercept {trained.global_intercept:.4f}")
    report.add(f"             model saved to {sink.model_path(m.name)}")
    parts_text = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in trained.timings.items()
                           if name != "total")
    report.add(f"             fit {trained.timings.get('total', 0.0):.1f}s ({parts_text})")
    report.details.update({f"train.{k}": v for k, v in trained.timings.items()})
    report.metrics = metrics
    return report


def _write_model_tables(spark: SparkSession, timer: StageTimer, sink, trained) -> None:
    """``training_info`` (ML.TRAINING_INFO), ``weights`` (ML.WEIGHTS) and ``embeddings``
    (ML.GENERATE_EMBEDDING) of a trained model: the stage ``timer`` times ("weights")."""
    report = timer.report
    with timer:
        report.tables[schemas.TRAINING_INFO] = _write(
            report, sink, schemas.TRAINING_INFO, spark.createDataFrame(
                [tuple(row[f.name] for f in schemas.TRAINING_INFO_SCHEMA.fields)
                 for row in trained.training_info], schemas.TRAINING_INFO_SCHEMA).coalesce(1))
        report.tables[schemas.WEIGHTS] = _write(report, sink, schemas.WEIGHTS,
                                                weights_stage.weights(spark, trained))
        report.tables[schemas.EMBEDDINGS] = _write(report, sink, schemas.EMBEDDINGS,
                                                   weights_stage.embeddings(trained))


def solver_text(options: Dict) -> str:
    """How the solver was set up, for the summary line."""
    if options["solver"] == "bigquery_ml":
        return (f"BigQuery ML's objective, L2_REG {options['l2_reg']:g}, "
                f"{options['num_blocks']} blocks, {options.get('solver_path', '?')} path")
    reg = f"regParam {options['spark_reg_param']:.4g}"
    return (f"pyspark.ml ALS, {reg} from l2_reg {options['l2_reg']:g}"
            if options["reg_param"] is None else f"pyspark.ml ALS, {reg}")


def model_metrics(trained: model_stage.TrainedModel, table: DataFrame,
                  cfg: Config) -> Dict[str, Optional[float]]:
    """ML.EVALUATE's metrics of ``trained`` on ``table`` (explicit or implicit set)."""
    return model_metrics_for(trained, table, cfg.model.rating_col)


def _load_model(spark: SparkSession, sink, cfg: Config) -> model_stage.TrainedModel:
    return model_stage.load(spark, sink.model_location(spark, cfg.model.name))


# --- evaluate ----------------------------------------------------------------------------------

@_as_run("evaluate")
def run_evaluate(spark: SparkSession, cfg: Config, report: Optional[Report] = None,
                 trained: Optional[model_stage.TrainedModel] = None) -> Report:
    """ML.EVALUATE: metrics on ``evaluate.input``, or the training-time metrics without one."""
    report = report or Report("evaluate")
    sink = make_sink(cfg)
    trained = trained or _load_model(spark, sink, cfg)
    with StageTimer(report, "evaluate"):
        table = resolve_table(sink, spark, cfg.evaluate.input)
        if table is None:
            values = trained.training_metrics
            where = ("the split's evaluation rows" if trained.training_info
                     and trained.training_info[-1]["eval_loss"] is not None
                     else "the training data (in-sample)")
        else:
            values, where = model_metrics(trained, table, cfg), cfg.evaluate.input
        # BigQuery ML's column order (the model's metadata stores the metrics with sorted keys).
        schema = schemas.IMPLICIT_EVALUATE_SCHEMA if trained.implicit else schemas.EVALUATE_SCHEMA
        values = {name: values.get(name) for name in schema.fieldNames()}
        row = spark.createDataFrame([tuple(values.values())], schema)
        report.tables[schemas.EVALUATE] = _write(report, sink, schemas.EVALUATE, row.coalesce(1))
    report.metrics = dict(values)
    report.add(f"  evaluate   on {where}:")
    for name, value in values.items():
        report.add(f"             {name:<24} {'NULL' if value is None else f'{value:.5f}'}")
    return report


# --- recommend ---------------------------------------------------------------------------------

@_as_run("recommend")
def run_recommend(spark: SparkSession, cfg: Config, report: Optional[Report] = None,
                  trained: Optional[model_stage.TrainedModel] = None) -> Report:
    """ML.RECOMMEND into ``recommend`` and the top-k table ``recommend_top5``."""
    report = report or Report("recommend")
    sink = make_sink(cfg)
    trained = trained or _load_model(spark, sink, cfg)
    m, rec = cfg.model, cfg.recommend
    pred_col = recommend_stage.prediction_column(trained, m.rating_col)
    given = resolve_table(sink, spark, rec.input)
    folded = None
    if rec.fold_in is not None:
        with StageTimer(report, "fold_in"):
            folded = fold_in_stage.fold_in(trained, resolve_table(sink, spark, rec.fold_in))
        trained = folded.model
        report.add(f"  fold-in    {folded.n_users:,} new users from {rec.fold_in}: "
                   f"{folded.n_rows:,} ratings solved against the model's items"
                   + (f" ({folded.n_unknown_items:,} rows on items the model does not know "
                      f"left out)" if folded.n_unknown_items else ""))
    with StageTimer(report, "recommend"):
        # A cross of users and items is written by the tasks that score it (TaskTable).
        predictions = recommend_stage.recommend(trained, given, col_rating=m.rating_col,
                                                task_table=rec.write_all_pairs)
        if rec.write_all_pairs:
            report.tables[schemas.RECOMMEND] = _write(report, sink, schemas.RECOMMEND,
                                                      predictions)
            predictions = sink.read(spark, schemas.RECOMMEND)
    with StageTimer(report, "top_k"):
        movies = sink.read(spark, schemas.MOVIES) if sink.exists(schemas.MOVIES) else None
        training = (resolve_table(sink, spark, m.input)
                    if rec.exclude_rated or rec.min_item_ratings > 0 else None)
        exclude = training if rec.exclude_rated else None
        if exclude is not None and folded is not None:
            # A folded-in user's own ratings are that user's rated movies.
            exclude = exclude.select(m.user_col, m.item_col).unionByName(
                folded.ratings.select(m.user_col, m.item_col))
        # Minimum support: items with too few training ratings never reach the top-k.
        supported = (recommend_stage.supported_items(training, rec.min_item_ratings,
                                                     col_item=m.item_col)
                     if rec.min_item_ratings > 0 else None)
        if given is None or given.columns == [m.user_col]:
            # Users x every item: ranked block by block, never as a table of all pairs.
            top = recommend_stage.top_k_for_users(
                trained, k=rec.top_k, users=given, exclude=exclude, items=supported,
                movies=movies, col_rating=m.rating_col)
        else:
            candidates = predictions if supported is None else predictions.join(
                supported, m.item_col)
            top = recommend_stage.top_k(candidates, k=rec.top_k, movies=movies, exclude=exclude,
                                        col_user=m.user_col, col_item=m.item_col,
                                        col_prediction=pred_col)
        report.tables[schemas.RECOMMEND_TOP] = _write(report, sink, schemas.RECOMMEND_TOP, top)
        top = sink.read(spark, schemas.RECOMMEND_TOP)
        sample = top.orderBy(m.user_col).limit(SAMPLE_USERS).collect()
    if rec.write_all_pairs:
        n_pairs = predictions.count()
        report.add(f"  recommend  {n_pairs:,} (user, item) predictions -> {schemas.RECOMMEND}")
    report.add(f"             top {rec.top_k} per user -> {schemas.RECOMMEND_TOP}"
               f"{' (already-rated movies left out)' if rec.exclude_rated else ''}")
    for row in sample:
        report.add(f"  top {rec.top_k} for user {row[m.user_col]}:")
        for rank, entry in enumerate(row["recommendations"], start=1):
            title = entry["movie_title"] or f"(item {entry[m.item_col]})"
            report.add(f"    {rank}. {_clip(title, 48):<48} {_clip(entry['genre'] or '', 28):<28} "
                       f"{entry[pred_col]:.2f}")
    return report


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- pipeline ----------------------------------------------------------------------------------

@_as_run("pipeline")
def run_pipeline(spark: SparkSession, cfg: Config) -> Report:
    """ingest -> train -> evaluate -> recommend + top-k, in one Spark application."""
    report = Report("pipeline")
    run_ingest(spark, cfg, report)
    # ML.WEIGHTS and its two siblings are written beside evaluate and recommend, which read
    # the saved model, not those tables: ML-1M's stages after train took 11.5 s against 13.2 s
    # (means of four same-run pairs, docs/performance.md).
    beside: List[Future] = []
    try:
        run_train(spark, cfg, report, beside)
        sink = make_sink(cfg)
        trained = _load_model(spark, sink, cfg)
        run_evaluate(spark, cfg, report, trained)
        run_recommend(spark, cfg, report, trained)
    except BaseException:
        wait_all(beside)  # the first failure is the one reported
        raise
    waited = time.perf_counter()
    for write in beside:
        write.result()  # raises what the write raised
    waited = time.perf_counter() - waited
    if waited >= 0.05:  # the time the stages beside took longer, in the job's total
        report.timings["beside_wait"] = waited
    report.add(f"  tables in  {sink.dataset_dir}: {', '.join(sorted(report.tables))}")
    return report

