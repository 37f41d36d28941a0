"""Independent numpy implementations the Spark code is checked against."""

import numpy as np
import pandas as pd


def random_ratings(rng: np.random.Generator, n: int, max_user: int, max_item: int) -> pd.DataFrame:
    """(user_id, item_id, rating) of ``n`` draws of users 1..max_user-1 and items
    1..max_item-1, each pair once in (user, item) order, ratings 1..5; ``rng`` goes on from there."""
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, max_user, n),
                                                      rng.integers(1, max_item, n))})
    out = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    out["rating"] = rng.integers(1, 6, len(out)).astype(float)
    return out


def regression_metrics(label, pred):
    """ML.EVALUATE's explicit metrics, straight from their formulas."""
    label, pred = np.asarray(label, dtype=float), np.asarray(pred, dtype=float)
    err = label - pred
    return {
        "mean_absolute_error": np.mean(np.abs(err)),
        "mean_squared_error": np.mean(err ** 2),
        "mean_squared_log_error": np.mean((np.log1p(label) - np.log1p(pred)) ** 2),
        "median_absolute_error": np.median(np.abs(err)),
        "r2_score": 1 - np.sum(err ** 2) / (len(label) * np.var(label)),
        "explained_variance": 1 - np.var(err) / np.var(label),
    }


# --- BigQuery ML's explicit objective, one row at a time ----------------------------------------

MASK64 = (1 << 64) - 1


def spark_xxhash64_long_int(value: int, seed: int) -> int:
    """Spark SQL's ``xxhash64(<bigint value>, <int seed>)`` (signed), from the reference XXH64:
    Spark hashes a BIGINT as its 8 little-endian bytes with seed 42, then an INT as its 4 bytes
    seeded with the hash so far."""
    import xxhash

    first = xxhash.xxh64_intdigest(int(value).to_bytes(8, "little", signed=True), seed=42)
    second = xxhash.xxh64_intdigest(int(seed).to_bytes(4, "little", signed=True), seed=first)
    return second - (1 << 64) if second >= 1 << 63 else second


def documented_start(hash_value: int, rank: int, scale: float = 0.1) -> np.ndarray:
    """The starting factors recsys documents: SplitMix64 seeded with the id's hash, two outputs
    per component, Box-Muller (plain Python integers, one value at a time)."""
    state = hash_value & MASK64
    outputs = []
    for _ in range(2 * rank):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        outputs.append(z ^ (z >> 31))
    u = [((o >> 11) + 0.5) / 2.0 ** 53 for o in outputs]
    return np.array([scale * np.sqrt(-2 * np.log(u[2 * j])) * np.cos(2 * np.pi * u[2 * j + 1])
                     for j in range(rank)])


def bqml_explicit_als(users, items, ratings, *, rank, l2_reg, intercept_l2_reg, iterations, seed,
                      eval_rows=None, start_users=None):
    """Alternating exact minimisation of sum (r - mu - b_u - b_i - x_u.y_i)^2 + l2_reg (|X|^2 +
    |Y|^2) + intercept_l2_reg (|b_u|^2 + |b_i|^2): items first, then users, each row's
    (rank + 1)-unknown ridge problem solved with np.linalg.solve. ``start_users`` ({id: (x,
    b)}) replaces the documented start of those users (a warm start). Returns a list with, per
    iteration, dict(users={id: (x, b)}, items={id: (y, b)}, loss, eval_loss)."""
    users, items = np.asarray(users), np.asarray(items)
    ratings = np.asarray(ratings, dtype=float)
    mu = ratings.mean()
    x = {u: documented_start(spark_xxhash64_long_int(u, seed), rank) for u in np.unique(users)}
    bu = {u: 0.0 for u in x}
    for u, (factors, intercept) in (start_users or {}).items():
        if u in x:
            x[u], bu[u] = np.asarray(factors, dtype=float), float(intercept)
    y, bi = {}, {}
    ridge = np.diag([l2_reg] * rank + [intercept_l2_reg])
    history = []

    def solve(own, other, own_ids, fixed, fixed_b):
        out, out_b = {}, {}
        for key in np.unique(own):
            rows = np.flatnonzero(own == key)
            design = np.array([np.append(fixed[other[j]], 1.0) for j in rows])
            target = np.array([ratings[j] - mu - fixed_b[other[j]] for j in rows])
            z = np.linalg.solve(design.T @ design + ridge, design.T @ target)
            out[key], out_b[key] = z[:rank], z[rank]
        return out, out_b

    def predict(u, i):
        value = mu + bu.get(u, 0.0) + bi.get(i, 0.0)
        if u in x and i in y:
            value += x[u] @ y[i]
        return value

    for _ in range(iterations):
        y, bi = solve(items, users, None, x, bu)
        x, bu = solve(users, items, None, y, bi)
        loss = np.mean([(r - predict(u, i)) ** 2 for u, i, r in zip(users, items, ratings)])
        eval_loss = None
        if eval_rows is not None:
            eval_loss = np.mean([(r - predict(u, i)) ** 2 for u, i, r in eval_rows])
        history.append({"users": {u: (x[u].copy(), bu[u]) for u in x},
                        "items": {i: (y[i].copy(), bi[i]) for i in y},
                        "loss": loss, "eval_loss": eval_loss, "mu": mu})
    return history


def wals_dense(users, items, ratings, *, rank, l2_reg, alpha, iterations, seed, eval_rows=None,
               start_users=None):
    """BigQuery ML's implicit objective sum over EVERY (user, item) pair of c (p - x_u.y_i)^2 +
    l2_reg (|X|^2 + |Y|^2), p = 1 where rated, c = 1 + alpha * r there and 1 elsewhere, solved
    on the dense matrices (no Gram trick), items first; ``start_users`` ({id: x}) replaces the
    documented start of those users. Per iteration: dict(users, items, loss = the data term
    over all pairs / (n_users * n_items), eval_loss = mean c (1 - s)^2 over ``eval_rows`` (s = 0
    for an unknown side))."""
    uniq_u, ui = np.unique(np.asarray(users), return_inverse=True)
    uniq_i, ii = np.unique(np.asarray(items), return_inverse=True)
    pref = np.zeros((len(uniq_u), len(uniq_i)))
    conf = np.ones_like(pref)
    pref[ui, ii] = 1.0
    conf[ui, ii] = 1.0 + alpha * np.asarray(ratings, dtype=float)
    x = np.array([documented_start(spark_xxhash64_long_int(u, seed), rank) for u in uniq_u])
    for k, u in enumerate(uniq_u):
        if u in (start_users or {}):
            x[k] = start_users[u]
    y = np.zeros((len(uniq_i), rank))
    history = []
    for _ in range(iterations):
        for j in range(len(uniq_i)):
            c = conf[:, j]
            y[j] = np.linalg.solve((x * c[:, None]).T @ x + l2_reg * np.eye(rank),
                                   x.T @ (c * pref[:, j]))
        for k in range(len(uniq_u)):
            c = conf[k]
            x[k] = np.linalg.solve((y * c[:, None]).T @ y + l2_reg * np.eye(rank),
                                   y.T @ (c * pref[k]))
        scores = x @ y.T
        loss = np.sum(conf * (pref - scores) ** 2) / pref.size
        eval_loss = None
        if eval_rows is not None:
            u_pos = {u: n for n, u in enumerate(uniq_u)}
            i_pos = {i: n for n, i in enumerate(uniq_i)}
            errs = [(1 + alpha * r) * (1 - (x[u_pos[u]] @ y[i_pos[i]]
                                            if u in u_pos and i in i_pos else 0.0)) ** 2
                    for u, i, r in eval_rows]
            eval_loss = float(np.mean(errs))
        history.append({"users": dict(zip(uniq_u, x.copy())), "items": dict(zip(uniq_i, y.copy())),
                        "loss": loss, "eval_loss": eval_loss})
    return history


def spark_xxhash64(*parts) -> int:
    """Spark SQL's ``xxhash64`` of several columns (signed): each (value, width) part, a BIGINT
    (width 8) or an INT (width 4), hashed as its little-endian bytes seeded with the hash of the
    parts before it (42 for the first)."""
    import xxhash

    state = 42
    for value, width in parts:
        state = xxhash.xxh64_intdigest(int(value).to_bytes(width, "little", signed=True),
                                       seed=state)
    return state - (1 << 64) if state >= 1 << 63 else state


def random_split_is_eval(user: int, item: int, seed: int, fraction: float) -> bool:
    """DATA_SPLIT_METHOD RANDOM as recsys documents it, for BIGINT user and item ids: a row is
    eval when xxhash64(user, item, seed) reduced to [0, 2^53) and divided by 2^53 is below
    ``fraction``."""
    h = spark_xxhash64((user, 8), (item, 8), (seed, 4)) % (1 << 53)
    return h / float(1 << 53) < fraction


def intercept_sweeps(users, items, ratings, *, mu, l2_reg, sweeps):
    """spark_als's intercepts: ``sweeps`` Gauss-Seidel sweeps from zero, each the exact
    minimiser b_i = sum(r - mu - b_u) / (n_i + l2_reg), then b_u likewise (NumPy). Returns
    (users {id: b_u}, items {id: b_i})."""
    uniq_u, ui = np.unique(np.asarray(users), return_inverse=True)
    uniq_i, ii = np.unique(np.asarray(items), return_inverse=True)
    r = np.asarray(ratings, dtype=float)
    bu, bi = np.zeros(len(uniq_u)), np.zeros(len(uniq_i))
    for _ in range(sweeps):
        bi = np.bincount(ii, r - mu - bu[ui], len(uniq_i)) / (np.bincount(ii, None, len(uniq_i))
                                                              + l2_reg)
        bu = np.bincount(ui, r - mu - bi[ii], len(uniq_u)) / (np.bincount(ui, None, len(uniq_u))
                                                              + l2_reg)
    return dict(zip(uniq_u.tolist(), bu)), dict(zip(uniq_i.tolist(), bi))


# spark_als's intercepts: 5 Gauss-Seidel sweeps (recsys.model.INTERCEPT_SWEEPS, written out here
# so that the references do not take the number from the code under test).
SPARK_ALS_INTERCEPT_SWEEPS = 5


def spark_als_reference(spark, frame, *, rank, reg_param, iterations, seed, l2_reg):
    """spark_als's model after ``iterations`` ALS iterations, built without recsys: intercepts
    by NumPy sweeps (``intercept_sweeps``), the residuals indexed by ascending id, pyspark.ml ALS
    fitted on them directly (2 blocks, as on local[2]). pyspark.ml ALS's random start cannot be
    written down in NumPy, so the library itself is the reference for the factors. Returns
    ``predict(user, item)``: mu + b_u + b_i + x_u . y_i, an unknown side contributing nothing."""
    from pyspark.ml.recommendation import ALS

    users, items = frame.user_id.to_numpy(), frame.item_id.to_numpy()
    r = frame.rating.to_numpy(dtype=float)
    mu = r.mean()
    b_u, b_i = intercept_sweeps(users, items, r, mu=mu, l2_reg=l2_reg,
                                sweeps=SPARK_ALS_INTERCEPT_SWEEPS)
    u_idx = {u: n for n, u in enumerate(sorted(set(users.tolist())))}
    i_idx = {i: n for n, i in enumerate(sorted(set(items.tolist())))}
    rows = [(u_idx[u], i_idx[i], float(v - mu - b_u[u] - b_i[i]))
            for u, i, v in zip(users.tolist(), items.tolist(), r)]
    residuals = spark.createDataFrame(rows, "_u int, _i int, _target double")
    als = ALS(rank=rank, maxIter=iterations, regParam=reg_param, implicitPrefs=False,
              userCol="_u", itemCol="_i", ratingCol="_target", nonnegative=False, seed=seed)
    fitted = als.setNumUserBlocks(2).setNumItemBlocks(2).fit(residuals)
    x = {row.id: np.array(row.features) for row in fitted.userFactors.collect()}
    y = {row.id: np.array(row.features) for row in fitted.itemFactors.collect()}

    def predict(user, item):
        value = mu + b_u.get(user, 0.0) + b_i.get(item, 0.0)
        if user in u_idx and item in i_idx:
            value += x[u_idx[user]] @ y[i_idx[item]]
        return value
    return predict
