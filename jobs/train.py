"""CREATE MODEL: train ALS matrix factorization on the ratings table and save the model.

    spark-submit jobs/train.py --config conf/local.yaml [--set dotted.key=value ...]
    python jobs/train.py --config conf/local.yaml [--set dotted.key=value ...]
"""

import sys

from recsys.runner.cli import main_for
from recsys.runner.pipeline import run_train

if __name__ == "__main__":
    sys.exit(main_for(run_train, "train", __doc__.splitlines()[0]))
