"""Line parsers for the MovieLens file formats and generic delimited files.

Pure Python, no Spark: each parser turns one decoded line into a tuple of typed values or raises
``BadRow`` with the reason the line is rejected. The Spark reader applies them line by line.

>>> p = ratings_parser("ml-1m")
>>> p.parse("1::1193::5::978300760")
(1, 1193, 5.0, 978300760)
>>> p.parse("1::1193::five::978300760")
Traceback (most recent call last):
...
recsys.sources.formats.BadRow: rating is not a number: 'five'
>>> movies_parser("ml-latest").parse('11,"American President, The (1995)",Comedy|Drama|Romance')
(11, 'American President, The (1995)', 'Comedy|Drama|Romance')
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, List, Optional, Sequence, Tuple

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_INT_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
# Epoch seconds of Spark's TIMESTAMP range, years 1..9999; kept simple and generous.
TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS = -62135596800, 253402300799

# ml-100k's u.genre: the 19 flag columns at the end of each u.item line, in order.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)

# Encoding of each format's movies file; ratings files are plain ASCII digits in every format.
MOVIES_ENCODING = {"ml-1m": "latin-1", "ml-100k": "latin-1", "ml-latest": "utf-8",
                   "csv": "utf-8", "parquet": "utf-8"}

RatingRow = Tuple[int, int, float, Optional[int]]
MovieRow = Tuple[int, Optional[str], Optional[str]]


class BadRow(ValueError):
    """A line that cannot become a row; the message is the reason stored in the rejects table."""


@dataclass(frozen=True)
class LineParser:
    """Splits a line into fields and converts them; ``header`` is the expected header, if any."""

    split: Callable[[str], List[str]]
    convert: Callable[[Sequence[str]], tuple]
    num_fields: int
    header: Optional[Tuple[str, ...]] = None

    def parse(self, line: str) -> tuple:
        """Parse one line (without its line terminator) or raise ``BadRow``."""
        if not line.strip():
            raise BadRow("empty line")
        fields = self.split(line)
        if self.header is not None and tuple(f.strip() for f in fields) == self.header:
            raise BadRow("header line")
        if len(fields) != self.num_fields:
            raise BadRow(f"expected {self.num_fields} fields, found {len(fields)}")
        return self.convert(fields)

    def is_header(self, line: str) -> bool:
        """True when ``line`` is this format's header line."""
        return self.header is not None and tuple(f.strip() for f in self.split(line)) == self.header


def parse_int64(text: str, name: str) -> int:
    """An INT64 id, or ``BadRow`` naming the field."""
    value = text.strip()
    if not _INT_RE.match(value):
        raise BadRow(f"{name} is not an integer: {text!r}")
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise BadRow(f"{name} {value} is outside the INT64 range")
    return number


def parse_rating(text: str, name: str = "rating") -> float:
    """A finite decimal number, or ``BadRow`` (the scale is checked later, by the ingest stage)."""
    value = text.strip()
    if value.lower() in _NON_FINITE:
        raise BadRow(f"{name} is not a finite number: {text!r}")
    if not _NUMBER_RE.match(value):
        raise BadRow(f"{name} is not a number: {text!r}")
    number = float(value)
    if math.isinf(number):
        raise BadRow(f"{name} is not a finite number: {text!r}")
    return number


def parse_timestamp(text: str, name: str = "timestamp", required: bool = True) -> Optional[int]:
    """Epoch seconds from an integer or an ISO-8601 string (naive means UTC)."""
    value = text.strip()
    if not value:
        if required:
            raise BadRow(f"{name} is empty")
        return None
    if _INT_RE.match(value):
        seconds = int(value)
        if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS:
            raise BadRow(f"{name} {value} is outside the TIMESTAMP range")
        return seconds
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRow(f"{name} is neither epoch seconds nor an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def _split_on(sep: str) -> Callable[[str], List[str]]:
    return lambda line: line.split(sep)


def _split_csv(delimiter: str) -> Callable[[str], List[str]]:
    def split(line: str) -> List[str]:
        try:
            return next(csv.reader([line], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            raise BadRow(f"malformed CSV: {exc}") from None
    return split


def _rating_fields(fields: Sequence[str]) -> RatingRow:
    return (parse_int64(fields[0], "user_id"), parse_int64(fields[1], "item_id"),
            parse_rating(fields[2]), parse_timestamp(fields[3]))


def _movie_fields(fields: Sequence[str]) -> MovieRow:
    return (parse_int64(fields[0], "movie_id"), fields[1], fields[2])


def _ml100k_movie_fields(fields: Sequence[str]) -> MovieRow:
    flags = fields[5:]
    genres = [g for g, flag in zip(ML100K_GENRES, flags) if flag.strip() == "1"]
    return (parse_int64(fields[0], "movie_id"), fields[1], "|".join(genres))


def ratings_parser(fmt: str, *, delimiter: str = ",", header: Sequence[str] = (),
                   columns: Sequence[Optional[str]] = ()) -> LineParser:
    """Parser for a ratings file of format ``fmt``.

    For ``csv`` the header names the file's columns and ``columns`` gives the names of the
    user, item, rating and (optional, may be None) timestamp columns.
    """
    if fmt == "ml-1m":
        return LineParser(_split_on("::"), _rating_fields, 4)
    if fmt == "ml-100k":
        return LineParser(_split_on("\t"), _rating_fields, 4)
    if fmt == "ml-latest":
        return LineParser(_split_csv(","), _rating_fields, 4,
                          ("userId", "movieId", "rating", "timestamp"))
    if fmt == "csv":
        return _mapped_csv_parser(delimiter, header, columns, _mapped_rating)
    raise ValueError(f"no line parser for ratings format {fmt!r}")


def movies_parser(fmt: str, *, delimiter: str = ",", header: Sequence[str] = (),
                  columns: Sequence[Optional[str]] = ()) -> LineParser:
    """Parser for a movies file of format ``fmt`` (see ``ratings_parser`` for ``csv``)."""
    if fmt == "ml-1m":
        return LineParser(_split_on("::"), _movie_fields, 3)
    if fmt == "ml-100k":
        return LineParser(_split_on("|"), _ml100k_movie_fields, 5 + len(ML100K_GENRES))
    if fmt == "ml-latest":
        return LineParser(_split_csv(","), _movie_fields, 3, ("movieId", "title", "genres"))
    if fmt == "csv":
        return _mapped_csv_parser(delimiter, header, columns, _mapped_movie)
    raise ValueError(f"no line parser for movies format {fmt!r}")


def _mapped_rating(values: Sequence[Optional[str]]) -> RatingRow:
    user, item, rating, ts = values
    return (parse_int64(user, "user_id"), parse_int64(item, "item_id"), parse_rating(rating),
            None if ts is None else parse_timestamp(ts, required=False))


def _mapped_movie(values: Sequence[Optional[str]]) -> MovieRow:
    movie_id, title, genre = values
    return (parse_int64(movie_id, "movie_id"), title, genre)


def _mapped_csv_parser(delimiter: str, header: Sequence[str], columns: Sequence[Optional[str]],
                       convert: Callable[[Sequence[Optional[str]]], tuple]) -> LineParser:
    names = tuple(h.strip() for h in header)
    missing = [c for c in columns if c is not None and c not in names]
    if missing:
        raise BadRow(f"header has no column {missing[0]!r} (columns: {', '.join(names)})")
    positions = [None if c is None else names.index(c) for c in columns]

    def pick(fields: Sequence[str]) -> tuple:
        return convert([None if p is None else fields[p] for p in positions])

    return LineParser(_split_csv(delimiter), pick, len(names), names)
