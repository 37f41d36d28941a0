"""The README's quick start (``jobs/pipeline.py --config conf/local.yaml``, the whole shipped
sample; here its pipeline called in-process) gives the same figures on both Spark lines recsys
supports: CI runs this file on pyspark 4.0 and again on pyspark 3.5 (.ci/run), against the same
numbers.

The first iteration's loss is recomputed by the row-at-a-time NumPy oracle of BigQuery ML's
objective (tests/oracles.py; about 25 s on a busy 2-core machine). The other figures were
recorded from a pyspark 4.0.1 run and are reproduced by pyspark 3.5.9 (run of 2026-12-01, on
local[2]; the tables do not depend on the core count, tests/test_distributed.py): the whole
run's oracle would take minutes.
"""

import os

import pandas as pd
import pyspark
import pytest

from conftest import SAMPLE, run_in_process
from oracles import bqml_explicit_als

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

# ML.TRAINING_INFO: EARLY_STOP ends the run after 7 of MAX_ITERATIONS 20.
LOSSES = [0.5943094799222345, 0.4019929176362242, 0.3495338713608566, 0.33179599583057473,
          0.323664841117444, 0.31919909658601353, 0.3164277174405306]
EVALUATE = {"mean_absolute_error": 0.41960703967289426, "mean_squared_error": 0.31642771744053055,
            "mean_squared_log_error": 0.02414725346275827,
            "median_absolute_error": 0.31876175798836104, "r2_score": 0.717346156307941,
            "explained_variance": 0.7173461762042899}
TOP5 = {1: [318, 50, 858, 2542, 58559], 2: [589, 969, 293, 858, 260],
        3: [318, 2542, 296, 6016, 858]}
TOP1_SCORE = {1: 3.682929086770619, 2: 4.309530769648711, 3: 4.464307503244016}
GLOBAL_INTERCEPT = 3.543608255669773


@pytest.fixture(scope="module")
def quick_start(spark, tmp_path_factory):
    """The quick start's config run in-process on the suite's session (the command itself runs
    in tests/test_launch.py and tests/test_pipeline.py): its printed summary and tables."""
    sink = tmp_path_factory.mktemp("quick-start")
    report = run_in_process(spark, [f"sink.path={sink}"])
    wh = sink / "bqml_tutorial"
    return report.render(), {name: pd.read_parquet(wh / name)
                             for name in ("evaluate", "training_info", "recommend_top5",
                                          "weights")}


def test_quick_start_figures_are_the_same_on_this_spark(quick_start):
    summary, tables = quick_start
    print("pyspark", pyspark.__version__)
    assert tables["training_info"]["loss"].tolist() == pytest.approx(LOSSES, rel=1e-9, abs=0)
    evaluate = tables["evaluate"].iloc[0].to_dict()
    assert evaluate == pytest.approx(EVALUATE, rel=1e-9, abs=0)
    assert f"mean_squared_error       {EVALUATE['mean_squared_error']:.5f}" in summary
    top = tables["recommend_top5"].set_index("user_id")
    for user, items in TOP5.items():
        entries = top.loc[user, "recommendations"]
        assert [e["item_id"] for e in entries] == items
        assert entries[0]["predicted_rating"] == pytest.approx(TOP1_SCORE[user], rel=1e-9)
    weights = tables["weights"]
    glob = weights[weights.feature == "global__intercept__"].intercept
    assert glob.tolist() == pytest.approx([GLOBAL_INTERCEPT], rel=1e-12)


def test_quick_start_first_iteration_is_the_oracles():
    ratings = pd.read_csv(os.path.join(SAMPLE, "ratings.csv"))
    first = bqml_explicit_als(ratings.userId.to_numpy(), ratings.movieId.to_numpy(),
                              ratings.rating.to_numpy(float), rank=34, l2_reg=9.83,
                              intercept_l2_reg=9.83, iterations=1, seed=42)[0]
    assert first["loss"] == pytest.approx(LOSSES[0], rel=1e-9, abs=0)
    assert first["mu"] == pytest.approx(GLOBAL_INTERCEPT, rel=1e-12)
