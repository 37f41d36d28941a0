"""A run is a unit: concurrent runs, killed runs and readers of a local warehouse (issue 17).

The jobs run as real processes (``jobs/pipeline.py``, or ``tests/barrier_run.py``, which stops
the same job at a named boundary, or inside a task of a table's write, until the test releases
or kills it: never by polling a folder and racing the writer). Expected tables come from
plain-Python readings of the source files; "unchanged" means equal, value by value, to what
pandas read from the warehouse before the run started.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, SAMPLE, copy_warehouse
from test_reliability import _plain

pytestmark = [pytest.mark.spark, pytest.mark.slow]
DATASET = "bqml_tutorial"
TABLES = ("ratings", "ratings_rejected", "movies", "movies_rejected", "training_info",
          "weights", "embeddings", "evaluate", "recommend", "recommend_top5")
BARRIER = os.path.join(REPO, "tests", "barrier_run.py")
PIPELINE = os.path.join(REPO, "jobs", "pipeline.py")


def source_file(folder, max_user):
    """The shipped sample's ratings of users 1..max_user (real ml-latest lines, CRLF)."""
    with open(os.path.join(SAMPLE, "ratings.csv"), "rb") as fh:
        lines = fh.read().split(b"\r\n")
    keep = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split(b",")[0]) <= max_user]
    path = folder / f"ratings-{max_user}.csv"
    path.write_bytes(b"\r\n".join(keep) + b"\r\n")
    return path


def plain_ratings(path):
    """(user, item, rating) of a ratings.csv read with plain Python: the expected table."""
    with open(path, newline="") as fh:
        rows = fh.read().split("\r\n")[1:]
    return sorted((int(u), int(i), float(r)) for u, i, r, _ in
                  (row.split(",") for row in rows if row))


def args(source, sink, *extra):
    return ["--config", os.path.join(REPO, "conf", "local.yaml"),
            "--set", f"source.ratings={source}",
            "--set", f"source.movies={os.path.join(SAMPLE, 'movies.csv')}",
            "--set", f"sink.path={sink}", "--set", "model.max_iterations=2",
            "--set", "spark.master=local[2]", *extra]


def start(script, *argv, env=None):
    env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.Popen([sys.executable, script, *argv], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc, timeout=420):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def wait_barrier(proc, boundary):
    """Block on the run's stdout until it reports the boundary; its run id."""
    for line in proc.stdout:
        if line.startswith("BARRIER "):
            _, got, run_id = line.split()
            assert got == boundary
            return run_id
    raise AssertionError(f"no barrier; stderr: {proc.stderr.read()[-3000:]}")


def kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)  # the job, its JVM and its Python workers
    proc.communicate()


def tables_of(sink):
    """Every table as pandas reads it through the table links, in a canonical row order."""
    out = {}
    for name in TABLES:
        frame = pd.read_parquet(os.path.join(sink, DATASET, name))
        plain = frame.map(_plain) if hasattr(frame, "map") else frame.applymap(_plain)
        out[name] = sorted(map(tuple, plain.itertuples(index=False)), key=repr)
    return out


def manifest(sink, run_id):
    with open(os.path.join(sink, DATASET, ".runs", f"{run_id}.json")) as fh:
        return json.load(fh)


def current_run(sink):
    return os.path.basename(os.readlink(os.path.join(sink, DATASET, ".current")))


def ratings_table(sink):
    frame = pd.read_parquet(os.path.join(sink, DATASET, "ratings"))
    return sorted(zip(frame.user_id, frame.item_id, frame.rating))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs-src")
    return source_file(folder, 14), source_file(folder, 9)


@pytest.fixture(scope="module")
def warehouse_of_run_a(sources, tmp_path_factory):
    """The warehouse one successful run (source A, tests/barrier_run.py stopping nowhere) left
    in an empty sink: the starting point of each killed-run test, which works on its own copy
    (``copy_warehouse``) of it."""
    sink = tmp_path_factory.mktemp("run-a")
    finish(start(BARRIER, "-", *args(sources[0], sink)))
    return sink


BOUNDARIES = ("ingest", "train", "evaluate", "recommend", "manifest", "switch",
              "write:recommend")


def killed_at(boundary, source, sink):
    """Start a run of ``source`` that stops at ``boundary`` (tests/barrier_run.py), SIGKILL it
    there; its run id, and for ``write:<table>`` the version folder its write had begun (which
    had no _SUCCESS)."""
    if not boundary.startswith("write:"):
        proc = start(BARRIER, boundary, *args(source, sink))
        run_id = wait_barrier(proc, boundary)
        kill(proc)
        return run_id, None
    versions = os.path.join(sink, DATASET, ".versions", boundary[len("write:"):])
    before = set(os.listdir(versions))
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(420)  # a barrier, not a poll: accept() returns when the task arrives
        proc = start(BARRIER, boundary, *args(source, sink),
                     env={"RECSYS_BARRIER_PORT": str(server.getsockname()[1])})
        try:
            conn, _ = server.accept()
        except socket.timeout:
            kill(proc)
            raise AssertionError("the write never reached its barrier")
        with conn:
            got, run_id = conn.makefile().readline().split()[1:]
            assert got == boundary
            partial = set(os.listdir(versions)) - before
            assert len(partial) == 1, partial  # the killed run's version folder, begun
            folder = os.path.join(versions, partial.pop())
            assert not os.path.exists(os.path.join(folder, "_SUCCESS"))
            kill(proc)
    return run_id, folder


def test_killed_at_every_boundary_changes_nothing_and_the_stale_lock_is_taken_over(
        sources, warehouse_of_run_a, tmp_path):
    """A run (source B) SIGKILLed (process group) at each stage boundary, at both steps of its
    commit, and while a task of its all-pairs ``recommend`` write is held (the write has begun,
    its version folder has no _SUCCESS) leaves the dataset exactly as the last successful run
    (source A) left it: every table equal to before, ``ratings`` equal to a plain reading of A
    (not B), ``.current`` still A's run; the next run reports the killed run's lock as stale,
    takes it over and marks the killed run failed in its manifest (also the one killed after
    writing its manifest, whose switch never happened). A final released run commits B's
    tables together, removes the partial folder and keeps its own and A's ``recommend`` only."""
    source_a, source_b = sources
    sink = copy_warehouse(warehouse_of_run_a, tmp_path / "wh")
    run_a = current_run(sink)
    before = tables_of(sink)
    assert ratings_table(sink) == plain_ratings(source_a)
    assert manifest(sink, run_a)["success"] is True
    recommend_versions = os.path.join(sink, DATASET, ".versions", "recommend")
    kept = set(os.listdir(recommend_versions))

    killed = partial = None
    for boundary in BOUNDARIES:
        run_b, partial = killed_at(boundary, source_b, sink)
        assert current_run(sink) == run_a, boundary
        assert tables_of(sink) == before, f"killed after {boundary}: the tables changed"
        assert ratings_table(sink) == plain_ratings(source_a)
        if killed is not None:  # this run took the previous killed run's lock over
            assert manifest(sink, killed)["success"] is False
            assert "stale" in manifest(sink, killed)["error"]
        killed = run_b
        # It never ended; killed between its manifest and the switch it claims success, but
        # .current (the commit point) still names A, and the next run marks it failed.
        assert manifest(sink, run_b)["success"] is (True if boundary == "switch" else None)

    proc = start(BARRIER, "-", *args(source_b, sink))
    _, err = finish(proc)
    assert f"taking over the stale lock of run {killed}" in err
    assert manifest(sink, killed)["success"] is False
    run_c = current_run(sink)
    assert run_c not in (run_a, killed)
    record = manifest(sink, run_c)
    assert record["success"] is True and record["base_run"] == run_a
    assert ratings_table(sink) == plain_ratings(source_b)
    # Every table switched with the run: the top-5 users are B's users, not A's.
    top = pd.read_parquet(os.path.join(sink, DATASET, "recommend_top5"))
    assert sorted(top.user_id) == sorted({u for u, _, _ in plain_ratings(source_b)})
    assert set(record["tables"]) == set(TABLES) and set(record["written"]["tables"]) == set(TABLES)
    # The partial folder of the write killed last is gone, and so is every killed run's
    # complete version: A's (the previous successful run) and C's are kept.
    assert not os.path.exists(partial)
    assert len(os.listdir(recommend_versions)) == 2 and kept <= set(os.listdir(recommend_versions))


def test_a_second_run_is_refused_at_once_or_waits_and_never_breaks_the_live_run(
        sources, tmp_path):
    """While run A (source A) is held after its train stage: a second pipeline run on the same
    dataset exits within seconds with code 4 and one stderr line naming A's run id, without
    writing a manifest; a third with --wait says it waits for A, and runs after A ends. A ends
    successfully with A's ratings; the waiting run then commits on top of A (base_run = A) with
    B's ratings; A's versions are still on disk for readers that opened them."""
    source_a, source_b = sources
    sink = tmp_path / "wh"
    live = start(BARRIER, "train", *args(source_a, sink))
    run_a = wait_barrier(live, "train")

    began = time.monotonic()
    refused = subprocess.run([sys.executable, PIPELINE, *args(source_b, sink)], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                             text=True, timeout=120)
    elapsed = time.monotonic() - began
    assert refused.returncode == 4
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and run_a in lines[0] and "--wait" in lines[0], refused.stderr
    assert lines[0].startswith("recsys pipeline: error: dataset ")
    assert elapsed < 30, f"refused after {elapsed:.1f}s"  # before any JVM starts
    assert os.listdir(os.path.join(sink, DATASET, ".runs")) == [f"{run_a}.json"]

    waiting = start(PIPELINE, *args(source_b, sink), "--wait")
    line = waiting.stderr.readline()
    assert f"waiting for run {run_a}" in line, line

    live.stdin.write("\n")
    live.stdin.flush()
    finish(live)
    assert manifest(sink, run_a)["success"] is True
    finish(waiting)
    run_c = current_run(sink)
    assert run_c != run_a and manifest(sink, run_c)["base_run"] == run_a
    assert ratings_table(sink) == plain_ratings(source_b)
    versions = os.path.join(sink, DATASET, ".versions", "ratings")
    assert manifest(sink, run_a)["tables"]["ratings"] in os.listdir(versions)


@pytest.mark.usefixtures("spark")
def test_a_reader_never_sees_its_table_vanish(spark, tmp_path):
    """A reader that opened a snapshot keeps reading the version it saw while three later runs
    replace the table (the old rule, keep two versions, deleted it after the second): the
    DataFrame planned before the replacements still collects its original rows, and pandas
    reads them from the snapshot's folder. Once the reader closes, the next run prunes it."""
    from recsys.sinks import LocalWarehouse

    wh = LocalWarehouse(str(tmp_path), "ds")
    wh.write("t", spark.createDataFrame([(1,), (2,)], "x long"))
    with wh.snapshot() as snap:
        planned = snap.read(spark, "t")
        folder = snap.version_path("t")
        for n in (3, 4, 5):
            wh.write("t", spark.createDataFrame([(n,)], "x long"))
        assert sorted(r.x for r in planned.collect()) == [1, 2]
        assert sorted(pd.read_parquet(folder).x) == [1, 2]
        assert sorted(r.x for r in wh.read(spark, "t").collect()) == [5]
    wh.write("t", spark.createDataFrame([(6,)], "x long"))
    assert not os.path.exists(folder)
    assert len(os.listdir(tmp_path / "ds" / ".versions" / "t")) == 2
