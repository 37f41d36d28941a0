"""Line parsers (no Spark): each format's fields and each rejection reason."""

import pytest

from recsys.sources.formats import BadRow, movies_parser, ratings_parser


@pytest.mark.parametrize("fmt, line, expected", [
    ("ml-1m", "6040::858::4::956703932", (6040, 858, 4.0, 956703932)),
    ("ml-100k", "196\t242\t3\t881250949", (196, 242, 3.0, 881250949)),
    ("ml-latest", "1,1029,3.0,1260759179", (1, 1029, 3.0, 1260759179)),
    ("ml-latest", "1,1029,.5,1260759179", (1, 1029, 0.5, 1260759179)),
])
def test_ratings_lines(fmt, line, expected):
    assert ratings_parser(fmt).parse(line) == expected


@pytest.mark.parametrize("fmt, line, reason", [
    ("ml-1m", "", "empty line"),
    ("ml-1m", "   ", "empty line"),
    ("ml-1m", "1::2::3", "expected 4 fields, found 3"),
    ("ml-1m", "1::2::3::4::", "expected 4 fields, found 5"),           # trailing separator
    ("ml-1m", "x1::2::3::978300760", "user_id is not an integer: 'x1'"),
    ("ml-1m", "1::2.5::3::978300760", "item_id is not an integer: '2.5'"),
    ("ml-1m", "99999999999999999999::2::3::978300760",
     "user_id 99999999999999999999 is outside the INT64 range"),
    ("ml-1m", "1::2::NaN::978300760", "rating is not a finite number: 'NaN'"),
    ("ml-1m", "1::2::inf::978300760", "rating is not a finite number: 'inf'"),
    ("ml-1m", "1::2::1e999::978300760", "rating is not a finite number: '1e999'"),
    ("ml-1m", "1::2::4 stars::978300760", "rating is not a number: '4 stars'"),
    ("ml-1m", "1::2::4::yesterday", "timestamp is neither epoch seconds nor an ISO-8601 time"),
    ("ml-latest", "userId,movieId,rating,timestamp", "header line"),
    ("ml-latest", '1,"2,3', "malformed CSV: unexpected end of data"),  # truncated last line
])
def test_ratings_rejections(fmt, line, reason):
    with pytest.raises(BadRow) as err:
        ratings_parser(fmt).parse(line)
    assert reason in str(err.value)


def test_ml100k_genres_from_flags():
    flags = ["0"] * 19
    flags[1] = flags[16] = "1"  # Action, Thriller
    line = "|".join(["50", "Star Wars (1977)", "01-Jan-1977", "", "http://x"] + flags)
    assert movies_parser("ml-100k").parse(line) == (50, "Star Wars (1977)", "Action|Thriller")


def test_ml_latest_quoted_title_with_commas():
    line = '5,"Twelve Monkeys (a.k.a. 12 Monkeys) (1995)",Mystery|Sci-Fi|Thriller'
    assert movies_parser("ml-latest").parse(line) == (
        5, "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", "Mystery|Sci-Fi|Thriller")


def test_generic_csv_maps_columns_by_header_name():
    header = ["ts", "rating_value", "item", "user"]
    parser = ratings_parser("csv", delimiter=";", header=header,
                            columns=("user", "item", "rating_value", "ts"))
    assert parser.parse("2001-09-09T01:46:40;4.5;20;10") == (10, 20, 4.5, 1_000_000_000)
    assert parser.is_header("ts;rating_value;item;user")


def test_generic_csv_without_timestamp_column():
    parser = ratings_parser("csv", header=["u", "i", "r"], columns=("u", "i", "r", None))
    assert parser.parse("1,2,3") == (1, 2, 3.0, None)


def test_generic_csv_header_missing_a_mapped_column():
    with pytest.raises(BadRow, match="header has no column 'rating'"):
        ratings_parser("csv", header=["u", "i", "r"], columns=("u", "i", "rating", None))
