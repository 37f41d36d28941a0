"""Every figure of the compare job against pandas/NumPy, on a fixture built to trip it: repeated
(user, item) rows on both sides (averaged before comparing), predictions and intercepts on a
coarse grid (ties everywhere: Spearman needs average ranks), top-k ties at the cut between item
ids 9 and 10 (which sort as numbers, not text), ids on one side only, two training runs.

The plots are read back: every density cell's count and position, every bar's value and
height, every loss point's value and position, against the same oracle.
"""

import os
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bq_writers as bw
from recsys.config import load_config

pytestmark = pytest.mark.spark

K = 3
BINS = 6
SVG = "{http://www.w3.org/2000/svg}"
BLUE, RED = "#1f77b4", "#d62728"  # svg.COLORS: BigQuery ML, recsys (then eval losses)


def write_table(root, name, frame):
    folder = os.path.join(root, "bqml_tutorial", name)
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                   os.path.join(folder, "part-00000.parquet"))


def ranked_lists(pred, k=K):
    """user -> the first k items by prediction DESC, then the smaller item id (as a number)."""
    ordered = pred.sort_values(["user_id", "predicted_rating", "item_id"],
                               ascending=[True, False, True])
    return {int(u): [int(i) for i in g.item_id.head(k)] for u, g in ordered.groupby("user_id")}


def weights_rows(intercepts, n_factors, global_intercept):
    rows = [(kind, str(f), [{"factor": n, "weight": 0.1} for n in range(1, n_factors + 1)], b)
            for kind, values in intercepts.items() for f, b in values.items()]
    return pd.DataFrame(rows + [(None, "global__intercept__", None, global_intercept)],
                        columns=["processed_input", "feature", "factor_weights", "intercept"])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("numbers")
    rng = np.random.default_rng(16)
    wh, ex = str(tmp / "wh"), tmp / "bqml"
    ex.mkdir()
    # ML.RECOMMEND. recsys: users 1..5 x items 1..10 on a 0.5 grid; (1, 1) repeated with
    # another value, (2, 2) repeated as is.
    rec = pd.DataFrame([(u, i) for u in range(1, 6) for i in range(1, 11)],
                       columns=["user_id", "item_id"])
    rec["predicted_rating"] = np.round(rng.uniform(1, 5, len(rec)) * 2) / 2
    rec_rows = pd.concat([rec, rec.iloc[[0]].assign(predicted_rating=rec.predicted_rating[0] + 1),
                          rec.iloc[[11]]], ignore_index=True)
    # BigQuery ML: users 1..4 and 9, items 1..10 and 20, recsys + noise on a 0.25 grid; (1, 2)
    # three times, (3, 3) twice, with different values. Ties at the top-k cut: user 1's items
    # 9 and 10 tie for first, user 2's tie for the third place.
    bq = pd.DataFrame([(u, i) for u in (1, 2, 3, 4, 9) for i in (*range(1, 11), 20)],
                      columns=["user_id", "item_id"])
    bq = bq.merge(rec, on=["user_id", "item_id"], how="left")
    bq["predicted_rating"] = np.round((bq.predicted_rating.fillna(3.0)
                                       + rng.normal(0, 0.4, len(bq))) * 4) / 4
    top = {(1, 9): 6.5, (1, 10): 6.5, (2, 1): 7.0, (2, 2): 6.75, (2, 9): 6.5, (2, 10): 6.5}
    for (u, i), value in top.items():
        bq.loc[(bq.user_id == u) & (bq.item_id == i), "predicted_rating"] = value
    bq_rows = pd.concat([bq, bq.iloc[[1, 1]].assign(predicted_rating=[1.0, 5.0]),
                         bq.iloc[[24]].assign(predicted_rating=0.5)], ignore_index=True)
    bq_rows = bq_rows.sample(frac=1.0, random_state=3)[["predicted_rating", "user_id", "item_id"]]
    write_table(wh, "recommend", rec_rows)
    bw.write_csv(str(ex / "recommend.csv"), list(bq_rows.columns),
                 bq_rows.itertuples(index=False))

    # The top-k tables: BigQuery ML's flat (one row per recommendation, as UNNEST leaves it,
    # in CSV), ranked by the job; recsys's nested with its own order.
    bq_mean = bq_rows.groupby(["user_id", "item_id"], as_index=False).predicted_rating.mean()
    rec_mean = rec_rows.groupby(["user_id", "item_id"], as_index=False).predicted_rating.mean()
    bw.write_csv(str(ex / "top5.csv"), ["user_id", "item_id", "predicted_rating"],
                 bq_mean[["user_id", "item_id", "predicted_rating"]].itertuples(index=False))
    rec_top = ranked_lists(rec_mean)
    score = rec_mean.set_index(["user_id", "item_id"]).predicted_rating
    write_table(wh, "recommend_top5", pd.DataFrame({
        "user_id": list(rec_top), "recommendations": [
            [{"item_id": i, "predicted_rating": float(score[(u, i)])} for i in lst]
            for u, lst in rec_top.items()]}))
    ratings = pd.DataFrame({"user_id": rng.integers(1, 10, 90),
                            "item_id": rng.choice([*range(1, 11), 20], 90)})
    ratings = ratings[~ratings.item_id.isin([7])].assign(rating=4.0)  # item 7 never rated
    write_table(wh, "ratings", ratings)

    # ML.EVALUATE: a text column, one metric on each side only.
    bw.write_csv(str(ex / "evaluate.csv"), ["trial_id", "a_custom_metric", "mean_absolute_error",
                                            "mean_squared_error", "r2_score", "average_rank"],
                 [("t1", 1.5, 0.5, 0.4, 0.7, 0.25)])
    recsys_eval = {"mean_absolute_error": 0.52, "mean_squared_error": 0.39, "r2_score": 0.71,
                   "explained_variance": 0.72}
    write_table(wh, "evaluate", pd.DataFrame([recsys_eval]))

    # ML.TRAINING_INFO: BigQuery ML's two runs (the last is compared), recsys's one.
    bq_train = [{"training_run": run, "iteration": it, "loss": 1.0 + run - 0.1 * it,
                 "eval_loss": 1.2 - 0.05 * it, "duration_ms": 10}
                for run in (0, 1) for it in range(4)]
    bw.write_json(str(ex / "training_info.json"), bq_train)
    rec_train = pd.DataFrame({"training_run": 0, "iteration": range(6),
                              "loss": [0.9 - 0.07 * it for it in range(6)]})
    write_table(wh, "training_info", rec_train)

    # ML.WEIGHTS on a 0.05 grid (ties); BigQuery ML has user 9 and item 20, recsys user 5.
    b_ints = {"user_id": {u: round(3 + 0.05 * rng.integers(0, 3), 2) for u in (1, 2, 3, 4, 9)},
              "item_id": {i: round(-0.5 + 0.05 * rng.integers(0, 8), 2)
                          for i in (*range(1, 11), 20)}}
    r_ints = {"user_id": {u: round(3 + 0.05 * rng.integers(0, 3), 2) for u in range(1, 6)},
              "item_id": {i: round(-0.5 + 0.05 * rng.integers(0, 8), 2) for i in range(1, 11)}}
    pq.write_table(pa.Table.from_pandas(weights_rows(b_ints, 3, 3.6), preserve_index=False),
                   ex / "weights.parquet")
    write_table(wh, "weights", weights_rows(r_ints, 2, 3.5))
    return dict(tmp=tmp, wh=wh, ex=ex, rec_rows=rec_rows, bq_rows=bq_rows, bq_mean=bq_mean,
                rec_mean=rec_mean, rec_top=rec_top, ratings=ratings, recsys_eval=recsys_eval,
                bq_train=bq_train, rec_train=rec_train, b_ints=b_ints, r_ints=r_ints)


@pytest.fixture(scope="module")
def run(spark, case):
    from recsys.compare import run_compare

    ex = case["ex"]
    cfg = load_config(None, [
        f"sink.path={case['wh']}", f"compare.output={case['tmp'] / 'report'}",
        f"compare.top_k={K}", f"compare.bins={BINS}",
        f"compare.bqml.evaluate.path={ex / 'evaluate.csv'}",
        f"compare.bqml.training_info.path={ex / 'training_info.json'}",
        f"compare.bqml.recommend.path={ex / 'recommend.csv'}",
        f"compare.bqml.top5.path={ex / 'top5.csv'}",
        f"compare.bqml.weights.path={ex / 'weights.parquet'}"], job="compare")
    report = run_compare(spark, cfg)
    folder = case["tmp"] / "report"
    tables = {name: pd.read_parquet(os.path.join(case["wh"], "bqml_tutorial", name)) for name in (
        "compare_metrics", "compare_training", "compare_predictions", "compare_topk",
        "compare_topk_summary", "compare_intercepts", "compare_counts")}
    files = {name: (folder / name).read_text() for name in os.listdir(folder)}
    return report, tables, files


# --- oracles and readers -----------------------------------------------------------------------

def common_pairs(case):
    """Both sides' predictions averaged per (user, item), on the pairs both have."""
    return case["bq_mean"].merge(case["rec_mean"], on=["user_id", "item_id"],
                                 suffixes=("_b", "_r"))


def spearman_average_ranks(x, y):
    return float(np.corrcoef(pd.Series(x).rank(method="average"),
                             pd.Series(y).rank(method="average"))[0, 1])


def grid_oracle(x, y, bins=BINS):
    """{(i, j): count} of the documented binning: one range over both coordinates, bin
    floor((v - low) / width), the maximum in the last bin."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    low, high = min(x.min(), y.min()), max(x.max(), y.max())
    width = (high - low) / bins
    i = np.minimum(np.floor((x - low) / width), bins - 1).astype(int)
    j = np.minimum(np.floor((y - low) / width), bins - 1).astype(int)
    return dict(Counter(zip(i.tolist(), j.tolist())))


def plot_area(root):
    frame = next(r for r in root.iter(SVG + "rect") if r.get("fill") == "none")
    return [float(frame.get(a)) for a in ("x", "y", "width", "height")]


def density_cells(text, bins=BINS):
    """{(i, j): count} as drawn: each shaded cell's position and its <title> count."""
    root = ET.fromstring(text)
    left, top, width, height = plot_area(root)
    cells = {}
    for r in root.iter(SVG + "rect"):
        if r.get("fill-opacity") is None:
            continue
        i = round((float(r.get("x")) - left) / (width / bins))
        j = bins - 1 - round((float(r.get("y")) - top) / (height / bins))
        cells[(i, j)] = int(r.find(SVG + "title").text.replace(",", ""))
    return cells


def bars(text):
    """[(category, value label, bar height)] in drawing order."""
    children = list(ET.fromstring(text))
    return [(children[n + 2].text, children[n + 1].text, float(el.get("height")))
            for n, el in enumerate(children)
            if el.tag == SVG + "rect" and el.get("fill") == BLUE]


def md_row(md, label):
    """The cells after the label of the Markdown table row starting with ``label``."""
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def num(cell):
    return None if cell == "NULL" else float(cell.replace(",", ""))


# --- ML.RECOMMEND ------------------------------------------------------------------------------

def test_fixture_has_repeats_and_ties(case):
    for rows in (case["bq_rows"], case["rec_rows"]):
        assert rows.duplicated(["user_id", "item_id"]).any()
    both = common_pairs(case)
    assert both.predicted_rating_b.duplicated().sum() > 10
    assert both.predicted_rating_r.duplicated().sum() > 10


def test_prediction_figures_on_averaged_repeats(run, case):
    report, t, files = run
    both = common_pairs(case)
    b, r = both.predicted_rating_b, both.predicted_rating_r
    diff = r - b
    p = t["compare_predictions"].iloc[0]
    n_b, n_r = len(case["bq_mean"]), len(case["rec_mean"])
    assert (p.pairs_bqml, p.pairs_recsys, p.pairs_compared) == (n_b, n_r, len(both)) == (55, 50,
                                                                                          40)
    assert (p.pairs_bqml_only, p.pairs_recsys_only) == (n_b - len(both), n_r - len(both))
    assert p.rmse == pytest.approx(np.sqrt(np.mean(diff ** 2)), rel=1e-12)
    assert p.mean_abs_difference == pytest.approx(np.mean(np.abs(diff)), rel=1e-12)
    assert p.mean_difference == pytest.approx(np.mean(diff), rel=1e-12)
    assert p.pearson == pytest.approx(np.corrcoef(b, r)[0, 1], rel=1e-9)
    assert p.spearman == pytest.approx(spearman_average_ranks(b, r), rel=1e-9)
    assert abs(spearman_average_ranks(b, r) - float(np.corrcoef(
        b.rank(method="first"), r.rank(method="first"))[0, 1])) > 1e-3  # ties matter here
    md = files["report.md"]
    assert "- BigQuery ML recommend: 3 repeated (user, item) rows averaged" in md
    assert "- recsys recommend: 2 repeated (user, item) rows averaged" in md
    for label, want in (("RMSE between the two predictions", p.rmse),
                        ("Spearman correlation (average ranks for ties)", p.spearman)):
        assert num(md_row(md, label)[0]) == pytest.approx(want, rel=1e-5)
    line = next(x for x in report.lines if x.startswith("  recommend"))
    assert line.startswith(f"  recommend  {len(both)} pairs compared: RMSE {p.rmse:.4g}, "
                           f"Pearson {p.pearson:.4g}, Spearman {p.spearman:.4g}")


def test_prediction_plot_is_the_binned_pairs(run, case):
    _, _, files = run
    both = common_pairs(case)
    want = grid_oracle(both.predicted_rating_b, both.predicted_rating_r)
    assert density_cells(files["predictions.svg"]) == want
    assert sum(want.values()) == len(both)


def test_counts(run, case):
    _, t, _ = run
    c = t["compare_counts"].set_index("what")
    bq, rec = case["bq_mean"], case["rec_mean"]

    def row(b, r):
        b, r = set(b), set(r)
        return [len(b), len(r), len(b & r), len(b - r), len(r - b)]

    assert c.loc["recommend users"].tolist() == row(bq.user_id, rec.user_id) == [5, 5, 4, 1, 1]
    assert c.loc["recommend items"].tolist() == row(bq.item_id, rec.item_id)
    pairs = (list(zip(bq.user_id, bq.item_id)), list(zip(rec.user_id, rec.item_id)))
    assert c.loc["recommend (user, item) pairs"].tolist() == row(*pairs)
    assert c.loc["top-k users"].tolist() == row(bq.user_id, case["rec_top"])
    for kind, name in (("user_id", "weights users"), ("item_id", "weights items")):
        assert c.loc[name].tolist() == row(case["b_ints"][kind], case["r_ints"][kind])
    assert c.loc["training iterations"][["bqml", "recsys", "compared"]].tolist() == [4, 6, 4]
    assert c.loc["training iterations"][["bqml_only", "recsys_only"]].isna().all()


# --- ML.EVALUATE and ML.TRAINING_INFO ----------------------------------------------------------

def test_metrics_with_one_sided_metrics(run, case):
    _, t, files = run
    bq = {"mean_absolute_error": 0.5, "mean_squared_error": 0.4, "r2_score": 0.7,
          "average_rank": 0.25, "a_custom_metric": 1.5}
    rec = case["recsys_eval"]
    # BigQuery ML's explicit then implicit metrics in its order, then any other by name.
    order = ["mean_absolute_error", "mean_squared_error", "r2_score", "explained_variance",
             "average_rank", "a_custom_metric"]
    m = t["compare_metrics"]
    assert m.metric.tolist() == order
    for row in m.itertuples():
        b, r = bq.get(row.metric), rec.get(row.metric)
        assert row.bqml == pytest.approx(b) if b is not None else pd.isna(row.bqml)
        assert row.recsys == pytest.approx(r) if r is not None else pd.isna(row.recsys)
        cells = md_row(files["report.md"], row.metric)
        if b is None or r is None:
            assert pd.isna(row.difference) and cells[2:] == ["NULL", "NULL"]
        else:
            assert row.difference == pytest.approx(r - b, abs=1e-15)
            assert cells[3] == f"{100 * (r - b) / b:+.2f}%"


def test_training_last_run_and_its_plot(run, case):
    _, t, files = run
    last = [x for x in case["bq_train"] if x["training_run"] == 1]
    tr = t["compare_training"].sort_values("iteration")
    assert tr.iteration.tolist() == list(range(6))
    for row in tr.itertuples():
        b = next((x for x in last if x["iteration"] == row.iteration), None)
        assert row.recsys_loss == pytest.approx(0.9 - 0.07 * row.iteration)
        assert pd.isna(row.recsys_eval_loss)
        if b is None:
            assert pd.isna(row.bqml_loss) and pd.isna(row.bqml_eval_loss)
        else:
            assert row.bqml_loss == pytest.approx(b["loss"])
            assert row.bqml_eval_loss == pytest.approx(b["eval_loss"])
    root = ET.fromstring(files["loss.svg"])
    left, top, width, height = plot_area(root)
    series = {"#1f77b4": [(x["iteration"], x["loss"]) for x in last],
              "#d62728": [(it, 0.9 - 0.07 * it) for it in range(6)],
              "#2ca02c": [(x["iteration"], x["eval_loss"]) for x in last]}
    ys = [y for points in series.values() for _, y in points]
    for color, points in series.items():
        drawn = [c for c in root.iter(SVG + "circle") if c.get("fill") == color]
        assert [c.find(SVG + "title").text for c in drawn] == [
            f"{x:.4g}: {y:.4g}" for x, y in points]
        for c, (x, y) in zip(drawn, points):
            assert float(c.get("cx")) == pytest.approx(left + x / 5 * width, abs=0.01)
            assert float(c.get("cy")) == pytest.approx(
                top + height - (y - min(ys)) / (max(ys) - min(ys)) * height, abs=0.01)
    assert not [c for c in root.iter(SVG + "circle") if c.get("fill") == "#9467bd"]


# --- ML.WEIGHTS --------------------------------------------------------------------------------

def test_intercept_differences_and_statistics(run, case):
    _, t, files = run
    ic, md = t["compare_intercepts"], files["report.md"]
    g = ic[ic.processed_input.isna()].iloc[0]
    assert (g.bqml, g.recsys, g.difference) == (3.6, 3.5, pytest.approx(3.5 - 3.6))
    assert md_row(md, "number of factors") == ["3", "2", "-1"]
    for kind, label in (("user_id", "user"), ("item_id", "item")):
        b = pd.Series(case["b_ints"][kind])
        r = pd.Series(case["r_ints"][kind])
        b.index, r.index = b.index.astype(str), r.index.astype(str)
        common = sorted(set(b.index) & set(r.index))
        diff = r[common] - b[common]
        got = ic[ic.processed_input == kind].set_index("feature").sort_index()
        assert list(got.index) == sorted(common)
        assert got.difference.tolist() == pytest.approx(diff[got.index].tolist(), abs=1e-12)
        assert got.bqml.tolist() == b[got.index].tolist()
        assert len(set(b[common])) < len(common)  # tied intercepts
        n, rmse, mean_diff, pearson = md_row(md, f"{label} intercepts")
        assert int(n) == len(common)
        assert num(rmse) == pytest.approx(np.sqrt(np.mean(diff ** 2)), rel=1e-5)
        assert num(mean_diff) == pytest.approx(np.mean(diff), rel=1e-5)
        assert num(pearson) == pytest.approx(np.corrcoef(b[common], r[common])[0, 1], rel=1e-5)
        assert density_cells(files[f"intercepts_{label}.svg"]) == grid_oracle(b[common],
                                                                              r[common])


# --- top k -------------------------------------------------------------------------------------

def test_topk_lists_ties_and_overlap(run, case):
    _, t, files = run
    want_b, want_r = ranked_lists(case["bq_mean"]), case["rec_top"]
    assert want_b[1][:2] == [9, 10] and want_b[2] == [1, 2, 9]  # 9 before 10: as numbers
    top = t["compare_topk"].set_index("user")
    assert sorted(top.index) == sorted(str(u) for u in want_b)
    overlaps = []
    for u, a in want_b.items():
        b = want_r.get(u, [])
        row = top.loc[str(u)]
        assert list(row.bqml_items) == [str(i) for i in a]
        inter, union = len(set(a) & set(b)), len(set(a) | set(b))
        assert row.overlap == inter and row.overlap_at_k == pytest.approx(inter / K)
        assert row.jaccard == pytest.approx(inter / union)
        assert row.same_set == (set(a) == set(b)) and row.same_order == (a == b)
        overlaps.append(inter)
    dist = [overlaps.count(n) for n in range(K + 1)]
    drawn = bars(files["overlap.svg"])
    assert [(cat, int(value)) for cat, value, _ in drawn] == [(str(n), c) for n, c in
                                                              enumerate(dist)]
    tallest = max(h for _, _, h in drawn)
    assert [h / tallest for _, _, h in drawn] == pytest.approx([c / max(dist) for c in dist],
                                                               abs=1e-3)
    s = t["compare_topk_summary"].iloc[0]
    assert s.mean_overlap_at_k == pytest.approx(np.mean(overlaps) / K)
    assert s.identical_sets == sum(set(a) == set(want_r.get(u, [])) for u, a in want_b.items())
    assert s.identical_order == sum(a == want_r.get(u) for u, a in want_b.items())


def test_topk_popularity_and_coverage(run, case):
    _, t, _ = run
    s = t["compare_topk_summary"].iloc[0]
    want_b, want_r = ranked_lists(case["bq_mean"]), case["rec_top"]
    counts = case["ratings"].groupby("item_id").size()
    assert (s.users_compared, s.users_bqml_only, s.users_recsys_only) == (5, 1, 1)
    assert s.catalogue_size == len(counts) == 10
    for side, lists in (("bqml", want_b), ("recsys", want_r)):
        recs = [i for u in want_b for i in lists.get(u, [])]  # users of BigQuery ML's table
        pops = [int(counts.get(i, 0)) for i in recs]
        assert s[f"{side}_distinct_items"] == len(set(recs))
        assert s[f"{side}_coverage"] == pytest.approx(len(set(recs)) / len(counts))
        assert s[f"{side}_mean_rating_count"] == pytest.approx(np.mean(pops))
        assert s[f"{side}_median_rating_count"] == pytest.approx(np.median(pops))


def test_html_page_inlines_every_plot_as_written(run):
    _, _, files = run
    plots = sorted(name for name in files if name.endswith(".svg"))
    assert plots == ["intercepts_item.svg", "intercepts_user.svg", "loss.svg", "overlap.svg",
                     "predictions.svg"]
    for name in plots:
        assert files[name].strip() in files["report.html"]
