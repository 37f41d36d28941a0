"""Run the pipeline with one injected task failure (used by tests/test_reliability.py).

    python tests/faulty_run.py CONFIG MARKER [--set key=value ...]

The parsed ratings pass through an identity step whose first task to run creates MARKER and
then raises, once: Spark must retry that task (local[2,2] allows one retry) and the run must
end with the same tables as a clean one. Without --inject nothing fails. Test code only: the
product has no fault-injection hook.
"""

import os
import sys

from recsys.sources import readers
from recsys.runner.cli import run_job
from recsys.runner.pipeline import run_pipeline


def inject_one_failure(marker: str) -> None:
    """Wrap ``readers.read_ratings`` so its first task fails once, leaving ``marker``."""
    original = readers.read_ratings

    def failing_read_ratings(*args, **kwargs):
        parsed = original(*args, **kwargs)

        def identity_failing_once(batches):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                yield from batches
                return
            raise RuntimeError("injected task failure")

        return parsed.mapInPandas(identity_failing_once, parsed.schema)

    readers.read_ratings = failing_read_ratings


if __name__ == "__main__":
    config, marker, *rest = sys.argv[1:]
    if marker != "-":
        inject_one_failure(marker)
    sys.exit(run_job(run_pipeline, ["--config", config, *rest], job="pipeline"))
