"""synthetic (MovieLens-shaped synthetic ratings) and numpy_als (the NumPy ALS floor
pyspark.ml ALS is benchmarked against). No Spark."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
import numpy_als
import synthetic
from numpy_als import RowPlan, fit_als, half_step, objective, rmse
from synthetic import SHAPES, Shape, generate, write_dat, write_parquet

SMALL = Shape(n_ratings=20_000, n_users=400, n_items=900)


@pytest.fixture(scope="module")
def ml1m():
    return generate(SHAPES["ml-1m"], seed=0)


def check_shape(data, shape):
    """Exact counts, ids 1..n all present, distinct pairs, minimum activity, value ranges."""
    u, i, r, t = (data[c] for c in ("user_id", "item_id", "rating", "timestamp"))
    assert [len(a) for a in (u, i, r, t)] == [shape.n_ratings] * 4
    assert (u.dtype, i.dtype, r.dtype, t.dtype) == (np.int64, np.int64, np.int8, np.int64)
    assert np.array_equal(np.unique(u), np.arange(1, shape.n_users + 1))
    assert np.array_equal(np.unique(i), np.arange(1, shape.n_items + 1))
    assert len(np.unique(u * (shape.n_items + 1) + i)) == shape.n_ratings
    assert np.bincount(u)[1:].min() >= shape.min_user_ratings
    assert set(np.unique(r).tolist()) <= {1, 2, 3, 4, 5}
    assert synthetic.T_START <= t.min() and t.max() <= synthetic.T_END
    assert np.all(np.diff(u) >= 0)  # grouped by user, as ratings.dat


def test_presets_have_movielens_sizes():
    assert SHAPES["ml-1m"] == Shape(n_ratings=1_000_209, n_users=6_040, n_items=3_706)
    assert SHAPES["ml-25m"] == Shape(n_ratings=25_000_095, n_users=162_541, n_items=59_047)


@pytest.mark.parametrize("shape", [
    SMALL,
    Shape(n_ratings=1_250, n_users=50, n_items=25),  # the complete matrix
    Shape(n_ratings=1_200, n_users=50, n_items=25),  # nearly complete: exact sampling fallback
    Shape(n_ratings=12, n_users=3, n_items=4, min_user_ratings=2),
], ids=["small", "complete", "dense", "tiny"])
def test_small_shapes_are_exact(shape):
    check_shape(generate(shape, seed=5), shape)


def test_ml1m_preset_is_exact_and_movielens_like(ml1m):
    check_shape(ml1m, SHAPES["ml-1m"])
    r = ml1m["rating"].astype(float)
    assert 3.50 < r.mean() < 3.66 and 1.0 < r.std() < 1.2  # ML-1M: 3.58, 1.12
    assert np.bincount(ml1m["rating"])[1:].argmax() + 1 == 4  # 4 stars is the mode, as in ML-1M
    item_counts = np.sort(np.bincount(ml1m["item_id"])[1:])[::-1]
    assert item_counts[:len(item_counts) // 10].sum() > 0.40 * len(r)  # long tail of items
    assert item_counts[len(item_counts) // 2:].sum() < 0.10 * len(r)
    user_counts = np.bincount(ml1m["user_id"])[1:]
    assert np.median(user_counts) < 0.8 * user_counts.mean()  # skewed activity
    assert user_counts.max() > 10 * np.median(user_counts)


@pytest.mark.parametrize("text", ["ml-2m", "1000,20", "1000,20,x", "100,10,50"])
def test_bad_shapes_are_refused(text):
    with pytest.raises(ValueError):
        synthetic.parse_shape(text)


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a, b, c = generate(SMALL, seed=1), generate(SMALL, seed=1), generate(SMALL, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in synthetic.COLUMNS)
    assert not np.array_equal(a["item_id"], c["item_id"])
    assert not np.array_equal(a["rating"], c["rating"])
    for name, writer in (("dat", write_dat), ("parquet", write_parquet)):
        writer(str(tmp_path / f"a.{name}"), a)
        writer(str(tmp_path / f"b.{name}"), b)
        assert (tmp_path / f"a.{name}").read_bytes() == (tmp_path / f"b.{name}").read_bytes()


def test_dat_file_parses_back_line_by_line(tmp_path):
    data = generate(SMALL, seed=3)
    path = tmp_path / "ratings.dat"
    write_dat(str(path), data)
    rows = []
    with open(path, "rb") as f:
        for line in f:
            assert line.endswith(b"\n")
            u, i, r, t = line.decode("ascii")[:-1].split("::")
            assert all(s.isdigit() and (s == "0" or not s.startswith("0")) for s in (u, i, r, t))
            rows.append((int(u), int(i), int(r), int(t)))
    assert rows == list(zip(*(data[c].tolist() for c in synthetic.COLUMNS)))


def test_format_dat_chunks_concatenate():
    data = generate(Shape(n_ratings=500, n_users=20, n_items=40), seed=0)
    whole = synthetic.format_dat(data)
    assert synthetic.format_dat(data, 0, 123) + synthetic.format_dat(data, 123) == whole


def test_parquet_schema_and_values(tmp_path):
    data = generate(SMALL, seed=4)
    path = tmp_path / "ratings.parquet"
    write_parquet(str(path), data)
    table = pq.read_table(path)
    assert table.schema == pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                                      ("rating", pa.float64()), ("timestamp", pa.int64())])
    for column in synthetic.COLUMNS:
        assert np.array_equal(table[column].to_numpy(), data[column])


def test_cli_writes_and_summarises(tmp_path, capsys):
    assert synthetic.main(["--shape", "2000,50,200", "--out", str(tmp_path / "out"),
                           "--format", "parquet", "--seed", "7"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"wrote {tmp_path / 'out' / 'ratings.parquet'}: "
                                               "2,000 ratings, 50 users, 200 items")
    assert pq.read_table(tmp_path / "out" / "ratings.parquet").num_rows == 2000


@pytest.mark.parametrize("args", [["--shape", "ml-2m"], ["--shape", "ml-1m", "--format", "csv"],
                                  ["--shape", "10,5,3"], ["--shape", "ml-1m", "--seed", "x"]])
def test_cli_bad_arguments_fail_with_one_line(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exc:
        synthetic.main(args + ["--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recsys synthetic: error: ")
    assert not list(tmp_path.iterdir())


def test_cli_runs_as_a_script(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "synthetic.py"),
                           "--shape", "ml-3m", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == ("recsys synthetic: error: unknown shape 'ml-3m' "
                           "(choose ml-1m, ml-25m or RATINGS,USERS,ITEMS)\n")


# --- numpy_als ---------------------------------------------------------------------------------

def random_ratings(n_users=60, n_items=45, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[0] = True  # a heavy user
    mask[-1] = False  # a user without ratings
    mask[:, -1] = False  # an item without ratings
    u, i = np.nonzero(mask)
    return u, i, rng.integers(1, 6, len(u)).astype(float)


def naive_half_step(rows, cols, values, fixed, n_rows, reg_param):
    """Each row's normal equations, built and solved one row at a time."""
    out = np.zeros((n_rows, fixed.shape[1]))
    for row in range(n_rows):
        mine = rows == row
        if mine.any():
            f = fixed[cols[mine]]
            a = f.T @ f + reg_param * mine.sum() * np.eye(fixed.shape[1])
            out[row] = np.linalg.solve(a, f.T @ values[mine])
    return out


@pytest.mark.parametrize("gemm_cells", [numpy_als.GEMM_CELLS, 1])  # 1: every row cut into tiles
@pytest.mark.parametrize("chunk_cells", [numpy_als.CHUNK_CELLS, 16])
def test_half_step_solves_each_users_normal_equations(monkeypatch, gemm_cells, chunk_cells):
    monkeypatch.setattr(numpy_als, "GEMM_CELLS", gemm_cells)
    u, i, r = random_ratings()
    items = numpy_als.initial_factors(45, 5, np.random.default_rng(1))
    got = RowPlan(u, i, r, 60, 45, chunk_cells=chunk_cells).solve(items, 0.3)
    assert np.allclose(got, naive_half_step(u, i, r, items, 60, 0.3), rtol=1e-9, atol=1e-12)
    for user in (0, 7, 33):  # the normal equations themselves hold
        f = items[i[u == user]]
        lhs = (f.T @ f + 0.3 * len(f) * np.eye(5)) @ got[user]
        assert np.allclose(lhs, f.T @ r[u == user], atol=1e-10)
    assert not got[-1].any()  # no ratings: zero factors
    assert np.allclose(half_step(i, u, r, got, n_rows=45, reg_param=0.3),
                       naive_half_step(i, u, r, got, 45, 0.3))


def test_objective_never_increases():
    data = generate(SMALL, seed=2)
    u, i, r = data["user_id"] - 1, data["item_id"] - 1, data["rating"].astype(float)
    losses = []
    fit_als(u, i, r, n_users=SMALL.n_users, n_items=SMALL.n_items, rank=8, reg_param=0.1,
            max_iter=8, seed=3,
            callback=lambda it, uf, itf: losses.append(objective(u, i, r, uf, itf, 0.1)))
    assert len(losses) == 8
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.9 * losses[0]


def test_recovers_a_planted_rank_3_structure():
    rng = np.random.default_rng(11)
    n_users, n_items, noise = 300, 200, 0.1
    x, y = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    observed = rng.random((n_users, n_items)) < 0.4
    u, i = np.nonzero(observed)
    r = np.sum(x[u] * y[i], axis=1) + rng.normal(0, noise, len(u))
    uf, itf = fit_als(u, i, r, n_users=n_users, n_items=n_items, rank=3, reg_param=1e-4,
                      max_iter=25, seed=0)
    assert 0.85 * noise < rmse(u, i, r, uf, itf) < 1.05 * noise  # fits down to the noise
    hu, hi = np.nonzero(~observed)  # and predicts the unobserved pairs' true values
    assert rmse(hu, hi, np.sum(x[hu] * y[hi], axis=1), uf, itf) < 0.5 * noise


def test_same_seed_same_factors_and_index_checks():
    u, i, r = random_ratings()
    kw = dict(n_users=60, n_items=45, rank=4, reg_param=0.1, max_iter=3)
    a, b = fit_als(u, i, r, seed=1, **kw), fit_als(u, i, r, seed=1, **kw)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (60, 4) and a[1].shape == (45, 4)
    with pytest.raises(ValueError, match="dense 0-based"):
        fit_als(u - 1, i, r, seed=1, **kw)
