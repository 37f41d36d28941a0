"""The README's spark-submit command, as README writes it, from a shell where the venv is not
activated: the job runs, and its model is BigQuery ML's (checked against the NumPy oracle)."""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from oracles import bqml_explicit_als

pytestmark = [pytest.mark.spark, pytest.mark.slow]

RANK, L2_REG, ITERATIONS, SEED = 3, 2.0, 3, 42


def readme_spark_submit_line() -> str:
    """README's spark-submit line for a job (the jobs section's first command)."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    lines = [line for line in text.splitlines() if "spark-submit jobs/<name>.py" in line]
    assert lines, "README shows no spark-submit command for the jobs"
    return lines[0].split(" [--set")[0]


def test_readme_spark_submit_runs_without_an_activated_venv(tmp_path):
    rng = np.random.default_rng(5)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 30, 500),
                                                      rng.integers(1, 25, 500))})
    ratings = pd.DataFrame(pairs, columns=["userId", "movieId"])
    ratings["rating"] = rng.integers(1, 11, len(ratings)) / 2.0
    ratings["timestamp"] = 1_000_000_000
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    pd.DataFrame({"movieId": range(1, 25), "title": [f"Film {i} (2000)" for i in range(1, 25)],
                  "genres": "Drama"}).to_csv(tmp_path / "movies.csv", index=False)

    line = readme_spark_submit_line().replace("<name>", "pipeline").replace(
        "<file>", "local")
    venv_bin = os.path.dirname(sys.executable)
    # A shell as a new user has it: the venv's bin is not on PATH, no PYSPARK_* set.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if os.path.realpath(p) != os.path.realpath(venv_bin))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_HOME",
                                                                     "VIRTUAL_ENV"))}
    env.update(PATH=path, PWD=os.path.dirname(os.path.dirname(venv_bin)))
    sets = [f"source.ratings={tmp_path / 'ratings.csv'}", f"source.movies={tmp_path / 'movies.csv'}",
            f"sink.path={tmp_path / 'warehouse'}", f"model.num_factors={RANK}",
            f"model.l2_reg={L2_REG}", f"model.max_iterations={ITERATIONS}",
            "model.early_stop=false", f"model.seed={SEED}"]
    command = line + "".join(f" --set {shlex.quote(s)}" for s in sets)
    # $PWD in README's line is the repo with the venv in it; the venv may live elsewhere.
    command = re.sub(r"\$PWD/\.venv/bin/python", shlex.quote(sys.executable), command)
    command = command.replace(".venv/bin/spark-submit",
                              shlex.quote(os.path.join(venv_bin, "spark-submit")))
    done = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    oracle = bqml_explicit_als(ratings.userId.to_numpy(), ratings.movieId.to_numpy(),
                               ratings.rating.to_numpy(), rank=RANK, l2_reg=L2_REG,
                               intercept_l2_reg=L2_REG, iterations=ITERATIONS, seed=SEED)
    last = oracle[-1]
    mu = ratings.rating.mean()

    def predict(u, i):
        (x, bu), (y, bi) = last["users"][u], last["items"][i]
        return mu + bu + bi + x @ y

    want = np.array([predict(u, i) for u, i in zip(ratings.userId, ratings.movieId)])
    evaluate = pd.read_parquet(tmp_path / "warehouse" / "bqml_tutorial" / "evaluate")
    assert evaluate["mean_squared_error"].iloc[0] == pytest.approx(
        np.mean((ratings.rating.to_numpy() - want) ** 2), rel=1e-6)
    pairs_table = pd.read_parquet(tmp_path / "warehouse" / "bqml_tutorial" / "recommend")
    got = pairs_table.set_index(["user_id", "item_id"])["predicted_rating"]
    sample = ratings.iloc[::17]
    np.testing.assert_allclose(
        [got[(u, i)] for u, i in zip(sample.userId, sample.movieId)],
        [predict(u, i) for u, i in zip(sample.userId, sample.movieId)], rtol=1e-8)
