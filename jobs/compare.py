"""Compare a recsys run against BigQuery ML's own output: metrics, predictions, top k, loss, intercepts.

    spark-submit jobs/compare.py --config conf/compare.yaml [--set dotted.key=value ...]
    python jobs/compare.py --config conf/compare.yaml [--set dotted.key=value ...]
"""

import sys

from recsys.runner.cli import main_for
from recsys.compare import run_compare

if __name__ == "__main__":
    sys.exit(main_for(run_compare, "compare", __doc__.splitlines()[0]))
