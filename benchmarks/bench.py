"""Pipeline benchmark on synthetic MovieLens-shaped data; prints one JSON object.

    python benchmarks/bench.py --shape ml-1m
    python benchmarks/bench.py --shape ml-25m --set recommend.write_all_pairs=false \
        --set spark.conf.spark.driver.memory=12g
    python benchmarks/bench.py --shape ml-1m --set model.feedback_type=implicit --no-floor

Implicit feedback (``--set model.feedback_type=implicit``) treats the synthetic ratings as
interaction strengths; the bare script and the NumPy floors fit the explicit objective, so
their ratios compare an implicit run with explicit fits.

First the bare pyspark.ml ALS script (`benchmarks/bare_als.py`: load, fit the same rank and
iterations, RMSE, count recommendForAllUsers(5)) runs in a process of its own; its wall time,
JVM start included, is what the pipeline's total is compared with (``pipeline_vs_bare``).

Runs the tutorial's pipeline (conf/bench.yaml: ingest, train with NUM_FACTORS 34 / L2_REG 9.83,
10 iterations without early stop, evaluate, ML.RECOMMEND's all-pairs table, top-5) in this
process on `synthetic` data (generated once into --data-dir, not timed) with the
configured solver (``bigquery_ml``); then, in the same session, fits the other solver
(``spark_als``, pyspark.ml ALS) on the same ratings with the same rank and iterations; then the
single-core NumPy floors of both objectives (`benchmarks/floor.py`, OPENBLAS_NUM_THREADS=1) on
the same rows. Ratios compare fits measured in this one run.

Reported: wall seconds of Spark start-up and each stage (ingest, train, weights, evaluate,
recommend = the all-pairs table, top_k), the table writes within them (Spark is lazy: a write's
time includes computing what it writes), the ALS fit alone, the total from before the JVM
starts to the last write, and peak resident memory (sampled every 0.1 s from /proc) of the
Spark JVM (driver and executors are one JVM in local mode), of its Python workers together, and
of this driver process.
"""

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import synthetic  # noqa: E402  (benchmarks/synthetic.py, beside this script)
from recsys.runner.cli import session_conf  # noqa: E402
from recsys.config import load_config  # noqa: E402
from recsys.model import spark_reg_param  # noqa: E402


class PeakMemory(threading.Thread):
    """Samples the RSS of this process's descendants: the JVM and the Python workers."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval, self.jvm, self.workers, self.running = interval, 0, 0, True

    def run(self):
        while self.running:
            jvm = workers = 0
            for pid, name, rss in _descendants(os.getpid()):
                if name == "java":
                    jvm += rss
                elif name.startswith("python"):
                    workers += rss
            self.jvm, self.workers = max(self.jvm, jvm), max(self.workers, workers)
            time.sleep(self.interval)

    def stop(self):
        self.running = False
        self.join()


def _descendants(root: int):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{entry}/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # the process ended while being read
            continue
        children.setdefault(int(fields[1]), []).append((int(entry), name, rss))
    stack, found = [root], []
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def ensure_data(shape_name: str, seed: int, data_dir: str) -> str:
    """The synthetic ratings.dat for the shape, generated on first use."""
    folder = os.path.join(data_dir, f"{shape_name}-seed{seed}")
    path = os.path.join(folder, "ratings.dat")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        start = time.perf_counter()
        synthetic.write_dat(path + ".tmp", synthetic.generate(synthetic.SHAPES[shape_name],
                                                              seed=seed))
        os.replace(path + ".tmp", path)
        print(f"generated {path} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return path


def floor(path: str, objective: str, *, rank: int, l2_reg: float, reg_param: float,
          iterations: int) -> dict:
    """The single-core NumPy floor of one objective, in a process of its own."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "floor.py"), "--ratings", path,
         "--objective", objective, "--rank", str(rank), "--l2-reg", str(l2_reg),
         "--reg-param", str(reg_param), "--iterations", str(iterations)],
        env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bare_script(path: str, *, rank: int, iterations: int, driver_memory: str) -> dict:
    """benchmarks/bare_als.py in a process of its own: its figures and its peak memory."""
    memory = PeakMemory()
    memory.start()
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "bare_als.py"), "--ratings", path,
         "--rank", str(rank), "--iterations", str(iterations), "--driver-memory", driver_memory],
        check=True, capture_output=True, text=True).stdout
    memory.stop()
    got = json.loads(out.strip().splitlines()[-1])
    return {"bare_als_s": got["bare_als_s"], "bare_als_peak_rss_mb": {
        "spark_jvm": memory.jvm >> 20, "python": memory.workers >> 20}}


def other_solver_fit(spark, cfg, solver: str) -> dict:
    """Fit ``solver`` on the sink's ratings with the same options; its fit seconds."""
    from recsys.model import fit
    from recsys.sinks import make_sink

    ratings = make_sink(cfg).read(spark, "ratings")
    model_cfg = dataclasses.replace(cfg.model, solver=solver, training_info="final")
    model = fit(ratings, model_cfg)
    return {f"{solver}_fit_s": round(model.timings["als_fit"], 2),
            f"{solver}_train_s": round(model.timings["total"], 2),
            f"{solver}_training_loss": round(model.training_info[-1]["loss"], 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(synthetic.SHAPES), required=True)
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--data-dir", default="/tmp/recsys-bench/data")
    parser.add_argument("--config", default=os.path.join(REPO, "conf", "bench.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--no-floor", action="store_true", help="skip the NumPy floors")
    parser.add_argument("--floors", nargs="+", default=["bigquery_ml", "als_wr"],
                        choices=["bigquery_ml", "als_wr"], help="which NumPy floors to fit")
    parser.add_argument("--no-other-solver", action="store_true",
                        help="skip the second solver's fit")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare ALS script")
    args = parser.parse_args(argv)

    ratings = ensure_data(args.shape, args.seed, args.data_dir)
    cfg = load_config(args.config, [f"source.ratings={ratings}", *args.overrides])
    shutil.rmtree(os.path.join(cfg.sink.path, cfg.sink.dataset), ignore_errors=True)
    bare = {} if args.no_bare else bare_script(
        ratings, rank=cfg.model.num_factors, iterations=cfg.model.max_iterations,
        driver_memory=cfg.spark.conf.get("spark.driver.memory", "4g"))

    memory = PeakMemory()
    memory.start()
    start = time.perf_counter()
    from recsys.runner.pipeline import run_pipeline
    from recsys.session import build_session

    spark = build_session(cfg.spark, session_conf(cfg, "pipeline"))
    spark.range(1).count()  # the JVM and one task: start-up is done
    startup = time.perf_counter() - start
    try:
        report = run_pipeline(spark, cfg)
        total = time.perf_counter() - start
        other = "spark_als" if cfg.model.solver == "bigquery_ml" else "bigquery_ml"
        others = {} if args.no_other_solver else other_solver_fit(spark, cfg, other)
        conf = spark.sparkContext.getConf()
        settings = {key: conf.get(key, None) for key in (
            "spark.master", "spark.driver.memory", "spark.sql.shuffle.partitions",
            "spark.default.parallelism")}
    finally:
        spark.stop()
    memory.stop()

    m = cfg.model
    shape = synthetic.SHAPES[args.shape]
    result = {
        "shape": args.shape, "n_ratings": shape.n_ratings, "n_users": shape.n_users,
        "n_items": shape.n_items,
        "options": {"solver": m.solver, "feedback_type": m.feedback_type, "num_factors": m.num_factors, "l2_reg": m.l2_reg,
                    "max_iterations": m.max_iterations, "early_stop": m.early_stop,
                    "write_all_pairs": cfg.recommend.write_all_pairs},
        "spark_startup_s": round(startup, 2),
        **{f"{stage}_s": round(seconds, 2) for stage, seconds in report.timings.items()},
        **{f"{name}_s": round(seconds, 2) for name, seconds in report.details.items()},
        "total_s": round(total, 2),
        "peak_rss_mb": {"spark_jvm": memory.jvm >> 20, "python_workers": memory.workers >> 20,
                        "driver_python": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10},
        "spark": settings,
    }
    result.update(bare)
    if bare:
        result["pipeline_vs_bare"] = round(result["total_s"] / bare["bare_als_s"], 2)
    solver = cfg.model.solver
    result[f"{solver}_fit_s"] = result["train.als_fit_s"]
    result.update(others)
    if not args.no_floor:
        reg = m.reg_param if m.reg_param is not None else spark_reg_param(
            m.l2_reg, n_rows=shape.n_ratings, n_users=shape.n_users, n_items=shape.n_items)
        for objective in args.floors:
            got = floor(ratings, objective, rank=m.num_factors, l2_reg=m.l2_reg, reg_param=reg,
                        iterations=m.max_iterations)
            result[f"floor_{objective}_1core_s"] = got["fit_s"]
    if "bigquery_ml_fit_s" in result and "spark_als_fit_s" in result:
        result["bigquery_ml_vs_spark_als"] = round(
            result["bigquery_ml_fit_s"] / result["spark_als_fit_s"], 2)
    for name, objective in (("bigquery_ml", "bigquery_ml"), ("spark_als", "als_wr")):
        if f"{name}_fit_s" in result and f"floor_{objective}_1core_s" in result:
            result[f"{name}_vs_floor"] = round(
                result[f"{name}_fit_s"] / result[f"floor_{objective}_1core_s"], 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
