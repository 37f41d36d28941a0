"""Each hand-written part against the library that could replace it (docs/development.md).

    python benchmarks/libraries.py config     # needs pydantic (a venv of its own, not .venv)
    python benchmarks/libraries.py plots      # needs matplotlib (likewise)
    python benchmarks/libraries.py ranking --ratings data/ml-latest-small/ratings.csv

``config``: recsys.config's schema ported to pydantic v2 by rewriting schema.py's source
(each frozen dataclass a ``BaseModel`` with ``frozen=True, extra="forbid", strict=True``), put
in place of the loader's YAML-to-dataclass build; then tests/test_config.py's bad-config cases
are loaded through it with pydantic's own message and with an adapter that rewrites pydantic's
first error into the loader's one line. Counts the cases whose expected message appears.

``plots``: the compare report's three plot kinds (a 3-series loss curve, a 40 x 40 density, an
overlap bar chart) by ``recsys.compare.svg`` and by matplotlib's SVG backend: render time,
whether two processes give the same bytes (default, and with ``svg.hashsalt`` and no
``Date``), and whether the marks the report tests read back are there.

``ranking``: held-out top-10 lists (the quality.py protocol: random 80/20 split, seed 42, the
tutorial options) scored by ``recsys.evaluation.ranking.ranking_metrics`` and by pyspark.ml's
RankingEvaluator, then ML.EVALUATE's implicit MAP and NDCG of an implicit model by
``model_implicit_metrics`` and by RankingEvaluator / RankingMetrics on every user's full ranked
list. Values and seconds, one JSON object per line.
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _print(**row):
    print(json.dumps(row), flush=True)


# --- config ------------------------------------------------------------------------------------



def _config_cases():
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import test_config

    mark = next(m for m in test_config.test_errors_are_one_clear_line.pytestmark
                if m.name == "parametrize")
    return list(mark.args[1])


PORT_HEADER = '''
from typing import Annotated
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _conf_in(value):
    if isinstance(value, dict):
        return {str(k): ("true" if v is True else "false" if v is False else str(v))
                for k, v in value.items()}
    return {} if value is None else value


Floats = Annotated[Tuple[float, ...], Field(strict=False, min_length=1)]
Ints = Annotated[Tuple[int, ...], Field(strict=False, min_length=1)]
Strs = Annotated[Tuple[str, ...], Field(strict=False, min_length=1)]
'''


def pydantic_schema_source() -> str:
    """recsys/config/schema.py with each frozen dataclass a pydantic model."""
    with open(os.path.join(REPO, "recsys", "config", "schema.py"), encoding="utf-8") as fh:
        s = fh.read()
    s = s.replace("from dataclasses import dataclass, field\n", "")
    s = s.replace("\n\n@dataclass(frozen=True)\nclass RatingColumns",
                  PORT_HEADER + "\n\n@dataclass(frozen=True)\nclass RatingColumns", 1)
    s = re.sub(r"@dataclass\(frozen=True\)\nclass (\w+):", r"class \1(_Base):", s)
    s = s.replace("field(default_factory=lambda: types.MappingProxyType({}))",
                  "Field(default_factory=lambda: types.MappingProxyType({}))")
    s = s.replace("conf: Mapping[str, str]", "conf: Annotated[Mapping[str, str], BeforeValidator("
                  "_conf_in), AfterValidator(types.MappingProxyType)]")
    s = re.sub(r"field\(default_factory=(\w+)\)", r"Field(default_factory=\1)", s)
    s = re.sub(r"(num_factors): Tuple\[int, \.\.\.\]", r"\1: Ints", s)
    s = re.sub(r"(l2_reg|reg_param|wals_alpha): Tuple\[float, \.\.\.\]", r"\1: Floats", s)
    s = s.replace("intercept_l2_reg: Tuple[float, ...] = ()",
                  "intercept_l2_reg: Annotated[Tuple[float, ...], Field(strict=False)] = ()")
    s = s.replace("Union[str, Tuple[str, ...]]", "Union[str, Strs]")
    return s


ADAPTER = '''
import difflib
import pydantic
from recsys.errors import ConfigError

KINDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
         "float_type": "a number", "bool_type": "true or false", "string_type": "a string"}


def one_line(exc, root):
    """pydantic's first error as the loader's one line, naming the dotted key."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]  # union branches
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        cls = root
        for part in loc[:-1]:
            cls = cls.model_fields[part].annotation
        names = list(cls.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        hint = (f" (did you mean '{prefix}{close[0]}'?)" if close
                else f" (known: {', '.join(names)})")
        return f"unknown config key '{key}'{hint}"
    if err["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"'{key or 'config'}' must be a mapping, got {type(err['input']).__name__}"
    if err["type"] == "too_short":
        return f"config key '{key}' must be a non-empty list, got {err['input']!r}"
    if err["type"] in KINDS:
        return f"config key '{key}' must be {KINDS[err['type']]}, got {err['input']!r}"
    return f"config key '{key}': {err['msg']}, got {err['input']!r}"


def build(root, raw):
    try:
        return root.model_validate(raw or {})
    except pydantic.ValidationError as exc:
        raise ConfigError(one_line(exc, root)) from None
'''


def _code_lines(text: str) -> int:
    """Lines that are not blank, comments or docstring-only lines."""
    import ast
    import io
    import tokenize

    doc_lines = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    code = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER, tokenize.STRING):
            code.update(range(tok.start[0], tok.end[0] + 1))
        elif tok.type == tokenize.STRING and tok.start[0] not in doc_lines:
            code.update(range(tok.start[0], tok.end[0] + 1))
    return len(code - doc_lines)


def run_config(args) -> int:
    import tempfile
    import types

    import pydantic

    from recsys.config import loading
    from recsys.errors import ConfigError

    schema = types.ModuleType("pydantic_schema")
    sys.modules["pydantic_schema"] = schema  # pydantic resolves the string annotations here
    exec(compile(pydantic_schema_source(), "pydantic_schema", "exec"), schema.__dict__)
    adapter = types.ModuleType("pydantic_adapter")
    exec(compile(ADAPTER, "pydantic_adapter", "exec"), adapter.__dict__)
    cases = _config_cases()

    in_build = []  # cases whose error the build step raised (the part a library replaces)

    def load(text, overrides, mode):
        original = loading._build
        build = {"recsys": original,
                 "pydantic": lambda cls, raw, prefix: schema.Config.model_validate(raw or {}),
                 "adapter": lambda cls, raw, prefix: adapter.build(schema.Config, raw)}[mode]

        def traced(cls, raw, prefix):
            try:
                return build(cls, raw, prefix)
            except Exception:
                if not prefix:  # the outermost call (recsys's build recurses into sections)
                    in_build.append(True)
                raise

        loading._build = traced
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
                if not ("ratings" in text or text.startswith("source")):
                    text = "source:\n  ratings: r.csv\n" + text
                fh.write(text)
            return loading.load_config(fh.name, overrides)
        finally:
            loading._build = original
            os.unlink(fh.name)

    for mode in ("recsys", "pydantic", "adapter"):
        matched, one_line, failures = 0, 0, []
        in_build.clear()
        for text, overrides, want in cases:
            try:
                load(text, overrides, mode)
                got = "(accepted)"
            except (ConfigError, pydantic.ValidationError) as exc:
                got = str(exc)
            matched += want in got
            one_line += want in got and "\n" not in got
            if want not in got or "\n" in got:
                failures.append({"want": want, "got": got.splitlines()[:3]})
        build_raised = len(in_build)
        good = load("source:\n  ratings: r.csv\n", ["spark.conf.spark.sql.shuffle.partitions=4",
                                                   "tuning.l2_reg=[1, 2]"], mode)
        try:
            good.model.__setattr__("num_factors", 3)
            frozen = "no error"
        except Exception as exc:  # noqa: BLE001 - the kind is the measurement
            frozen = type(exc).__name__
        _print(part="config", loader=mode, cases=len(cases), raised_by_build=build_raised,
               message_found=matched,
               message_found_on_one_line=one_line, assignment_raises=frozen,
               spark_conf=dict(good.spark.conf), tuning_l2_reg=list(good.tuning.l2_reg),
               failures=failures if args.verbose else len(failures))

    with open(os.path.join(REPO, "recsys", "config", "loading.py"), encoding="utf-8") as fh:
        loading_src = fh.read()
    with open(os.path.join(REPO, "recsys", "config", "schema.py"), encoding="utf-8") as fh:
        schema_src = fh.read()
    import ast
    tree = ast.parse(loading_src)
    build_part = "\n".join(ast.get_source_segment(loading_src, n) for n in tree.body
                           if isinstance(n, ast.FunctionDef)
                           and n.name in ("_build", "_coerce", "_is_mapping", "_scalar_str"))
    _print(part="config", code_lines={
        "recsys schema.py": _code_lines(schema_src),
        "pydantic schema.py": _code_lines(pydantic_schema_source()),
        "recsys build (_build, _coerce, _is_mapping, _scalar_str)": _code_lines(build_part),
        "pydantic build + one-line adapter": _code_lines(ADAPTER)},
        pydantic=pydantic.VERSION)
    return 0


# --- plots -------------------------------------------------------------------------------------

def _plot_data():
    import numpy as np

    rng = np.random.default_rng(5)
    its = list(range(21))
    loss = [("BigQuery ML loss", its, [0.9 * 0.93 ** i + 0.35 for i in its]),
            ("recsys loss", its, [0.88 * 0.93 ** i + 0.36 for i in its]),
            ("BigQuery ML eval_loss", its, [0.95 * 0.95 ** i + 0.5 for i in its])]
    a = rng.normal(3.5, 0.9, 60000)
    b = a + rng.normal(0, 0.3, a.size)
    counts, _, _ = np.histogram2d(a, b, bins=40, range=[[0.5, 5.5], [0.5, 5.5]])
    overlaps = [int(v) for v in np.bincount(rng.binomial(5, 0.45, 671), minlength=6)]
    return loss, counts.astype(int).tolist(), overlaps


def _recsys_plots(loss, counts, overlaps):
    from recsys.compare import svg

    return [svg.line_chart(loss, title="Training loss by iteration", xlabel="iteration",
                           ylabel="loss"),
            svg.density(counts, (0.5, 5.5), (0.5, 5.5), title="Predicted rating",
                        xlabel="BigQuery ML", ylabel="recsys"),
            svg.bar_chart([str(i) for i in range(6)], overlaps, title="overlap",
                          xlabel="overlap", ylabel="users")]


def _matplotlib_plots(loss, counts, overlaps, fixed):
    import io

    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    import numpy as np

    if fixed:
        matplotlib.rcParams["svg.hashsalt"] = "recsys"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as <text>, not glyph paths
    out = []
    metadata = {"Date": None} if fixed else None

    def save(fig):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata=metadata)
        plt.close(fig)
        out.append(buf.getvalue())

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, xs, ys in loss:
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set(title="Training loss by iteration", xlabel="iteration", ylabel="loss")
    ax.legend()
    save(fig)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    grid = np.array(counts, dtype=float).T
    ax.pcolormesh(np.linspace(0.5, 5.5, 41), np.linspace(0.5, 5.5, 41),
                  np.ma.masked_equal(grid, 0), norm=LogNorm(), cmap="Blues")
    ax.plot([0.5, 5.5], [0.5, 5.5], "--", color="#d62728")
    ax.set(title="Predicted rating", xlabel="BigQuery ML", ylabel="recsys")
    save(fig)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    bars = ax.bar([str(i) for i in range(6)], overlaps, color="#1f77b4")
    ax.bar_label(bars)
    ax.set(title="overlap", xlabel="overlap", ylabel="users")
    save(fig)
    return out


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def _readback(text):
    """What the report tests read: marks with a <title>, circles, <text> holding a value."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(text)
    return {"titles": sum(1 for _ in root.iter(ns + "title")),
            "circles": sum(1 for _ in root.iter(ns + "circle")),
            "rects": sum(1 for _ in root.iter(ns + "rect")),
            "texts": sum(1 for _ in root.iter(ns + "text"))}


def run_plots(args) -> int:
    data = _plot_data()
    if args.emit:  # one process's bytes, for the determinism check
        plots = (_recsys_plots(*data) if args.emit == "recsys"
                 else _matplotlib_plots(*data, fixed=args.emit == "matplotlib-fixed"))
        print(json.dumps([hashlib.sha256(p.encode()).hexdigest()[:16] for p in plots]))
        return 0
    import matplotlib

    start = time.perf_counter()
    import matplotlib.pyplot  # noqa: F401 - the import is timed
    _print(part="plots", matplotlib=matplotlib.__version__,
           pyplot_import_ms=round((time.perf_counter() - start) * 1000, 1))
    _matplotlib_plots(*data, fixed=True)  # warm: fonts, caches
    for name, fn in (("recsys.compare.svg", lambda: _recsys_plots(*data)),
                     ("matplotlib svg", lambda: _matplotlib_plots(*data, fixed=True))):
        plots = fn()
        same = []
        for emit in (["recsys"] if name.startswith("recsys") else
                     ["matplotlib-default", "matplotlib-fixed"]):
            runs = [subprocess.run([sys.executable, __file__, "plots", "--emit", emit],
                                   capture_output=True, text=True, check=True).stdout
                    for _ in range(2)]
            same.append(f"{emit}: {'same bytes' if runs[0] == runs[1] else 'differ'}")
        _print(part="plots", renderer=name, three_plots_ms=_median_ms(fn, args.repeats),
               bytes=[len(p.encode()) for p in plots], two_processes=same,
               readback={kind: _readback(p) for kind, p in zip(("loss", "density", "bars"),
                                                                 plots)})
    return 0


# --- ranking -----------------------------------------------------------------------------------

def _evaluator_frame(top, relevant, col_user="user_id", col_item="item_id", how="inner"):
    """RankingEvaluator's input: per user the ranked item list and the relevant item set."""
    from pyspark.sql import functions as F

    ranked = top.groupBy(col_user).agg(
        F.sort_array(F.collect_list(F.struct("rank", col_item))).alias("_l"))
    ranked = ranked.select(col_user, F.transform("_l", lambda s: s[col_item].cast("double"))
                           .alias("prediction"))
    labels = relevant.groupBy(col_user).agg(
        F.collect_list(F.col(col_item).cast("double")).alias("label"),
        F.collect_list(F.col("rating").cast("double")).alias("relevance"))
    frame = ranked.join(labels, col_user, how)
    return frame.select("prediction",
                        F.coalesce("label", F.array().cast("array<double>")).alias("label"),
                        F.coalesce("relevance", F.array().cast("array<double>"))
                        .alias("relevance"))


def run_ranking(args) -> int:
    from pyspark.ml.evaluation import RankingEvaluator
    from pyspark.mllib.evaluation import RankingMetrics

    from recsys.config import IngestConfig, ModelConfig, SourceConfig
    from recsys.evaluation.implicit_metrics import metrics_dict, model_implicit_metrics
    from recsys.evaluation.ranking import ranking_metrics, recommend_unseen
    from recsys.model import fit
    from recsys.model.recommend import ranked_top_k
    from recsys.model.split import split_ratings
    from recsys.session import build_session
    from recsys.sources.ingest import ingest

    k = 10
    spark = build_session(extra_conf={"spark.sql.shuffle.partitions": "4"})
    try:
        ratings = ingest(spark, SourceConfig(format="ml-latest", ratings=args.ratings),
                         IngestConfig(max_reject_fraction=1)).ratings
        ratings = ratings.select("user_id", "item_id", "rating").cache()
        parts = split_ratings(ratings, method="RANDOM", eval_fraction=0.2, seed=42)
        train, test = parts.train.cache(), parts.eval.cache()
        model = fit(train, ModelConfig(num_factors=34, l2_reg=9.83, seed=42))
        top = recommend_unseen(model, train, test.select("user_id"), k=k).cache()
        top.count()

        start = time.perf_counter()
        ours = ranking_metrics(top, test, train, k=k)
        ours_s = time.perf_counter() - start
        relevant = test.where("rating >= 4").select("user_id", "item_id", "rating").distinct()
        for how in ("inner", "left"):
            start = time.perf_counter()
            frame = _evaluator_frame(top, relevant, how=how).cache()
            theirs = {name: RankingEvaluator(metricName=metric, k=k).evaluate(frame)
                      for name, metric in (("precision_at_k", "precisionAtK"),
                                           ("recall_at_k", "recallAtK"),
                                           ("ndcg_at_k", "ndcgAtK"),
                                           ("map_at_k", "meanAveragePrecisionAtK"))}
            theirs_s = time.perf_counter() - start
            users = frame.count()
            frame.unpersist()
            _print(part="ranking", case=f"held-out top-{k}", users_given=users,
                   evaluator_users="with a relevant item" if how == "inner"
                   else "every test user (no relevant item: 0)",
                   recsys={n: ours[n] for n in theirs}, recsys_ranked_users=ours["ranked_users"],
                   evaluator=theirs,
                   max_abs_difference=max(abs(ours[n] - theirs[n]) for n in theirs),
                   recsys_seconds=round(ours_s, 2), evaluator_seconds=round(theirs_s, 2))

        # ML.EVALUATE of an implicit model on its training data (as the pipeline runs it).
        implicit = fit(ratings, ModelConfig(num_factors=34, l2_reg=9.83, seed=42,
                                            feedback_type="implicit"))
        start = time.perf_counter()
        ours = metrics_dict(model_implicit_metrics(implicit, ratings))
        ours_s = time.perf_counter() - start
        n_items = implicit.items.count()
        start = time.perf_counter()
        full = ranked_top_k(implicit, k=n_items, users=ratings.select("user_id"),
                            col_prediction="score").withColumnRenamed("_rank", "rank")
        frame = _evaluator_frame(full, ratings).cache()
        users = frame.count()
        theirs = {"mean_average_precision":
                  RankingEvaluator(metricName="meanAveragePrecision").evaluate(frame),
                  "ndcg_binary_gain":
                  RankingEvaluator(metricName="ndcgAtK", k=n_items).evaluate(frame)}
        theirs_s = time.perf_counter() - start
        graded = RankingMetrics(frame.select("prediction", "label", "relevance").rdd
                                .map(tuple)).ndcgAt(n_items)
        frame.unpersist()
        _print(part="ranking", case="implicit ML.EVALUATE, full list", users=users,
               items_per_list=n_items,
               recsys={"mean_average_precision": ours["mean_average_precision"],
                       "normalized_discounted_cumulative_gain":
                       ours["normalized_discounted_cumulative_gain"],
                       "average_rank": ours["average_rank"]},
               evaluator=theirs, mllib_ndcg_with_rating_relevance=graded,
               recsys_seconds=round(ours_s, 2), evaluator_seconds=round(theirs_s, 2),
               evaluator_input="one row per user, %d-item array (%.1f MB of item ids)"
               % (n_items, users * n_items * 8 / 1e6))
    finally:
        spark.stop()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    cfg = sub.add_parser("config", help="pydantic v2 in place of the config loader")
    cfg.add_argument("--verbose", action="store_true", help="print the unmatched messages")
    plots = sub.add_parser("plots", help="matplotlib in place of recsys.compare.svg")
    plots.add_argument("--repeats", type=int, default=20)
    plots.add_argument("--emit", choices=["recsys", "matplotlib-default", "matplotlib-fixed"],
                       help=argparse.SUPPRESS)
    ranking = sub.add_parser("ranking", help="RankingEvaluator in place of the ranking metrics")
    ranking.add_argument("--ratings", default=os.path.join(REPO, "data", "ml-latest-small",
                                                           "ratings.csv"))
    args = parser.parse_args(argv)
    return {"config": run_config, "plots": run_plots, "ranking": run_ranking}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
