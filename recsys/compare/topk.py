"""The top-k stage: BigQuery ML's top-k lists (the tutorial's top-5 table, titles only) against
recsys's, over every user of BigQuery ML's table.

Lists are keyed by item id where both sides have ids, else a titles-only side is mapped to ids
through the movies table (``match_topk``); ``compare_topk`` gives the per-user table and
``summarize_topk`` its summary, catalogue coverage and popularity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys.compare.frames import ITEM, RANK, SIDES, TITLE, USER, id_text, resolve_titles, \
    title_index, with_titles
from recsys.compare.results import TopkComparison
from recsys.compare.stages import id_counts


@dataclass(frozen=True)
class TopkMatch:
    """Both sides' top-k tables keyed the same way (``by``: item ids or titles)."""

    bqml: DataFrame
    recsys: DataFrame
    by: str
    how: str
    ambiguous_titles: Optional[int] = None  # distinct titles shared by several movies
    unknown_titles: Optional[int] = None    # distinct titles not in the movies table


def match_topk(b: DataFrame, r: DataFrame, titles: Optional[DataFrame], k: int) -> TopkMatch:
    """Key BigQuery ML's top-k lists like recsys's: by item id where a side has ids, else by
    title through the movies table (``titles`` from ``title_index``; None: not given)."""
    b_ids = b.where(F.col(ITEM).isNotNull()).limit(1).count() > 0
    r_ids = r.where(F.col(ITEM).isNotNull()).limit(1).count() > 0
    if b_ids and r_ids:
        return TopkMatch(b, r, ITEM, "item id (both top-k tables have item ids)")
    if titles is None or not r_ids:
        if titles is not None:
            b, r = with_titles(b, titles), with_titles(r, titles)
        return TopkMatch(b, r, TITLE, "movie title (a side has no item ids"
                         + (" and no movies table was given" if titles is None else
                            ", so neither can be mapped") + "; ambiguous titles not counted)")
    side, other = (b, r) if not b_ids else (r, b)
    resolved = resolve_titles(side.where(F.col(RANK) <= k), titles,
                              other.where(F.col(RANK) <= k)).cache()
    counts = resolved.groupBy(TITLE).agg(F.max("title_ids").alias("n")).select(
        F.sum((F.col("n") > 1).cast("long")).alias("amb"),
        F.sum((F.col("n") == 0).cast("long")).alias("unk")).head()
    name = "BigQuery ML's" if not b_ids else "recsys's"
    how = (f"item id: {name} top-k table has titles only (the tutorial's struct), mapped to "
           f"ids through the movies table; a title shared by several movies counts as the one "
           f"of them in the other list, else the smallest id")
    resolved = resolved.drop("title_ids")
    pair = (resolved, r) if not b_ids else (b, resolved)
    return TopkMatch(*pair, ITEM, how, counts["amb"] or 0, counts["unk"] or 0)


def _lists(top: DataFrame, k: int, by: str) -> DataFrame:
    keyed = top.where((F.col(RANK) <= k) & F.col(by).isNotNull())
    return keyed.groupBy(USER).agg(
        F.transform(F.sort_array(F.collect_list(F.struct(RANK, by))), lambda s: s[by])
        .alias("items"))


def compare_topk(bqml: DataFrame, recsys: DataFrame, k: int, by: str = ITEM) -> DataFrame:
    """Per user of BigQuery ML's top-k table: overlap (|A ∩ B|), overlap@k (|A ∩ B| / k),
    Jaccard (|A ∩ B| / |A ∪ B|), same set, same order. A user recsys has no list for has
    ``recsys_items`` NULL and overlap 0. ``by``: ``item`` or ``title``."""
    b = _lists(bqml, k, by).withColumnRenamed("items", "bqml_items")
    r = _lists(recsys, k, by).withColumnRenamed("items", "recsys_items")
    both = b.join(r, USER, "left")
    r_items = F.coalesce(F.col("recsys_items"), F.array().cast("array<string>"))
    inter = F.size(F.array_intersect("bqml_items", r_items))
    union = F.size(F.array_union("bqml_items", r_items))
    return both.select(
        F.col(USER).alias("user"), "bqml_items", "recsys_items",
        inter.cast("long").alias("overlap"), (inter / F.lit(float(k))).alias("overlap_at_k"),
        F.when(union > 0, inter / union).alias("jaccard"),
        ((F.size(F.array_except("bqml_items", r_items)) == 0)
         & (F.size(F.array_except(r_items, "bqml_items")) == 0)).alias("same_set"),
        F.coalesce(F.col("bqml_items") == F.col("recsys_items"), F.lit(False))
        .alias("same_order"))


@dataclass(frozen=True)
class Popularity:
    """Per side: distinct items recommended, and the rating counts of the recommended items
    (mean, median; None without a ratings table) over a catalogue of rated items."""

    distinct: Dict[str, int]
    catalogue: Optional[int] = None
    mean: Dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(SIDES))
    median: Dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(SIDES))


def topk_popularity(per_user: DataFrame, match: TopkMatch, ratings: Optional[DataFrame],
                    movies: Optional[DataFrame], item_col: str, k: int) -> Popularity:
    """Distinct items, catalogue size and rating counts of the recommended items over the
    users compared, per side (rating counts need the ratings table)."""
    by = match.by
    users = per_user.select(F.col("user").alias(USER))
    recs = {side: top.where((F.col(RANK) <= k) & F.col(by).isNotNull()).join(users, USER)
            .select(USER, F.col(by).alias("key"))
            for side, top in zip(SIDES, (match.bqml, match.recsys))}
    distinct = {side: recs[side].select("key").distinct().count() for side in SIDES}
    if ratings is None or (by == TITLE and movies is None):
        return Popularity(distinct)
    popularity = ratings.select(id_text(F.col(item_col), ratings.schema[item_col].dataType)
                                .alias("key")).groupBy("key").count()
    if by == TITLE:
        popularity = (popularity.join(title_index(movies).select(
            F.explode("ids").alias("key"), F.col(TITLE).alias("t")), "key")
            .groupBy("t").agg(F.sum("count").alias("count")).withColumnRenamed("t", "key"))
    rows = {side: (recs[side].join(popularity, "key", "left")
                   .select(F.coalesce(F.col("count"), F.lit(0)).alias("c"))
                   .select(F.avg("c").alias("mean"),
                           F.expr("percentile(c, 0.5)").alias("median")).head())
            for side in SIDES}
    return Popularity(distinct, popularity.count(),
                      {side: row["mean"] for side, row in rows.items()},
                      {side: row["median"] for side, row in rows.items()})


def summarize_topk(per_user: DataFrame, match: TopkMatch, *, ratings: Optional[DataFrame],
                   movies: Optional[DataFrame], item_col: str, k: int) -> TopkComparison:
    """The summary of a ``compare_topk`` table (``per_user``) of ``match``'s lists."""
    users = id_counts(match.bqml.select(USER), match.recsys.select(USER))
    agg = per_user.select(F.count(F.lit(1)).alias("n"), F.avg("overlap_at_k").alias("o"),
                          F.avg("jaccard").alias("j"),
                          F.sum(F.col("same_set").cast("long")).alias("s"),
                          F.sum(F.col("same_order").cast("long")).alias("so")).head()
    dist: Dict[int, int] = {row["overlap"]: row["count"]
                            for row in per_user.groupBy("overlap").count().collect()}
    pop = topk_popularity(per_user, match, ratings, movies, item_col, k)
    return TopkComparison(
        k=k, matched_by=match.by, how=match.how, users=users, users_compared=agg["n"],
        mean_overlap_at_k=agg["o"], mean_jaccard=agg["j"], identical_sets=agg["s"] or 0,
        identical_order=agg["so"] or 0, overlaps=tuple(dist.get(i, 0) for i in range(k + 1)),
        catalogue_size=pop.catalogue, distinct_items=pop.distinct,
        coverage={side: (pop.distinct[side] / pop.catalogue if pop.catalogue else None)
                  for side in SIDES},
        mean_rating_count=pop.mean, median_rating_count=pop.median,
        ambiguous_titles=match.ambiguous_titles, unknown_titles=match.unknown_titles,
        has_ratings=ratings is not None)
