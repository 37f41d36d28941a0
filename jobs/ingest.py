"""Load MovieLens ratings and movies into the ratings, movies and *_rejected tables.

    spark-submit jobs/ingest.py --config conf/local.yaml [--set dotted.key=value ...]
    python jobs/ingest.py --config conf/local.yaml [--set dotted.key=value ...]
"""

import sys

from recsys.runner.cli import main_for
from recsys.runner.pipeline import run_ingest

if __name__ == "__main__":
    sys.exit(main_for(run_ingest, "ingest", __doc__.splitlines()[0]))
