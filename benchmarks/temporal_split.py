"""Write a per-user temporal train/test split of an ml-latest ratings file, for quality.py.

    python benchmarks/temporal_split.py --ratings data/ml-latest-small/ratings.csv --out /tmp/split
    python benchmarks/quality.py --train /tmp/split/train.csv --test /tmp/split/test.csv

Each user's ratings are ordered by timestamp (then movie id); the last ``--fraction`` of them
(rounded down, at least one rating kept for training) go to ``test.csv``, the rest to
``train.csv``, both in the input's own format and header. The question this split asks is the
one a recommender meets: what will users rate *next*.
"""

import argparse
import os

import pandas as pd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    frame = pd.read_csv(args.ratings)
    user, item, _, stamp = frame.columns[:4]
    frame = frame.sort_values([user, stamp, item], kind="stable")
    position = frame.groupby(user).cumcount()
    count = frame.groupby(user)[item].transform("size")
    held = (count - position) <= (count * args.fraction).astype(int).clip(upper=count - 1)
    os.makedirs(args.out, exist_ok=True)
    frame[~held].to_csv(os.path.join(args.out, "train.csv"), index=False)
    frame[held].to_csv(os.path.join(args.out, "test.csv"), index=False)
    print(f"{(~held).sum()} training and {held.sum()} test ratings in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
