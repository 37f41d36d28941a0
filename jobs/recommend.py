"""ML.RECOMMEND: write the recommend table and the top-k table recommend_top5.

    spark-submit jobs/recommend.py --config conf/local.yaml [--set dotted.key=value ...]
    python jobs/recommend.py --config conf/local.yaml [--set dotted.key=value ...]
"""

import sys

from recsys.runner.cli import main_for
from recsys.runner.pipeline import run_recommend

if __name__ == "__main__":
    sys.exit(main_for(run_recommend, "recommend", __doc__.splitlines()[0]))
