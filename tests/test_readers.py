"""Each MovieLens format read from real-format files: values, encodings, line ends."""

import datetime as dt

import pytest

from recsys.config import IngestConfig, SourceConfig
from recsys.sources.ingest import ingest

pytestmark = pytest.mark.spark
UTC = dt.timezone.utc


def read(spark, fmt, ratings, movies, **source):
    result = ingest(spark, SourceConfig(format=fmt, ratings=ratings, movies=movies, **source),
                    IngestConfig(rating_min=0.5, rating_max=5.0))
    # Each file of ``ratings`` is sorted, not the table as a whole (test_ingest checks the order).
    ratings_rows = sorted(tuple(r) for r in result.ratings.collect())
    movies_rows = [tuple(r) for r in result.movies.collect()] if result.movies else None
    return result, ratings_rows, movies_rows


def ts(seconds):
    # Spark returns naive datetimes in the session time zone, which the factory pins to UTC.
    return dt.datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def test_ml_1m_dat_with_latin1_movies(spark, fixture_path):
    result, ratings, movies = read(spark, "ml-1m", fixture_path("ml-1m", "ratings.dat"),
                                   fixture_path("ml-1m", "movies.dat"))
    assert ratings == [
        (1, 661, 3.0, ts(978302109)), (1, 914, 3.0, ts(978301968)), (1, 1193, 5.0, ts(978300760)),
        (2, 73, 5.0, ts(978299941)), (2, 1193, 4.0, ts(978298413)), (3, 2355, 3.0, ts(978298430)),
    ]
    assert (73, "Misérables, Les (1995)", "Drama|Musical") in movies
    assert (3, "Café au lait (1993)", "Comedy") in movies
    assert len(movies) == 7
    assert result.ratings_stats.rejected_rows == 0 and result.movies_stats.rejected_rows == 0


def test_ml_100k_tab_and_pipe_latin1(spark, fixture_path):
    _, ratings, movies = read(spark, "ml-100k", fixture_path("ml-100k", "u.data"),
                              fixture_path("ml-100k", "u.item"))
    assert ratings[0] == (22, 377, 1.0, ts(878887116))
    assert len(ratings) == 5
    by_id = {m[0]: m for m in movies}
    assert by_id[1176] == (1176, "Señorita Extraviada (2001)", "Documentary")
    assert by_id[302] == (302, "L.A. Confidential (1997)", "Crime|Film-Noir|Mystery|Thriller")
    assert by_id[242] == (242, "Kolya (1996)", "Comedy")


def test_ml_latest_csv_crlf_and_quoted_titles(spark, fixture_path):
    _, ratings, movies = read(spark, "ml-latest", fixture_path("ml-latest", "ratings.csv"),
                              fixture_path("ml-latest", "movies.csv"))
    assert ratings == [
        (1, 11, 4.0, ts(1260759182)), (1, 31, 2.5, ts(1260759144)),
        (1, 1029, 3.0, ts(1260759179)), (2, 11, 0.5, ts(1260759185)),
        (2, 31, 5.0, ts(1260759205)),
    ]
    assert movies == [
        (2, "Misérables, Les (1995)", "Drama|War"),
        (5, "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", "Mystery|Sci-Fi|Thriller"),
        (11, "American President, The (1995)", "Comedy|Drama|Romance"),
        (31, "Dangerous Minds (1995)", "Drama"),
        (1029, "Dumbo (1941)", "Animation|Children|Drama|Musical"),
    ]


def test_generic_csv_with_column_mapping(spark, tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"when;score;film;who\n2001-09-09T01:46:40Z;4;20;10\n1000000001;2.5;21;10\n")
    _, ratings, movies = read(spark, "csv", str(path), None, delimiter=";",
                              rating_columns=_columns("who", "film", "score", "when"))
    assert ratings == [(10, 20, 4.0, ts(1_000_000_000)), (10, 21, 2.5, ts(1_000_000_001))]
    assert movies is None


def test_parquet_source_with_column_mapping(spark, tmp_path):
    import pandas as pd

    path = str(tmp_path / "r.parquet")
    pd.DataFrame({"u": pd.array([7, 8, None], dtype="Int64"), "i": [1, 2, 3], "r": [4.0, 9.0, 3.0],
                  "t": [978300760, 978300761, 978300762]}).to_parquet(path)
    result, ratings, _ = read(spark, "parquet", path, None,
                              rating_columns=_columns("u", "i", "r", "t"))
    assert ratings == [(7, 1, 4.0, ts(978300760))]
    rejected = sorted((r.line_number, r.reason) for r in result.ratings_rejected.collect())
    assert rejected == [(2, "rating 9.0 outside the scale [0.5, 5]"),
                        (3, "NULL in a required column")]


def _columns(user, item, rating, timestamp):
    from recsys.config import RatingColumns

    return RatingColumns(user=user, item=item, rating=rating, timestamp=timestamp)
