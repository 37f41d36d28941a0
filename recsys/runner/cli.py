"""The job runner shared by every ``jobs/*.py`` entry point.

Parses ``--config``, ``--set dotted.key=value`` and ``--wait``, loads the config (failing fast, before any JVM
starts), builds the session, runs one job function, prints its report, and stops the session.
Failures a user can fix are printed as one line and give a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from recsys.config import Config, load_config
from recsys.errors import RecsysError

EXIT_UNEXPECTED = 1


def parse_args(argv: Sequence[str], job: str, description: str) -> argparse.Namespace:
    """``--config FILE`` and repeatable ``--set dotted.key=value``."""
    parser = argparse.ArgumentParser(prog=f"jobs/{job}.py", description=description)
    parser.add_argument("--config", required=True, help="YAML config file (see conf/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one config key, e.g. model.num_factors=8")
    parser.add_argument("--wait", action="store_true",
                        help="when another run is writing the dataset, wait for it to end "
                             "instead of failing at once")
    return parser.parse_args(list(argv))


def run_job(job_fn: Callable, argv: Sequence[str], *, job: str, description: str = "") -> int:
    """Run ``job_fn(spark, cfg)`` as a command; returns the process exit code."""
    args = parse_args(argv, job, description or job)
    spark = None
    try:
        cfg: Config = load_config(args.config, args.overrides, job=job)
        from recsys.session import build_session  # imported late: config errors need no JVM
        from recsys.sinks import job_unit

        # The run (writer lock, manifest) is opened before the JVM starts: a busy dataset is
        # refused at once, and the job's tables switch together when it returns.
        with job_unit(cfg, job, wait=args.wait):
            spark = build_session(cfg.spark, session_conf(cfg, job))
            report = job_fn(spark, cfg)
        print(report.render(), flush=True)
        return getattr(report, "exit_code", 0)
    except RecsysError as exc:
        print(f"recsys {job}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a batch job
        print(f"recsys {job}: unexpected error: {_one_line(exc)}", file=sys.stderr, flush=True)
        if _debug():
            raise
        return EXIT_UNEXPECTED
    finally:
        if spark is not None:
            spark.stop()


def session_conf(cfg: Config, job: Optional[str] = None) -> dict:
    """Extra Spark settings the config implies (the BigQuery connector when BigQuery is used;
    for the compare job also when a compared table is in BigQuery, and spark-avro when a compared
    file is Avro)."""
    import pyspark

    from recsys.session import connector_conf

    refs = cfg.compare.refs() if job == "compare" else []
    bigquery = (cfg.sink.type == "bigquery" or cfg.source.format == "bigquery"
                or any(ref.is_bigquery() for _, ref in refs))
    conf = connector_conf(cfg.bigquery.connector, pyspark.__version__) if bigquery else {}
    avro = None
    if any(ref.resolved_format() == "avro" for _, ref in refs):
        from recsys.compare import avro_conf

        avro = avro_conf(cfg.compare.avro_package, pyspark.__version__)
    # The builder applies these after the user's spark.conf: a package list of the user's own
    # must be kept, not replaced by the connector's coordinate.
    packages = [p.strip() for entry in (cfg.spark.conf.get("spark.jars.packages"),
                                        conf.get("spark.jars.packages"), avro)
                if entry for p in entry.split(",") if p.strip()]
    if packages:
        conf["spark.jars.packages"] = ",".join(dict.fromkeys(packages))
    return conf


def _one_line(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)  # Py4JJavaError: the JVM's own message
    text = (str(java) if java is not None else str(exc)).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first} (set RECSYS_DEBUG=1 for the traceback)"


def _debug() -> bool:
    import os

    return os.environ.get("RECSYS_DEBUG", "") not in ("", "0")


def main_for(job_fn: Callable, job: str, description: str, argv: Optional[Sequence[str]] = None):
    """Entry-point helper: ``sys.exit(main_for(run_x, "x", "..."))``."""
    return run_job(job_fn, sys.argv[1:] if argv is None else argv, job=job,
                   description=description)
