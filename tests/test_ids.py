"""Dense ALS indices for ids of any type: order, determinism, round trips, unknowns, save/load."""

import random

import pytest
from pyspark.sql.types import IntegerType, LongType, StringType

from recsys.model import ids
from recsys.model.ids import IdIndex, build_index, from_index, to_index

pytestmark = pytest.mark.spark

LONG_IDS = [2 ** 40 + k for k in (0, 1, 2, 10, 11, 100)] + [
    -1, -5, -10, -(2 ** 40), 0, 9, 10, 2 ** 31 - 1, 2 ** 31, -(2 ** 63), 2 ** 63 - 1]
# Code point order: "Ａ" (U+FF21) < "😀" (U+1F600), the reverse of Java's UTF-16 order; "" first.
STRING_IDS = ["", " ", "a", "B", "b", "ab", "a b", "é", "e\u0301", "Ａ", "😀", "日本", "10", "9"]
INT_IDS = [-(2 ** 31), -7, 0, 3, 12, 2 ** 31 - 1]


def expected_mapping(values):
    return {v: i for i, v in enumerate(sorted(set(v for v in values if v is not None)))}


def mapping(index, col="id", index_col="_idx"):
    rows = index.collect()
    got = {r[col]: r[index_col] for r in rows}
    assert len(got) == len(rows), "an id appears twice in the index"
    return got


def frame(spark, values, type_name, *, shuffle_seed=None, partitions=None):
    """One row per value (with duplicates and a NULL) plus a payload column."""
    values = list(values) + list(values[:3]) + [None]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(values)
    df = spark.createDataFrame([(v, n) for n, v in enumerate(values)],
                               f"id {type_name}, payload int")
    return df.repartition(partitions) if partitions else df


@pytest.fixture(autouse=True, params=["driver", "distributed"])
def index_path(request, monkeypatch):
    """Every test on both ways of numbering ids: collected on the driver (up to
    ids.LOCAL_INDEX_MAX ids) and the distributed sort (forced by a limit of 0)."""
    if request.param == "distributed":
        monkeypatch.setattr(ids, "LOCAL_INDEX_MAX", 0)
    return request.param


@pytest.fixture
def many_partitions(spark):
    """More range partitions than ids per partition, not coalesced: offsets must be right."""
    keys = ("spark.sql.shuffle.partitions", "spark.sql.adaptive.coalescePartitions.enabled")
    old = {k: spark.conf.get(k) for k in keys}
    spark.conf.set(keys[0], "7")
    spark.conf.set(keys[1], "false")
    yield
    for k, v in old.items():
        spark.conf.set(k, v)


@pytest.mark.parametrize("values, type_name, spark_type", [
    (LONG_IDS, "long", LongType()),
    (STRING_IDS, "string", StringType()),
    (INT_IDS, "int", IntegerType()),
])
def test_index_is_dense_and_follows_value_order(spark, values, type_name, spark_type):
    index = build_index(frame(spark, values, type_name), "id")
    assert [(f.name, f.dataType) for f in index.schema] == [("id", spark_type),
                                                           ("_idx", IntegerType())]
    assert mapping(index) == expected_mapping(values)


@pytest.mark.parametrize("values, type_name", [(LONG_IDS, "long"), (STRING_IDS, "string")])
def test_same_mapping_whatever_the_partitioning_and_row_order(spark, many_partitions, values,
                                                              type_name):
    want = expected_mapping(values)
    for seed, parts in ((1, 5), (2, 3), (3, None)):
        index = build_index(frame(spark, values, type_name, shuffle_seed=seed,
                                  partitions=parts), "id")
        assert index.rdd.getNumPartitions() > 1  # the per-partition offsets are exercised
        assert mapping(index) == want


def test_custom_index_column_name(spark):
    index = build_index(frame(spark, INT_IDS, "int"), "id", index_col="uidx")
    assert index.columns == ["id", "uidx"]
    assert mapping(index, index_col="uidx") == expected_mapping(INT_IDS)


@pytest.mark.parametrize("values, type_name", [
    (LONG_IDS, "long"), (STRING_IDS, "string"), (INT_IDS, "int")])
def test_to_index_then_from_index_gives_back_the_original_rows(spark, values, type_name):
    df = frame(spark, values, type_name, shuffle_seed=4)
    index = build_index(df, "id")
    indexed = to_index(df, index, "id")
    assert indexed.columns == ["id", "payload", "_idx"]
    assert indexed.schema["_idx"].dataType == IntegerType()
    want = expected_mapping(values)
    for r in indexed.collect():
        assert r["_idx"] == (None if r["id"] is None else want[r["id"]])

    back = from_index(indexed.drop("id"), index, "id")
    assert [(f.name, f.dataType) for f in back.schema] == [("payload", IntegerType()),
                                                          ("id", df.schema["id"].dataType)]
    key = lambda r: r["payload"]  # noqa: E731
    assert sorted(back.select("id", "payload").collect(), key=key) == sorted(df.collect(), key=key)


def test_from_index_puts_the_id_where_the_index_was(spark):
    index = build_index(frame(spark, LONG_IDS, "long"), "id")
    df = spark.createDataFrame([(1, 0, 2.5)], "a int, _idx int, b double")
    out = from_index(df, index, "id")
    assert out.columns == ["a", "id", "b"]
    assert out.collect()[0]["id"] == min(LONG_IDS)


def test_unknown_ids_get_a_null_index_or_are_dropped(spark):
    index = build_index(frame(spark, LONG_IDS, "long"), "id")
    new = spark.createDataFrame([(2 ** 40, "known"), (2 ** 40 + 5, "unknown"), (None, "null")],
                                "id long, tag string")
    kept = {r.tag: r._idx for r in to_index(new, index, "id").collect()}
    assert kept == {"known": expected_mapping(LONG_IDS)[2 ** 40], "unknown": None, "null": None}
    dropped = [r.tag for r in to_index(new, index, "id", keep_unknown=False).collect()]
    assert dropped == ["known"]
    # Rows with an index unknown to the mapping keep their place with a NULL id.
    back = from_index(spark.createDataFrame([(999, "x"), (None, "y")], "_idx int, tag string"),
                      index, "id")
    assert sorted((r.tag, r.id) for r in back.collect()) == [("x", None), ("y", None)]


def test_integer_ids_join_a_long_index_but_strings_do_not(spark):
    index = build_index(frame(spark, LONG_IDS, "long"), "id")
    ints = spark.createDataFrame([(9,), (10,)], "id int")
    assert {r.id: r._idx for r in to_index(ints, index, "id").collect()} == {
        9: expected_mapping(LONG_IDS)[9], 10: expected_mapping(LONG_IDS)[10]}
    strings = spark.createDataFrame([("9",)], "id string")
    with pytest.raises(ValueError, match="string but the index has bigint"):
        to_index(strings, index, "id")


def test_existing_output_columns_are_refused(spark):
    index = build_index(frame(spark, INT_IDS, "int"), "id")
    with pytest.raises(ValueError, match="already has a column '_idx'"):
        to_index(index, index, "id")
    with pytest.raises(ValueError, match="already has a column 'id'"):
        from_index(index, index, "id")


def test_too_many_ids_fail_with_one_line(spark, monkeypatch):
    monkeypatch.setattr(ids, "MAX_IDS", 3)
    df = spark.createDataFrame([(v,) for v in (5, 6, 7, 7)], "id long")
    assert mapping(build_index(df, "id")) == {5: 0, 6: 1, 7: 2}
    with pytest.raises(ValueError) as err:
        build_index(df.union(spark.createDataFrame([(8,)], "id long")), "id")
    assert "4 distinct ids" in str(err.value) and "\n" not in str(err.value)


def test_id_index_encodes_decodes_and_survives_save_and_load(spark, tmp_path):
    users = [2 ** 40 + 3, -2, 2 ** 40, 7]
    items = ["z", "", "ä", "Ａ", "😀"]
    rows = [(u, it, float(n)) for n, (u, it) in enumerate((u, it) for u in users for it in items)
            if n % 3]
    ratings = spark.createDataFrame(rows, "uid long, iid string, rating double")
    fitted = IdIndex.fit(ratings, col_user="uid", col_item="iid")
    fitted.save(str(tmp_path / "ids"))
    loaded = IdIndex.load(spark, str(tmp_path / "ids"))

    assert (loaded.col_user, loaded.col_item) == ("uid", "iid")
    assert (loaded.user_type, loaded.item_type) == (LongType(), StringType())
    want_users = expected_mapping(r[0] for r in rows)
    want_items = expected_mapping(r[1] for r in rows)
    for idx in (fitted, loaded):
        assert mapping(idx.users, "uid") == want_users
        assert mapping(idx.items, "iid") == want_items

    encoded = loaded.encode(ratings)
    assert encoded.columns == ["uid", "iid", "rating", "_user_idx", "_item_idx"]
    assert all(r._user_idx == want_users[r.uid] and r._item_idx == want_items[r.iid]
               for r in encoded.collect())
    decoded = loaded.decode(encoded.drop("uid", "iid"))
    assert [(f.name, f.dataType) for f in decoded.schema] == [
        ("rating", ratings.schema["rating"].dataType), ("uid", LongType()), ("iid", StringType())]
    assert sorted(decoded.select("uid", "iid", "rating").collect()) == sorted(ratings.collect())
