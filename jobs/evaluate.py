"""ML.EVALUATE: write the one-row evaluate table for the saved model.

    spark-submit jobs/evaluate.py --config conf/local.yaml [--set dotted.key=value ...]
    python jobs/evaluate.py --config conf/local.yaml [--set dotted.key=value ...]
"""

import sys

from recsys.runner.cli import main_for
from recsys.runner.pipeline import run_evaluate

if __name__ == "__main__":
    sys.exit(main_for(run_evaluate, "evaluate", __doc__.splitlines()[0]))
