"""Shared fixtures: one local SparkSession for the whole test run, built by the project factory."""

import hashlib
import os
import shutil
import sys
import types

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "ml-latest-small")
# Benchmark-only code (the synthetic data generator, the NumPy ALS floor) lives in benchmarks/.
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


# Every JVM the suite starts (its own session, and the jobs it runs as processes, by either
# launcher) runs only the JIT's first tier: the suite runs thousands of small, different queries
# on cold JVMs, where the optimising compiler's work is not paid back. Measured: the optimising
# compiler took 52 of a quick-start JVM's 129 CPU-seconds; test_ids + test_ingest 108 s against
# 123 s; a 14-user pipeline process 57 s against 66 s (docs/performance.md). spark-submit adds
# SPARK_SUBMIT_OPTS to the driver JVM's command line, and prints nothing about it.
# Nor do those JVMs verify the bytecode of Spark's and the connector's jars (JDK 17's diagnostic
# -XX:-BytecodeVerificationRemote; the JVM never verifies its boot classes). A 14-user pipeline
# process, alternating, 2026-12-06 09:29-09:32, load about 1.8: 42.4 and 40.3 s with C1 alone,
# 38.5 and 38.4 s without verification. The serial collector as well gave 36.4 s on such
# processes but the default tier 268.1 s against 255.7 s, so it is not used
# (docs/development.md). Tests only: a production JVM keeps every check.
# Nor do they start the Spark UI (a system property spark.* is a SparkConf default; the suite's
# own session sets it too): 36.2 and 36.2 s against 37.7 and 38.2 s, alternating, 10:10-10:13.
_SUITE_JVM_OPTS = ("-XX:TieredStopAtLevel=1 -XX:+UnlockDiagnosticVMOptions "
                   "-XX:-BytecodeVerificationRemote -Dspark.ui.enabled=false")


def _java_release() -> tuple:
    """(java home, JAVA_VERSION) of the JVM pyspark launches (JAVA_HOME, else `java` on PATH),
    read from its ``release`` file without starting it; ("", "") when unknown."""
    java = (os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME")
            else shutil.which("java"))
    home = os.path.dirname(os.path.dirname(os.path.realpath(java))) if java else ""
    try:
        with open(os.path.join(home, "release")) as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
        return home, fields.get("JAVA_VERSION", "").strip('"')
    except OSError:
        return "", ""


def _class_archive() -> str:
    """Where this checkout keeps the suite's JVM class archive for this pyspark and this JVM,
    or "" where the JVM has no dynamic archives (before JDK 13) or the path holds a space, and
    in a venv without pyspark (the Airflow DAG's test)."""
    try:
        import pyspark
    except ImportError:
        return ""
    home, version = _java_release()
    major = version.split(".")[0].split("-")[0]  # "17.0.15", "21", "22-ea"
    if not major.isdigit() or int(major) < 13:
        return ""
    spark_home = os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    try:  # a reinstall rewrites the jars (the archive checks their times), and so the folder
        jars = os.stat(os.path.join(spark_home, "jars")).st_mtime_ns
    except OSError:
        jars = 0
    key = hashlib.sha1(f"{pyspark.__version__}|{spark_home}|{jars}|{home}|{version}".encode())
    path = os.path.join(REPO, ".jvm-class-archive", key.hexdigest()[:16] + ".jsa")
    return "" if any(c.isspace() for c in path) else path  # SPARK_SUBMIT_OPTS splits at spaces


# Class data sharing: the suite's JVMs map Spark's classes, already parsed and linked, from
# one archive (JDK 13+ dynamic CDS) instead of loading them from the jars. The suite's own
# session writes it when it ends (``spark`` below), so the first run of a checkout makes it and
# every JVM after uses it: in CI the default tier makes it and the marked tiers use it. Writing
# it costs that run about 25 s; each JVM after saves about 5 s (docs/development.md). The
# archive records Spark's jars: a JVM with other jars or another JDK ignores it, and says
# nothing (-Xlog:cds=off: its warning would go to the job's stdout). RECSYS_TESTS_JVM_ARCHIVE=off
# neither uses nor writes one (.ci/run's last step, after which no JVM would use it).
JVM_CLASS_ARCHIVE = ("" if os.environ.get("RECSYS_TESTS_JVM_ARCHIVE") == "off"
                     else _class_archive())
if JVM_CLASS_ARCHIVE and os.path.exists(JVM_CLASS_ARCHIVE):
    _SUITE_JVM_OPTS += (f" -XX:SharedArchiveFile={JVM_CLASS_ARCHIVE}"
                        " -Xlog:cds=off,cds+dynamic=off")
os.environ.setdefault("SPARK_SUBMIT_OPTS", _SUITE_JVM_OPTS)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from recsys.config import SparkConfig
    from recsys.session import build_session

    conf = types.MappingProxyType({
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "2g",
    })
    # No archive yet (the checkout's first run): this JVM, which runs every stage of recsys,
    # writes one when it exits. Only this JVM: the suite's own options stay as they are.
    dump = (JVM_CLASS_ARCHIVE and not os.path.exists(JVM_CLASS_ARCHIVE)
            and os.environ.get("SPARK_SUBMIT_OPTS") == _SUITE_JVM_OPTS)
    partial = f"{JVM_CLASS_ARCHIVE}.{os.getpid()}.part"
    if dump:
        os.makedirs(os.path.dirname(JVM_CLASS_ARCHIVE), exist_ok=True)
        os.environ["SPARK_SUBMIT_OPTS"] = f"{_SUITE_JVM_OPTS} -XX:ArchiveClassesAtExit={partial}"
    try:
        session = build_session(SparkConfig(
            master="local[2]", app_name="recsys-tests", log_level="ERROR", conf=conf,
            checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints"))))
    finally:
        if dump:
            os.environ["SPARK_SUBMIT_OPTS"] = _SUITE_JVM_OPTS
    yield session
    session.stop()
    if dump:
        _exit_and_keep_the_archive(partial)


def _exit_and_keep_the_archive(partial: str) -> None:
    """End the suite's JVM normally (the JVM writes its class archive only then; pyspark would
    kill it) and move the archive into place whole, so that no JVM maps a half-written one."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    try:
        gateway.jvm.java.lang.System.exit(0)
    except Exception:  # the call never returns: the JVM is gone
        pass
    try:
        gateway.proc.wait(timeout=300)
    except Exception:
        return
    if os.path.exists(partial):
        os.replace(partial, JVM_CLASS_ARCHIVE)


# --- the default tier -----------------------------------------------------------------------------
# Tests of default-tier files that run in the `slow` tier instead, by their measured durations
# (`pytest --durations=25`, docs/development.md): the heavier repeats (more parameters, more
# iterations, larger inputs, a second fixture run of the same stage). Every module of recsys/
# keeps tests in the default tier, and a parametrized test its first parameters. An entry is a
# node id, a test name (all its parameters) or a file; one that matches no collected test of a
# collected file fails the run.
SLOW_IN_DEFAULT_FILES = (
    "test_bqml_solver.py::test_join_path_gives_the_broadcast_paths_factors",
    "test_bqml_solver.py::test_every_iteration_matches_the_oracle",
    "test_bqml_solver.py::test_more_blocks_than_rows_of_a_side",
    "test_bqml_solver.py::test_implicit_iterations_match_the_dense_oracle",
    "test_compare.py::test_csv_exports_and_int_vs_string_ids",
    "test_compare.py::test_recommend_with_an_input_table_sharded_csv",
    "test_compare.py::test_tutorial_top5_as_json_and_parquet_reads_the_same",
    "test_compare.py::test_every_plot_renders_in_headless_chromium",  # starts Chromium
    "test_ids.py::test_same_mapping_whatever_the_partitioning_and_row_order",
    "test_ids.py::test_to_index_then_from_index_gives_back_the_original_rows[driver-values1-string]",
    "test_ids.py::test_to_index_then_from_index_gives_back_the_original_rows[driver-values2-int]",
    "test_ids.py::test_to_index_then_from_index_gives_back_the_original_rows[distributed-values1-string]",
    "test_ids.py::test_to_index_then_from_index_gives_back_the_original_rows[distributed-values2-int]",
    "test_ids.py::test_id_index_encodes_decodes_and_survives_save_and_load[distributed]",
    "test_implicit_metrics.py::test_random_data_matches_oracle[2-None]",
    "test_implicit_metrics.py::test_random_data_matches_oracle[3-1]",
    "test_implicit_metrics.py::test_random_data_matches_oracle[4-5]",
    "test_jobs.py::test_string_ids_through_the_jobs",
    "test_jobs.py::test_minimum_support_and_exclusion_in_the_top_k",
    "test_model.py::test_l2_reg_literal_vs_mapped_on_movielens_sample",
    "test_model.py::test_intercepts_match_the_ridge_solution_on_sparse_data",
    "test_model.py::test_every_iteration_reports_the_real_iterates_and_stops_early",
    "test_model.py::test_early_stop_cannot_apply_to_spark_als_final",
    "test_model.py::test_string_ids_round_trip",
    "test_readers_jvm.py::test_a_first_split_holding_only_the_header_still_counts_its_line",
    "test_review_fixes.py::test_tuning_wals_alpha_zero_is_the_model_alpha",
    "test_split.py::test_seq_ties_and_nulls_go_to_eval[40-0.2]",
    "test_split.py::test_seq_ties_and_nulls_go_to_eval[700-0.1]",
    "test_split.py::test_auto_split_above_50000_takes_exactly_10000_rows",
    "test_split.py::test_random_is_deterministic_across_partitioning_and_row_order",
    "test_tuning.py::test_grid_trials_are_scored_on_their_validation_rows",
    "test_tuning.py::test_run_train_fits_the_final_model_with_the_best_trial",
    "test_tuning.py::test_spark_als_trials_train_with_their_reg_param",
    "test_compare_numbers.py",  # its run_compare fixture; test_compare.py keeps the job's figures
    "test_ids.py::test_index_is_dense_and_follows_value_order[distributed-values1-string-spark_type1]",
    "test_ids.py::test_index_is_dense_and_follows_value_order[distributed-values2-int-spark_type2]",
    "test_ids.py::test_index_is_dense_and_follows_value_order[driver-values2-int-spark_type2]",
    "test_ids.py::test_unknown_ids_get_a_null_index_or_are_dropped[distributed]",
    "test_ids.py::test_integer_ids_join_a_long_index_but_strings_do_not[distributed]",
    "test_ids.py::test_too_many_ids_fail_with_one_line[distributed]",
    "test_ingest.py::test_ingest_reads_the_ratings_file_once[7]",
    "test_model.py::test_early_stop_bigquery_ml",
    "test_ranking.py::test_ranking_metrics_match_the_oracle[10]",
    "test_ranking.py::test_ranking_metrics_equal_pyspark_ranking_evaluator[recallAtK-recall_at_k]",
    "test_ranking.py::test_ranking_metrics_equal_pyspark_ranking_evaluator[ndcgAtK-ndcg_at_k]",
    "test_ranking.py::test_ranking_metrics_equal_pyspark_ranking_evaluator[meanAveragePrecisionAtK-map_at_k]",
    "test_recommend.py::test_blocked_top_k_equals_ranking_all_pairs_on_real_data",
    "test_sharded_sources.py::test_movies_shards_keep_the_first_file_and_parquet_shards_number_rows_per_file",
    "test_split.py::test_seq_ties_and_nulls_go_to_eval[0-0.2]",
    "test_split.py::test_random_fraction_within_binomial_band_and_partitions_input[0.35]",
    "test_split.py::test_auto_split_middle_regime_is_random_twenty_percent[50000]",
    "test_split_isolation.py",  # the split's own tests stay (test_split.py)
    "test_tuning.py::test_no_trial_with_a_score_is_one_line",
    "test_metrics.py::test_median_is_exact_where_only_the_middle_is_collected",
    "test_tuning.py::test_equal_objectives_go_to_the_lowest_trial_id",
    "test_ranking.py::test_recommend_unseen_skips_rated_and_unsupported_items",
    "test_model.py::test_intercepts_recover_known_biases_on_a_complete_matrix",
    "test_recommend.py::test_top_k_with_exclusions_support_and_large_ties_matches_the_oracle",
    "test_sinks.py::test_versioned_model_store_on_a_hadoop_filesystem",
    "test_review_fixes.py::test_source_url_with_a_generic_format_resolves_files_inside_the_archive",
    "test_ingest.py::test_each_bad_line_is_rejected_with_its_reason[LF]",
    "test_readers_jvm.py::test_many_splits_number_lines_like_one",
    "test_layout.py::test_every_benchmark_script_imports_and_prints_its_help",  # a Python each
    "test_ci_tiers.py",  # runs pytest itself, twice
    "test_jobs.py::test_recommend_input_of_users_and_of_pairs",
    "test_ids.py::test_custom_index_column_name[distributed]",
    "test_ids.py::test_from_index_puts_the_id_where_the_index_was[distributed]",
    "test_ids.py::test_existing_output_columns_are_refused[distributed]",
    "test_warm_start.py::test_explicit_warm_start_is_the_oracle_started_from_the_saved_users",
    "test_warm_start.py::test_train_job_warm_starts_from_a_model_of_its_sink",
    "test_foldin.py::test_recommend_job_ranks_folded_in_users_like_training_users",
    "test_foldin.py::test_bad_fold_in_input_fails_with_one_line",
)


# Files that run longest, longest first (measured: `pytest -m "e2e or slow" --durations=0`,
# docs/development.md). The marked tiers run on two pytest-xdist workers, one file per worker at
# a time (`-n 2 --dist loadfile`), which take files in collection order: started last, the
# longest file would run alone at the end (longest processing time first).
LONGEST_FILES_FIRST = ("test_runs.py", "test_distributed.py", "test_reliability.py",
                       "test_model.py", "test_tuning.py")


def _file_rank(item) -> int:
    name = os.path.basename(str(item.path))
    return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(
        LONGEST_FILES_FIRST)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection reads the markers
def pytest_collection_modifyitems(config, items):
    items.sort(key=_file_rank)  # stable: each file keeps its own order
    unmatched = set(SLOW_IN_DEFAULT_FILES)
    for item in items:
        name = item.nodeid.split("tests/", 1)[-1]
        for entry in SLOW_IN_DEFAULT_FILES:
            if name == entry or name.startswith(entry + "[") or name.startswith(entry + "::"):
                item.add_marker(pytest.mark.slow)
                unmatched.discard(entry)
    collected = {item.nodeid.split("tests/", 1)[-1].split("::")[0] for item in items}
    stale = sorted(e for e in unmatched if e.split("::")[0] in collected)
    if stale and not any("::" in arg for arg in config.args):  # not a run of chosen tests
        raise pytest.UsageError(f"tests/conftest.py SLOW_IN_DEFAULT_FILES names no test: {stale}")


@pytest.fixture
def fixture_path():
    return lambda *parts: os.path.join(FIXTURES, *parts)


# --- one pipeline run shared by the files that compare other runs against it --------------------

@pytest.fixture(scope="session")
def small_source(tmp_path_factory):
    """The shipped sample's first 60 users (real ml-latest lines), plus one bad line (line 8):
    the source of tests/test_reliability.py and tests/test_distributed.py."""
    folder = tmp_path_factory.mktemp("small-src")
    with open(os.path.join(SAMPLE, "ratings.csv")) as fh:
        lines = [line for n, line in enumerate(fh)
                 if n == 0 or int(line.split(",", 1)[0]) <= 60]
    lines.insert(7, "1,abc,4.0,964982703\n")
    (folder / "ratings.csv").write_text("".join(lines))
    return folder


def run_in_process(spark, overrides, config="conf/local.yaml"):
    """``jobs/pipeline.py --config <config> --set <overrides>`` as a call on the suite's
    session: the same stages and tables without a second JVM (the session's own conf applies:
    local[2], 2 partitions). Its report."""
    from recsys.config import load_config
    from recsys.runner.pipeline import run_pipeline

    cwd = os.getcwd()
    os.chdir(REPO)  # conf/local.yaml names the sample by a relative path
    try:
        return run_pipeline(spark, load_config(config, list(overrides)))
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def reference_run(spark, small_source, tmp_path_factory):
    """The pipeline on ``small_source`` with tests/test_reliability.py's ``job_args`` (5
    iterations), run in-process on the suite's session: its warehouse folder and every table
    as read right after it ended. The runs compared with it are separate processes (other
    core counts, a cluster, a failed task), so equal tables also show that neither the process
    nor its Spark conf changes them. Read-only: a test that writes to a warehouse like it (a
    rerun) works on a ``copy_warehouse`` of it."""
    from test_reliability import job_args, snapshot

    sink = tmp_path_factory.mktemp("reference-run")
    args = job_args(small_source, sink)
    run_in_process(spark, [value for flag, value in zip(args[2::2], args[3::2])
                           if flag == "--set" and not value.startswith("spark.master=")])
    return sink, snapshot(sink)


def copy_warehouse(src, dst):
    """A copy of a local warehouse folder as a run left it: versions, manifests, views and the
    table links (relative symbolic links, copied as links, so the copy points into itself)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
