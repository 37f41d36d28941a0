"""Run the pipeline job and stop at one boundary until told to go on (tests/test_runs.py).

    python tests/barrier_run.py BOUNDARY --config CONFIG [--set key=value ...] [--wait]

BOUNDARY is where the run stops: after a stage of the pipeline returns (``ingest``, ``train``,
``evaluate``, ``recommend``), or inside the commit (``manifest``: the view of the new run is
written but not its manifest; ``switch``: the manifest is written but ``.current`` not yet
switched). There the script prints ``BARRIER <boundary> <run id>`` on stdout and blocks until a
line arrives on stdin; the test then kills the process group (SIGKILL) or releases it. ``-``
stops nowhere.

``write:<table>`` stops in the middle of that table's write, inside a Spark task: the task of
the write's first partition, once the write has started (its version folder exists), connects to 127.0.0.1:$RECSYS_BARRIER_PORT (a socket the test listens on), sends the
same ``BARRIER`` line and blocks until it receives a byte (or is killed). Test code only: the
product has no such hook.
"""

import os
import sys

from recsys.runner import pipeline
from recsys.sinks import runs
from recsys.runner.cli import run_job
from recsys.tasks import TaskTable

STAGES = ("ingest", "train", "evaluate", "recommend")
COMMIT_STEPS = ("manifest", "switch")


def barrier(boundary: str, run_id: str) -> None:
    print(f"BARRIER {boundary} {run_id}", flush=True)
    sys.stdin.readline()


def install(boundary: str) -> None:
    if boundary in STAGES:
        name = f"run_{boundary}"
        original = getattr(pipeline, name)

        def stopping(spark, cfg, *args, **kwargs):
            result = original(spark, cfg, *args, **kwargs)
            run = runs.active(pipeline.make_sink(cfg).dataset_dir)
            barrier(boundary, run.run_id)
            return result

        setattr(pipeline, name, stopping)  # run_pipeline looks its stages up at call time
    elif boundary.startswith("write:"):
        table, port = boundary[len("write:"):], int(os.environ["RECSYS_BARRIER_PORT"])
        original = pipeline._write

        def stalling(report, sink, name, df):
            if name == table:
                message = f"BARRIER {boundary} {runs.active(sink.dataset_dir).run_id}"
                stall = _stall_first_partition(port, message)
                if isinstance(df, TaskTable):  # written by its own tasks: stall in them
                    make = df.fn
                    df = TaskTable(df.source, lambda batches: make(stall(batches)), df.schema)
                else:
                    df = df.mapInPandas(stall, df.schema)
            return original(report, sink, name, df)

        pipeline._write = stalling  # the run_* functions look _write up at call time
    elif boundary in COMMIT_STEPS:
        runs.COMMIT_HOOKS.append(
            lambda step, run: barrier(step, run.run_id) if step == boundary else None)
    elif boundary != "-":
        raise SystemExit(f"unknown boundary {boundary!r}")


def _stall_first_partition(port: int, message: str):
    """A task's function of its batches (mapInPandas, or before a TaskTable's own): the task
    of partition 0 reports ``message`` and waits."""
    def stall(batches):
        import socket

        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 0:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall((message + "\n").encode())
                conn.recv(1)
        yield from batches
    return stall


if __name__ == "__main__":
    boundary, *rest = sys.argv[1:]
    install(boundary)
    sys.exit(run_job(pipeline.run_pipeline, rest, job="pipeline"))
