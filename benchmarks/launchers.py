"""One job under `python` and under `spark-submit` (local mode), in one run; prints one JSON line.

    python benchmarks/launchers.py --config conf/local.yaml
    python benchmarks/launchers.py --config conf/bench.yaml \
        --set source.ratings=/tmp/recsys-bench/data/ml-1m-seed0/ratings.dat

Each launcher runs `jobs/pipeline.py` in a fresh process (the order alternates over --repeat
rounds, so drift on a busy machine hits both), with a sink folder of its own. Reported per
launcher: wall seconds from the launch to the exit, and each stage's seconds as the job's
progress lines print them ("pipeline: recommend done in 4.2s"). `spark-submit` is the one next to
this interpreter (pip's pyspark), given PYSPARK_PYTHON as README shows.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_LINE = re.compile(r"pipeline: (\w+) done in ([0-9.]+)s")


def run(launcher: str, config: str, overrides, sink: str) -> dict:
    """Wall seconds and stage seconds of one pipeline run."""
    script = os.path.join(REPO, "jobs", "pipeline.py")
    args = ["--config", config, "--set", f"sink.path={sink}"]
    for item in overrides:
        args += ["--set", item]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    if launcher == "python":
        cmd = [sys.executable, script, *args]
    else:
        cmd = [os.path.join(os.path.dirname(sys.executable), "spark-submit"), script, *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{launcher} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    # spark-submit's PythonRunner merges the job's stderr (progress lines) into its stdout.
    output = done.stderr + done.stdout
    stages = {m.group(1): float(m.group(2)) for m in STAGE_LINE.finditer(output)}
    return {"wall_s": round(wall, 2), **{f"{k}_s": v for k, v in stages.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    results = {"python": [], "spark-submit": []}
    with tempfile.TemporaryDirectory(prefix="recsys-launchers-") as tmp:
        for round_ in range(args.repeat):
            order = ["python", "spark-submit"] if round_ % 2 == 0 else ["spark-submit", "python"]
            for launcher in order:
                sink = os.path.join(tmp, f"{launcher}-{round_}")
                results[launcher].append(run(launcher, args.config, args.overrides, sink))
    best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in results.items()}
    best["spark_submit_vs_python"] = round(best["spark-submit"]["wall_s"]
                                           / best["python"]["wall_s"], 2)
    print(json.dumps(best), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
