"""Run the pipeline job and stop at one boundary until told to go on (tests/test_runs.py).

    python tests/barrier_run.py BOUNDARY --config CONFIG [--set key=value ...] [--wait]

BOUNDARY is where the run stops: after a stage of the pipeline returns (``ingest``, ``train``,
``evaluate``, ``recommend``), or inside the commit (``manifest``: the view of the new run is
written but not its manifest; ``switch``: the manifest is written but ``.current`` not yet
switched). There the script prints ``BARRIER <boundary> <run id>`` on stdout and blocks until a
line arrives on stdin; the test then kills the process group (SIGKILL) or releases it. ``-``
stops nowhere. Test code only: the product has no such hook.
"""

import sys

from recsys.runner import pipeline
from recsys.sinks import runs
from recsys.runner.cli import run_job

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
    elif boundary in COMMIT_STEPS:
        runs.COMMIT_HOOKS.append(
            lambda step, run: barrier(step, run.run_id) if step == boundary else None)
    elif boundary != "-":
        raise SystemExit(f"unknown boundary {boundary!r}")


if __name__ == "__main__":
    boundary, *rest = sys.argv[1:]
    install(boundary)
    sys.exit(run_job(pipeline.run_pipeline, rest, job="pipeline"))
