"""MovieLens-shaped synthetic ratings, for benchmarks at MovieLens 1M and 25M scale.

MovieLens 1M may not be redistributed and MovieLens 25M is large, so benchmarks generate ratings of
the same shape instead: exactly ``n_ratings`` ratings by ``n_users`` users (ids 1..n_users, every
one present, each with at least 20 ratings as in ML-1M) of ``n_items`` items (ids 1..n_items,
every one rated at least once), no (user, item) pair twice, integer stars 1..5 and epoch-second
timestamps between April 2000 and February 2003 (ML-1M's range).

The model behind them:

- user activity is long-tailed: 20 ratings each, plus a share of the rest proportional to a
  lognormal weight (capped at 60 % of the catalogue, ML-1M's heaviest user rated 62 %);
- item popularity is lognormal too; a user's items are drawn without replacement with
  probability proportional to popularity (so a few items hold most ratings), after one rating of
  every item has been handed to a random user;
- a rating is ``round(mu + b_u + b_i + x_u . y_i + noise)`` clipped to 1..5, with rank-10 Gaussian
  factors, Gaussian user and item biases (popular items rate a little higher) and Gaussian noise;
  ``mu`` centres the biases over the drawn pairs so that the mean rating is near ML-1M's 3.58
  (its standard deviation near ML-1M's 1.12).

Everything is vectorised numpy (loops run over rounds and chunks, never over users or ratings)
and deterministic for a seed: the same seed gives equal arrays and byte-identical files.

    python benchmarks/synthetic.py --shape ml-1m --out /tmp/ml1m [--format dat|parquet] [--seed 0]

writes ``/tmp/ml1m/ratings.dat`` (ML-1M's ``user::item::rating::timestamp`` lines, readable with
``source.format: ml-1m``) or ``ratings.parquet`` (``user_id``, ``item_id`` INT64, ``rating``
DOUBLE, ``timestamp`` INT64 epoch seconds, readable with ``source.format: parquet``).

>>> data = generate(Shape(n_ratings=2_000, n_users=50, n_items=200), seed=1)
>>> len(data["rating"]), len(np.unique(data["user_id"])), len(np.unique(data["item_id"]))
(2000, 50, 200)
>>> bool(np.bincount(data["user_id"])[1:].min() >= 20), sorted(set(data["rating"].tolist()))
(True, [1, 2, 3, 4, 5])
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

RANK = 10                 # rank of the planted user and item factors
USER_SIGMA = 1.0          # lognormal sigma of user activity (beyond the minimum)
ITEM_SIGMA = 1.5          # lognormal sigma of item popularity
MAX_USER_SHARE = 0.6      # a user rates at most this share of the catalogue (if the shape allows)
MEAN_SCORE = 3.645        # mean of the latent score; rounded and clipped it gives a mean of ~3.58
USER_BIAS_SD, ITEM_BIAS_SD, FACTOR_SD, NOISE_SD = 0.5, 0.55, 0.6, 0.73  # latent sd ~1.2
POPULARITY_BIAS = 0.5     # correlation of an item's bias with its log popularity
T_START, T_END = 956_703_932, 1_046_454_590  # ML-1M's first and last (2000-04-25, 2003-02-28)
COLUMNS = ("user_id", "item_id", "rating", "timestamp")
CHUNK = 1 << 20           # rows per chunk when scoring and writing


@dataclass(frozen=True)
class Shape:
    """How many ratings, users and items to generate; every user gets ``min_user_ratings``."""

    n_ratings: int
    n_users: int
    n_items: int
    min_user_ratings: int = 20

    def __post_init__(self):
        n, u, i, m = self.n_ratings, self.n_users, self.n_items, self.min_user_ratings
        if min(n, u, i) < 1 or m < 0:
            raise ValueError(f"shape needs positive counts, got {self}")
        if m > i:
            raise ValueError(f"min_user_ratings {m} exceeds n_items {i}")
        if n < u * m:
            raise ValueError(f"{n} ratings cannot give {u} users {m} ratings each")
        if n < i:
            raise ValueError(f"{n} ratings cannot cover {i} items")
        if n > u * i:
            raise ValueError(f"{n} ratings exceed the {u} x {i} distinct (user, item) pairs")


SHAPES = {
    "ml-1m": Shape(n_ratings=1_000_209, n_users=6_040, n_items=3_706),
    "ml-25m": Shape(n_ratings=25_000_095, n_users=162_541, n_items=59_047),
}


def generate(shape: Shape, *, seed: int = 0) -> Dict[str, np.ndarray]:
    """Ratings of ``shape``: ``user_id``, ``item_id`` (int64, from 1), ``rating`` (int8, 1..5),
    ``timestamp`` (int64 epoch seconds), sorted by user, then item."""
    rng = np.random.default_rng(seed)
    user_weight = rng.lognormal(0.0, USER_SIGMA, shape.n_users)
    item_weight = rng.lognormal(0.0, ITEM_SIGMA, shape.n_items)
    degree = _user_degrees(shape, user_weight, rng)
    keys = _draw_pairs(shape, degree, item_weight, rng)
    users = keys // shape.n_items
    keys -= users * shape.n_items  # now the items
    items = keys
    ratings = _ratings(users, items, shape.n_users, item_weight, rng)
    timestamps = _timestamps(users, shape.n_users, rng)
    users += 1
    items += 1
    return {"user_id": users, "item_id": items, "rating": ratings, "timestamp": timestamps}


def _user_degrees(shape: Shape, weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ratings per user: the minimum plus a multinomial share of the rest, capped."""
    cap = min(shape.n_items, max(math.ceil(MAX_USER_SHARE * shape.n_items),
                                 -(-shape.n_ratings // shape.n_users)))
    degree = np.full(shape.n_users, shape.min_user_ratings, dtype=np.int64)
    left = shape.n_ratings - int(degree.sum())
    free = np.ones(shape.n_users, dtype=bool)
    while left > 0:  # each round caps the overflowing users and re-deals their excess
        share = weight * free
        degree += rng.multinomial(left, share / share.sum())
        left = int(np.maximum(degree - cap, 0).sum())
        np.minimum(degree, cap, out=degree)
        free = degree < cap
    return degree


def _draw_pairs(shape: Shape, degree: np.ndarray, item_weight: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Sorted keys ``u * n_items + i`` of distinct (user, item) pairs, ``degree[u]`` for user u,
    every item at least once (0-based).

    First each item goes to one user (users drawn in proportion to their degree). Then rounds of
    draws with replacement (items in proportion to popularity) fill each user's remaining slots
    with new items, over-drawing more each round (a random subset is kept when a user drew more
    new items than it needs); users still short after that (heavy users of a small catalogue)
    get exact weighted sampling without replacement over their unrated items.
    """
    n_users, n_items = shape.n_users, shape.n_items
    first = rng.multivariate_hypergeometric(degree, n_items, method="marginals")
    first_users = rng.permutation(np.repeat(np.arange(n_users, dtype=np.int64), first))
    pieces = [np.sort(first_users * n_items + np.arange(n_items))]  # each sorted, disjoint
    del first_users
    need = degree - first
    cdf = np.cumsum(item_weight)
    cdf /= cdf[-1]
    factor = 1.0
    for _ in range(8):
        if not need.any():
            break
        draws = np.ceil(need * factor).astype(np.int64)
        keys = np.repeat(np.arange(n_users, dtype=np.int64) * n_items, draws)
        keys += np.minimum(np.searchsorted(cdf, rng.random(len(keys)), side="right"), n_items - 1)
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # distinct
        for piece in pieces:
            keys = _drop_known(keys, piece)
        users = keys // n_items
        got = np.bincount(users, minlength=n_users)
        if (got > need).any():  # keep a random subset of need[u] new items per user
            order = np.lexsort((rng.random(len(keys)), users))
            keep = order[_rank_within_groups(users[order]) < need[users[order]]]
            keep.sort()
            keys, users = keys[keep], users[keep]
            got = np.bincount(users, minlength=n_users)
        need -= got
        pieces.append(keys)
        del users
        factor = 2.0 * factor if factor > 1 else 1.25
    if need.any():
        pieces.append(_draw_exact(need, pieces, item_weight, rng))
    keys = np.concatenate(pieces)
    del pieces
    keys.sort(kind="stable")  # a merge of a few sorted runs
    return keys


def _drop_known(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``keys`` minus ``known`` (both sorted, distinct); binary search from the smaller side."""
    if len(keys) == 0 or len(known) == 0:
        return keys
    if len(known) < len(keys):
        pos = np.minimum(np.searchsorted(keys, known), len(keys) - 1)
        mask = np.ones(len(keys), dtype=bool)
        mask[pos[keys[pos] == known]] = False
        return keys[mask]
    pos = np.minimum(np.searchsorted(known, keys), len(known) - 1)
    return keys[known[pos] != keys]


def _rank_within_groups(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of ``groups`` (which is grouped)."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    lengths = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, lengths)


def _draw_exact(need: np.ndarray, pieces, item_weight: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Weighted sampling without replacement (exponential races) of ``need[u]`` unrated items
    for each user still short; users in chunks, each a dense (users x items) block."""
    n_items = len(item_weight)
    short = np.flatnonzero(need)
    taken = np.concatenate([p[np.isin(p // n_items, short)] for p in pieces])
    out = []
    step = max(1, (1 << 24) // n_items)
    for lo in range(0, len(short), step):
        block = short[lo:lo + step]
        race = rng.exponential(size=(len(block), n_items)) / item_weight  # smallest wins
        mine = taken[np.isin(taken // n_items, block)]
        race[np.searchsorted(block, mine // n_items), mine % n_items] = np.inf
        order = np.argsort(race, axis=1, kind="stable")
        pick = np.arange(n_items) < need[block][:, None]
        rows = np.broadcast_to(block[:, None], order.shape)
        out.append(np.sort(rows[pick] * n_items + order[pick]))
    return np.concatenate(out)


def _ratings(users: np.ndarray, items: np.ndarray, n_users: int, item_weight: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """round(mu + b_u + b_i + x_u . y_i + noise), clipped to 1..5, as int8."""
    n_items = len(item_weight)
    log_pop = np.log(item_weight)
    log_pop = (log_pop - log_pop.mean()) / (log_pop.std() or 1.0)
    b_user = rng.normal(0.0, USER_BIAS_SD, n_users)
    b_item = ITEM_BIAS_SD * (POPULARITY_BIAS * log_pop + math.sqrt(1 - POPULARITY_BIAS ** 2)
                             * rng.standard_normal(n_items))
    scale = math.sqrt(FACTOR_SD / math.sqrt(RANK))  # x . y has sd FACTOR_SD
    x = rng.normal(0.0, scale, (n_users, RANK))
    y = rng.normal(0.0, scale, (n_items, RANK))
    mu = MEAN_SCORE - (b_user[users].mean(dtype=np.float64) + b_item[items].mean(dtype=np.float64))
    out = np.empty(len(users), dtype=np.int8)
    for lo in range(0, len(users), CHUNK):
        u, i = users[lo:lo + CHUNK], items[lo:lo + CHUNK]
        score = mu + b_user[u] + b_item[i] + np.einsum("nk,nk->n", x[u], y[i])
        score += rng.normal(0.0, NOISE_SD, len(u))
        out[lo:lo + CHUNK] = np.clip(np.rint(score), 1, 5)
    return out


def _timestamps(users: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """Each user joins at a time skewed towards 2000 and rates within a lognormal span (median a
    day, some users for years), all inside ML-1M's range."""
    span_all = T_END - T_START
    joined = T_START + (span_all * rng.beta(0.7, 3.0, n_users)).astype(np.int64)
    span = np.minimum(rng.lognormal(math.log(86_400), 2.5, n_users), T_END - joined)
    return joined[users] + (span[users] * rng.random(len(users))).astype(np.int64)


_QUAD = np.stack([48 + np.arange(10_000) // 10 ** p % 10 for p in (3, 2, 1, 0)],
                 axis=1).astype(np.uint8)  # ASCII digits of 0000..9999


def _digits(out: np.ndarray, keep: np.ndarray, values: np.ndarray, offset: int, width: int):
    """ASCII digits of ``values`` (non-negative) right-aligned in columns offset..offset+width-1
    of ``out``, four at a time; ``keep`` marks the significant ones (no leading zeros)."""
    x = values.astype(np.int64)
    n_digits = np.ones(len(x), dtype=np.int64)
    for p in range(1, width):
        n_digits += x >= 10 ** p
    end = offset + width
    while end > offset:
        g = min(4, end - offset)
        out[:, end - g:end] = _QUAD[x % 10_000, 4 - g:]
        x //= 10_000
        end -= g
    keep[:, offset:offset + width] = np.arange(width - 1, -1, -1) < n_digits[:, None]


def format_dat(data: Dict[str, np.ndarray], lo: int = 0, hi: Optional[int] = None) -> bytes:
    """Rows lo..hi of ``data`` as ML-1M ``user::item::rating::timestamp`` lines (vectorised).

    >>> format_dat({"user_id": np.array([1, 10]), "item_id": np.array([1193, 7]),
    ...             "rating": np.array([5, 3]), "timestamp": np.array([978300760, 5])})
    b'1::1193::5::978300760\\n10::7::3::5\\n'
    """
    cols = [np.asarray(data[c][lo:hi]) for c in COLUMNS]
    if len(cols[0]) == 0:
        return b""
    if min(int(c.min()) for c in cols) < 0:
        raise ValueError("format_dat writes non-negative integers only")
    widths = [len(str(int(c.max()))) for c in cols]
    line = sum(widths) + 2 * 3 + 1
    out = np.empty((len(cols[0]), line), dtype=np.uint8)
    keep = np.ones(out.shape, dtype=bool)
    offset = 0
    for k, (col, width) in enumerate(zip(cols, widths)):
        _digits(out, keep, col, offset, width)
        offset += width
        if k < 3:
            out[:, offset:offset + 2] = ord(":")
            offset += 2
    out[:, offset] = ord("\n")
    return out[keep].tobytes()


def write_dat(path: str, data: Dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``path`` in ML-1M ``ratings.dat`` format, a chunk at a time."""
    n = len(data["user_id"])
    with open(path, "wb") as f:
        for lo in range(0, n, CHUNK):
            f.write(format_dat(data, lo, lo + CHUNK))


def write_parquet(path: str, data: Dict[str, np.ndarray]) -> None:
    """Write ``data`` to one Parquet file: user_id, item_id INT64, rating DOUBLE, timestamp INT64
    (epoch seconds); one row group per ~1M rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("rating", pa.float64()), ("timestamp", pa.int64())])
    types = (np.int64, np.int64, np.float64, np.int64)
    n = len(data["user_id"])
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, max(n, 1), CHUNK):
            arrays = [pa.array(np.asarray(data[c][lo:lo + CHUNK], dtype=t))
                      for c, t in zip(COLUMNS, types)]
            writer.write_table(pa.table(arrays, schema=schema), row_group_size=CHUNK)


def parse_shape(text: str) -> Shape:
    """A preset name (``ml-1m``, ``ml-25m``) or ``RATINGS,USERS,ITEMS``.

    >>> parse_shape("1000,20,50")
    Shape(n_ratings=1000, n_users=20, n_items=50, min_user_ratings=20)
    """
    if text in SHAPES:
        return SHAPES[text]
    parts = text.replace("_", "").split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"unknown shape {text!r} "
                         f"(choose {', '.join(SHAPES)} or RATINGS,USERS,ITEMS)")
    return Shape(*(int(p) for p in parts))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        self.exit(2, f"recsys synthetic: error: {message}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python benchmarks/synthetic.py --shape ml-1m --out DIR [--format dat|parquet] [--seed N]``."""
    parser = _Parser(prog="python benchmarks/synthetic.py",
                     description="Write MovieLens-shaped synthetic ratings.")
    parser.add_argument("--shape", required=True,
                        help=f"{', '.join(SHAPES)}, or RATINGS,USERS,ITEMS")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("dat", "parquet"), default="dat")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        shape = parse_shape(args.shape)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.perf_counter()
    path = os.path.join(args.out, f"ratings.{args.format}")
    try:
        os.makedirs(args.out, exist_ok=True)  # fail before generating
        data = generate(shape, seed=args.seed)
        (write_dat if args.format == "dat" else write_parquet)(path, data)
    except OSError as exc:
        print(f"recsys synthetic: error: cannot write {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 3
    print(f"wrote {path}: {len(data['rating']):,} ratings, {shape.n_users:,} users, "
          f"{shape.n_items:,} items, mean rating {data['rating'].mean():.3f}, seed {args.seed}, "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
