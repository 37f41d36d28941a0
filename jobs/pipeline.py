"""The whole tutorial: ingest, train, evaluate, recommend and top 5 in one application.

    spark-submit jobs/pipeline.py --config conf/local.yaml [--set dotted.key=value ...]
    python jobs/pipeline.py --config conf/local.yaml [--set dotted.key=value ...]
"""

import sys

from recsys.runner.cli import main_for
from recsys.runner.pipeline import run_pipeline

if __name__ == "__main__":
    sys.exit(main_for(run_pipeline, "pipeline", __doc__.splitlines()[0]))
