"""The bigquery_ml solver against a NumPy oracle of BigQuery ML's objective (tests/oracles.py):
the documented start, every iteration's factors and losses, the normal equations of both half-
steps, and the broadcast and join paths giving the same factors."""

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import SAMPLE
from oracles import bqml_explicit_als, documented_start, spark_xxhash64_long_int
from recsys.config import ModelConfig
from recsys.model import fit
from recsys.model.normal_equations import initial_factors

pytestmark = pytest.mark.spark

RANK, L2, L2_B = 4, 2.5, 1.5


@pytest.fixture(scope="module")
def sample(spark):
    """Ratings of the sample's users 1..12 (real ml-latest rows), and every 7th row held out."""
    frame = pd.read_csv(f"{SAMPLE}/ratings.csv")
    frame = frame[frame.userId <= 12].reset_index(drop=True)
    frame.columns = ["user_id", "item_id", "rating", "timestamp"]
    held_out = (np.arange(len(frame)) % 7) == 3
    train, test = frame[~held_out], frame[held_out]
    to_df = lambda f: spark.createDataFrame(  # noqa: E731
        f[["user_id", "item_id", "rating"]].astype({"rating": float}))
    return train, test, to_df(train), to_df(test)


def config(**kw):
    base = dict(num_factors=RANK, l2_reg=L2, intercept_l2_reg=L2_B, max_iterations=3,
                early_stop=False, seed=7)
    base.update(kw)
    return ModelConfig(**base)


def states(table, id_col):
    return {row[id_col]: (np.array(row["factors"]), row["intercept"]) for row in table.collect()}


def oracle(train, test, iterations):
    return bqml_explicit_als(train.user_id.to_numpy(), train.item_id.to_numpy(),
                             train.rating.to_numpy(), rank=RANK, l2_reg=L2, intercept_l2_reg=L2_B,
                             iterations=iterations, seed=7,
                             eval_rows=list(zip(test.user_id, test.item_id, test.rating)))


def test_start_is_the_documented_hash_of_the_id(spark):
    ids = [1, 2, 671, 2 ** 40 + 3, -5]
    df = spark.createDataFrame([(i,) for i in ids], "user_id long")
    spark_hashes = [r[0] for r in df.select(F.xxhash64("user_id", F.lit(7))).collect()]
    assert spark_hashes == [spark_xxhash64_long_int(i, 7) for i in ids]
    got = initial_factors(np.array(spark_hashes), 6)
    want = np.array([documented_start(h, 6) for h in spark_hashes])
    assert np.abs(got - want).max() < 1e-15
    assert 0.05 < got.std() < 0.2  # N(0, 0.1^2) components


@pytest.mark.parametrize("iterations", [1, 3])
def test_every_iteration_matches_the_oracle(spark, sample, iterations):
    train, test, train_df, test_df = sample
    model = fit(train_df, config(max_iterations=iterations), test_df)
    want = oracle(train, test, iterations)
    assert [row["iteration"] for row in model.training_info] == list(range(iterations))
    for got_row, want_row in zip(model.training_info, want):
        assert got_row["loss"] == pytest.approx(want_row["loss"], rel=1e-8, abs=0)
        assert got_row["eval_loss"] == pytest.approx(want_row["eval_loss"], rel=1e-8, abs=0)
    assert model.global_intercept == pytest.approx(want[-1]["mu"], abs=1e-12)
    for table, id_col, key in ((model.users, "user_id", "users"), (model.items, "item_id", "items")):
        got = states(table, id_col)
        assert set(got) == set(want[-1][key])  # eval-only ids get no factors
        for key_id, (factors, intercept) in want[-1][key].items():
            assert np.abs(got[key_id][0] - factors).max() < 1e-8
            assert abs(got[key_id][1] - intercept) < 1e-8


def gradient(own, other, ratings, mu, fixed, fixed_b, x, b, lam, lam_b):
    """d/d(x_k, b_k) of the objective for every row k of ``own``, the other side fixed."""
    grads = []
    for key in np.unique(own):
        rows = np.flatnonzero(own == key)
        err = np.array([ratings[j] - mu - fixed_b[other[j]] - b[key] - x[key] @ fixed[other[j]]
                        for j in rows])
        g_x = -2 * sum(e * fixed[other[j]] for e, j in zip(err, rows)) + 2 * lam * x[key]
        g_b = -2 * err.sum() + 2 * lam_b * b[key]
        grads.append(np.append(g_x, g_b))
    return np.array(grads)


def test_half_steps_solve_the_normal_equations(spark, sample):
    """After one iteration: the items minimise the objective given the starting users, and the
    users given those items; the gradient vanishes in every factor and intercept."""
    train, _, train_df, _ = sample
    model = fit(train_df, config(max_iterations=1))
    u, i, r = train.user_id.to_numpy(), train.item_id.to_numpy(), train.rating.to_numpy(float)
    mu = r.mean()
    start = {k: documented_start(spark_xxhash64_long_int(k, 7), RANK) for k in np.unique(u)}
    users, items = states(model.users, "user_id"), states(model.items, "item_id")
    y, b_i = {k: v[0] for k, v in items.items()}, {k: v[1] for k, v in items.items()}
    x, b_u = {k: v[0] for k, v in users.items()}, {k: v[1] for k, v in users.items()}
    item_grad = gradient(i, u, r, mu, start, {k: 0.0 for k in start}, y, b_i, L2, L2_B)
    user_grad = gradient(u, i, r, mu, y, b_i, x, b_u, L2, L2_B)
    assert np.abs(item_grad).max() < 1e-9
    assert np.abs(user_grad).max() < 1e-9
    # Not vacuous: the same gradient at the start is far from zero.
    assert np.abs(gradient(u, i, r, mu, y, b_i, start, {k: 0.0 for k in start}, L2, L2_B)).max() > 1


def test_join_path_gives_the_broadcast_paths_factors(spark, sample):
    """Both paths give the oracle's factors and losses, and the same bits as each other."""
    train, test, train_df, test_df = sample
    broadcast = fit(train_df, config(), test_df)
    joined = fit(train_df, config(broadcast_max_mb=0.0, checkpoint_interval=1), test_df)
    assert broadcast.options["solver_path"] == "broadcast"
    assert joined.options["solver_path"] == "join"
    want = oracle(train, test, 3)
    got = states(joined.users, "user_id")
    assert set(got) == set(want[-1]["users"])
    for key_id, (factors, intercept) in want[-1]["users"].items():
        assert np.abs(got[key_id][0] - factors).max() < 1e-8
        assert abs(got[key_id][1] - intercept) < 1e-8
    assert [r["loss"] for r in joined.training_info] == pytest.approx(
        [w["loss"] for w in want], rel=1e-8, abs=0)
    for side, id_col in (("users", "user_id"), ("items", "item_id")):
        a = states(getattr(broadcast, side), id_col)
        b = states(getattr(joined, side), id_col)
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(a[key][0], b[key][0]) and a[key][1] == b[key][1]
    assert [r["loss"] for r in broadcast.training_info] == [r["loss"] for r in joined.training_info]


@pytest.mark.parametrize("id_type", ["long", "string"])
def test_ids_looked_up_in_the_tasks_give_the_joined_indices_factors(spark, sample, monkeypatch,
                                                                     id_type):
    """Ids numbered on the driver are looked up by the solver's own tasks (no join with the
    indices); ids numbered by the distributed sort (forced by ``LOCAL_INDEX_MAX`` 0) are joined.
    Both give the same bits; with integer ids both are the oracle's factors."""
    from recsys.model import ids as id_module

    train, test, train_df, test_df = sample
    if id_type == "string":  # not in numeric order: "u10" sorts before "u2"
        text_id = F.concat(F.lit("u"), F.col("user_id").cast("string")).alias("user_id")
        train_df, test_df = (df.select(text_id, "item_id", "rating") for df in (train_df, test_df))
    looked_up = fit(train_df, config(), test_df)
    monkeypatch.setattr(id_module, "LOCAL_INDEX_MAX", 0)
    joined = fit(train_df, config(), test_df)
    for side, id_col in (("users", "user_id"), ("items", "item_id")):
        a, b = states(getattr(looked_up, side), id_col), states(getattr(joined, side), id_col)
        assert set(a) == set(b) and len(a) > 0
        for key in a:
            assert np.array_equal(a[key][0], b[key][0]) and a[key][1] == b[key][1]
    assert [r["loss"] for r in looked_up.training_info] == [r["loss"] for r in joined.training_info]
    if id_type == "long":
        want = oracle(train, test, 3)
        got = states(looked_up.users, "user_id")
        for key_id, (factors, intercept) in want[-1]["users"].items():
            assert np.abs(got[key_id][0] - factors).max() < 1e-8
            assert abs(got[key_id][1] - intercept) < 1e-8


def test_more_blocks_than_rows_of_a_side(spark, sample):
    """Blocks left empty (more blocks than users) change nothing but the block layout."""
    train, test, train_df, test_df = sample
    model = fit(train_df, config(num_blocks=16), test_df)
    want = oracle(train, test, 3)
    assert model.training_info[-1]["loss"] == pytest.approx(want[-1]["loss"], rel=1e-8, abs=0)


# --- implicit feedback (WALS) -------------------------------------------------------------------

ALPHA = 0.7


def test_implicit_iterations_match_the_dense_oracle(spark, sample):
    """Every iteration's WALS loss, eval_loss and final factors against the dense oracle, which
    materialises every unrated pair (the solver never does: it adds the Gram matrix)."""
    from oracles import wals_dense

    train, test, train_df, test_df = sample
    model = fit(train_df, config(feedback_type="implicit", wals_alpha=ALPHA, max_iterations=3),
                test_df)
    want = wals_dense(train.user_id.to_numpy(), train.item_id.to_numpy(), train.rating.to_numpy(),
                      rank=RANK, l2_reg=L2, alpha=ALPHA, iterations=3, seed=7,
                      eval_rows=list(zip(test.user_id, test.item_id, test.rating)))
    assert model.global_intercept == 0.0
    for got_row, want_row in zip(model.training_info, want):
        assert got_row["loss"] == pytest.approx(want_row["loss"], rel=1e-8, abs=0)
        assert got_row["eval_loss"] == pytest.approx(want_row["eval_loss"], rel=1e-8, abs=0)
    losses = [row["loss"] for row in model.training_info]
    assert losses == sorted(losses, reverse=True)  # ALS never increases the objective
    for table, id_col, key in ((model.users, "user_id", "users"), (model.items, "item_id", "items")):
        got = states(table, id_col)
        assert set(got) == set(want[-1][key])
        for key_id, factors in want[-1][key].items():
            assert np.abs(got[key_id][0] - factors).max() < 1e-8
            assert got[key_id][1] == 0.0


def test_implicit_half_step_solves_the_weighted_normal_equations(spark, sample):
    """After the user step every user's gradient of the full weighted objective is zero: the
    unrated pairs (c = 1, p = 0) included."""
    train, _, train_df, _ = sample
    model = fit(train_df, config(feedback_type="implicit", wals_alpha=ALPHA, max_iterations=2))
    users, items = states(model.users, "user_id"), states(model.items, "item_id")
    item_ids = sorted(items)
    y = np.array([items[i][0] for i in item_ids])
    rated = {(u, i): r for u, i, r in zip(train.user_id, train.item_id, train.rating)}
    worst = 0.0
    for u, (x, _) in users.items():
        c = np.array([1 + ALPHA * rated[(u, i)] if (u, i) in rated else 1.0 for i in item_ids])
        p = np.array([1.0 if (u, i) in rated else 0.0 for i in item_ids])
        grad = -2 * (y * (c * (p - y @ x))[:, None]).sum(axis=0) + 2 * L2 * x
        worst = max(worst, np.abs(grad).max())
    assert worst < 1e-9


def test_the_rating_pieces_wait_on_disk(spark, sample, monkeypatch):
    """The pieces the blocks are built from are kept on disk, not in the heap the blocks are
    built in (a 2 GB driver ran out of it at ML-25M shape), and the fit still gives the
    oracle's loss."""
    from recsys.model import rating_blocks

    levels = []
    build = rating_blocks._side_blocks

    def recording(pieces, side, num_blocks, center):
        level = pieces.getStorageLevel()
        levels.append((side, level.useDisk, level.useMemory))
        return build(pieces, side, num_blocks, center)

    monkeypatch.setattr(rating_blocks, "_side_blocks", recording)
    train, test, train_df, test_df = sample
    model = fit(train_df, config(max_iterations=1), test_df)
    assert levels == [(0, True, False), (1, True, False)]
    want = oracle(train, test, 1)
    assert model.training_info[0]["loss"] == pytest.approx(want[0]["loss"], rel=1e-8, abs=0)


def test_a_task_cuts_its_ratings_every_piece_rows(spark, sample, monkeypatch):
    """A task cuts what it has gathered every PIECE_ROWS ratings (here 50, in Arrow batches of
    20, a few hundred ratings a task), so its memory does not grow with its partition: the
    blocks, and so the factors, are the same bits as cut once per task, and the oracle's."""
    from recsys.model import rating_blocks

    train, test, train_df, test_df = sample
    whole = fit(train_df, config(), test_df)
    monkeypatch.setattr(rating_blocks, "PIECE_ROWS", 50)
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    old = spark.conf.get(key)
    spark.conf.set(key, "20")
    try:
        small = fit(train_df.repartition(2), config(), test_df)
    finally:
        spark.conf.set(key, old)
    for side, id_col in (("users", "user_id"), ("items", "item_id")):
        a, b = states(getattr(whole, side), id_col), states(getattr(small, side), id_col)
        assert set(a) == set(b)
        for key in a:
            assert np.array_equal(a[key][0], b[key][0]) and a[key][1] == b[key][1]
    want = oracle(train, test, 3)
    assert [r["loss"] for r in small.training_info] == pytest.approx(
        [w["loss"] for w in want], rel=1e-8, abs=0)
