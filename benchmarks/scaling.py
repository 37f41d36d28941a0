"""How the ``bigquery_ml`` fit scales: per-iteration time, shuffle bytes and executor memory at
several sizes, in local mode or on a real standalone cluster of N single-core workers.

    python benchmarks/scaling.py --sizes 1m 5m 25m                  # local[2], one run a size
    python benchmarks/scaling.py --sizes 25m --workers 1 2          # standalone: 1, then 2 workers
    python benchmarks/scaling.py --sizes 25m --set model.broadcast_max_mb=0   # the join path
    python benchmarks/scaling.py --plot runs.jsonl --svg docs/scaling.svg

Each run is a process of its own, launched with spark-submit as on Dataproc (``--py-files`` a
zip of recsys): it reads synthetic MovieLens-shaped ratings (``benchmarks/synthetic.py``, written
once as Parquet into --data-dir, not timed), fits them with conf/bench.yaml's model (NUM_FACTORS
34, L2_REG 9.83, 10 iterations, no early stop) and prints one JSON line:

- ``iteration_s``: every iteration's seconds (ML.TRAINING_INFO's ``duration_ms``), and their
  median over iterations 2.. (the first carries the blocks' first use);
- ``describe_s``, ``index_s``, ``setup_s`` (blocks, start: the fit minus its iterations);
- ``shuffle_write_mb_per_iteration``: Spark's shuffle write between two iterations' ends (the
  REST API's completed stages), median over iterations 2..;
- ``executors``: each executor's peak JVM heap and its process tree's JVM and Python RSS (Spark's
  executor metrics, ``spark.executor.processTreeMetrics.enabled``; read after one heartbeat);
- the load average before and after.

Sizes: ``1m`` is ML-1M's shape, ``25m`` ML-25M's, ``5m`` ML-25M's divided by five (5,000,019
ratings, 32,508 users, 11,809 items); ``R,U,I`` any other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import synthetic  # noqa: E402  (benchmarks/synthetic.py)
from standalone import spark_submit, standalone_cluster, zip_recsys  # noqa: E402

SIZES = {"1m": synthetic.SHAPES["ml-1m"],
         "5m": synthetic.Shape(n_ratings=5_000_019, n_users=32_508, n_items=11_809),
         "25m": synthetic.SHAPES["ml-25m"]}


def shape_of(name: str) -> synthetic.Shape:
    return SIZES[name] if name in SIZES else synthetic.parse_shape(name)


def ensure_parquet(name: str, seed: int, data_dir: str) -> str:
    """The size's synthetic ratings as one Parquet file, generated on first use."""
    folder = os.path.join(data_dir, f"scaling-{name.replace(',', '_')}-seed{seed}")
    path = os.path.join(folder, "ratings.parquet")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        synthetic.write_parquet(path + ".tmp", synthetic.generate(shape_of(name), seed=seed))
        os.replace(path + ".tmp", path)
    return path


def _get(api: str, what: str):
    with urllib.request.urlopen(f"{api}/{what}", timeout=30) as resp:
        return json.load(resp)


def _shuffle_write(api: str) -> int:
    return sum(s.get("shuffleWriteBytes", 0) for s in _get(api, "stages?status=complete"))


def fit_run(ratings: str, iterations: int, checkpoint_dir: str, overrides=()) -> dict:
    """The child: fit ``ratings`` in the session spark-submit set up; the figures as a dict.
    ``overrides``: ``--set`` values for conf/bench.yaml (``model.broadcast_max_mb=0`` forces
    the join path)."""
    from recsys.config import SparkConfig, load_config
    from recsys.model import fit
    from recsys.session import build_session

    cfg = load_config(os.path.join(REPO, "conf", "bench.yaml"), [
        f"source.ratings={ratings}", f"model.max_iterations={iterations}", *overrides])
    spark = build_session(SparkConfig(app_name="recsys-scaling", log_level="ERROR",
                                      checkpoint_dir=checkpoint_dir))
    sc = spark.sparkContext
    api = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}"
    table = spark.read.parquet(ratings).select("user_id", "item_id", "rating")
    marks = []  # (clock, shuffle bytes written so far) at the end of each iteration

    def progress(_text: str) -> None:
        marks.append((time.perf_counter(), _shuffle_write(api)))

    model = fit(table, cfg.model, progress=progress)
    time.sleep(12)  # one executor heartbeat (10 s) carries the last peaks
    names = {"jvm_heap_mb": "JVMHeapMemory", "jvm_rss_mb": "ProcessTreeJVMRSSMemory",
             "python_rss_mb": "ProcessTreePythonRSSMemory"}
    executors = {}
    for e in _get(api, "allexecutors"):
        peaks = e.get("peakMemoryMetrics", {})
        executors[e["id"]] = {**{key: peaks.get(metric, 0) >> 20 for key, metric in names.items()},
                              "cores": e.get("totalCores")}
    spark.stop()
    seconds = [row["duration_ms"] / 1000 for row in model.training_info]
    shuffled = [b - a for (_, a), (_, b) in zip(marks, marks[1:])]
    t = model.timings
    return {
        "n_ratings": model.data["n_rows"], "n_users": model.data["n_users"],
        "n_items": model.data["n_items"], "num_blocks": model.options["num_blocks"],
        "path": model.options.get("solver_path"),
        "describe_s": round(t["describe"], 2), "index_s": round(t["index"], 2),
        "als_fit_s": round(t["als_fit"], 2), "setup_s": round(t["als_fit"] - sum(seconds), 2),
        "iteration_s": [round(s, 2) for s in seconds],
        "iteration_median_s": round(statistics.median(seconds[1:] or seconds), 2),
        "shuffle_write_mb_first_iteration_and_setup": round(marks[0][1] / 2 ** 20, 1),
        "shuffle_write_mb_per_iteration": round(statistics.median(shuffled) / 2 ** 20, 1)
        if shuffled else None,
        "executors": executors,
    }


def launch(master: str, ratings: str, args, env: dict, work: str) -> dict:
    """One run as a spark-submit process; its JSON line plus how it was run."""
    cmd = [spark_submit(), "--master", master, "--driver-memory", args.driver_memory,
           "--py-files", zip_recsys(work),
           "--conf", f"spark.pyspark.python={sys.executable}",
           "--conf", f"spark.pyspark.driver.python={sys.executable}",
           "--conf", "spark.executor.processTreeMetrics.enabled=true",
           "--conf", f"spark.executor.memory={args.executor_memory}",
           os.path.abspath(__file__), "--child", ratings, "--iterations", str(args.iterations),
           "--checkpoint-dir", os.path.join(work, "checkpoints"),
           *[f"--set={item}" for item in args.overrides]]
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # recsys from the zip only
    load = os.getloadavg()
    began = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({master}): {proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got.update(master=master, process_s=round(time.perf_counter() - began, 1),
               load_before=[round(x, 2) for x in load],
               load_after=[round(x, 2) for x in os.getloadavg()])
    return got


def plot(jsonl: str, svg: str) -> None:
    """Median iteration seconds against ratings (millions), one line per master and path."""
    sys.path.insert(0, REPO)
    from recsys.compare.svg import line_chart

    runs = [json.loads(line) for line in open(jsonl) if line.strip()]
    series = {}
    for run in sorted(runs, key=lambda r: r["n_ratings"]):
        series.setdefault(f"{run['label']}, {run['path']} path", []).append(
            (run["n_ratings"] / 1e6, run["iteration_median_s"]))
    Path(svg).write_text(line_chart(
        [(label, [x for x, _ in pts], [y for _, y in pts]) for label, pts in series.items()],
        title="bigquery_ml fit: seconds per iteration (NUM_FACTORS 34)",
        xlabel="ratings (millions)", ylabel="seconds per iteration (median)"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1m", "5m", "25m"])
    parser.add_argument("--workers", nargs="*", type=int, default=[],
                        help="standalone clusters of this many single-core workers "
                             "(none: local mode, --local-master)")
    parser.add_argument("--local-master", default="local[2]")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--executor-memory", default="6g")
    parser.add_argument("--worker-memory", default="7g")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="/tmp/recsys-bench/data")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="conf/bench.yaml override for every run")
    parser.add_argument("--out", help="append each run's JSON line to this file too")
    parser.add_argument("--plot", metavar="JSONL", help="plot the runs of JSONL into --svg")
    parser.add_argument("--svg", default="docs/scaling.svg")
    parser.add_argument("--child", metavar="RATINGS", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(fit_run(args.child, args.iterations, args.checkpoint_dir,
                                 args.overrides)), flush=True)
        return 0
    if args.plot:
        plot(args.plot, args.svg)
        return 0
    for size in args.sizes:
        ratings = ensure_parquet(size, args.seed, args.data_dir)
        with tempfile.TemporaryDirectory(prefix="recsys-scaling-") as work:
            if not args.workers:
                runs = [(f"local ({args.local_master})",
                         launch(args.local_master, ratings, args, dict(os.environ), work))]
            else:
                runs = []
                for n in args.workers:
                    with standalone_cluster(workers=n, cores=1, memory=args.worker_memory,
                                            work=Path(work) / f"cluster{n}") as (url, env):
                        runs.append((f"standalone, {n} x 1-core worker" + ("s" if n > 1 else ""),
                                     launch(url, ratings, args, env, work)))
        for label, run in runs:
            run.update(size=size, label=label, overrides=args.overrides)
            line = json.dumps(run)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
