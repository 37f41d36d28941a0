"""Runs as units on a local warehouse dataset: one writer at a time, a manifest per run, and
every table switched together when a run succeeds.

Layout of ``<sink.path>/<dataset>/`` (``recsys.sinks.LocalWarehouse`` writes the versions):

- ``.versions/<table>/<version>/`` — immutable table versions (``_models/.versions/<model>/...``
  for models);
- ``.runs/<run_id>.json`` — the manifest of each run: run id, job, config fingerprint, pid and
  host, start and end, success (or the error), the version of every table and model it wrote
  (``written``) and of every table and model of the dataset after it (``tables``, ``models``);
- ``.views/<run_id>/`` — one symbolic link per table (and ``_models/<model>``) to its version;
- ``.current`` — a link to the view of the last successful run: **the commit point**. A run
  switches it with one atomic rename at its end, so every table changes at once. Its manifest is
  written (``success: true``) just before; a run killed between the two never became current,
  and the run that takes its lock over marks it failed;
- ``<table>`` — a link to ``.current/<table>`` (``_models/<model>`` likewise), for plain readers;
- ``.lock`` — the writer lock (``flock``), holding the live run's id, pid, host and start;
- ``.readers/<id>`` — one file per live reader (``flock``-ed by it) naming the run it pinned.

A second run is refused at once (``DatasetBusy``) or waits (``--wait``). The lock is a kernel
``flock``: it dies with its process, so a lock file left by a killed run is found free, reported
as stale and taken over; the killed run's manifest is marked failed.

Versions are pruned after each successful run, keeping: the current and the previous successful
run's (for readers that opened a table just before the switch), everything a live reader pinned,
and what the newest failed run wrote if it is newer than the current run (its rejects, for
inspection). Partial folders of killed runs are referenced by no manifest and go.

This module opens, commits and closes runs (the switch); ``recsys.sinks.manifests`` reads the
dataset's state and prunes it, ``recsys.sinks.lock`` is the writer lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

from recsys.sinks.lock import DatasetBusy, Lock
from recsys.sinks.manifests import (CURRENT, MODELS_DIR, VERSIONS_DIR, VIEWS_DIR, Dataset,
                                    fingerprint, new_id, prune, replace_symlink, utc_now,
                                    write_json)

# Handed on for the sinks and the tests, which use them as ``runs.<name>``.
__all__ = ["COMMIT_HOOKS", "MODELS_DIR", "VERSIONS_DIR", "Dataset", "DatasetBusy", "Lock", "Run",
           "active", "begin", "end", "fingerprint", "new_id", "prune", "unit"]


# --- a run -------------------------------------------------------------------------------------

@dataclass
class Run:
    """One job run writing a dataset: its base (the last successful manifest when it started)
    and what it has written so far."""

    dataset: Dataset
    run_id: str
    job: str
    config_fingerprint: str
    started_at: str
    base: dict
    tables: Dict[str, str] = field(default_factory=dict)
    models: Dict[str, str] = field(default_factory=dict)
    lock: Optional[Lock] = None
    hooks: List[Callable[[str, "Run"], None]] = field(default_factory=list)

    # -- what a reader of this run sees ---------------------------------------------------------

    def table_version(self, name: str) -> Optional[str]:
        """This run's own version of ``name``, else the base's (None: no such table)."""
        if name in self.tables:
            return self.tables[name]
        return self.base.get("tables", {}).get(name)

    def model_version(self, name: str) -> Optional[str]:
        if name in self.models:
            return self.models[name]
        return self.base.get("models", {}).get(name)

    def _record(self, success: bool, error: Optional[str] = None) -> dict:
        tables = {**self.base.get("tables", {}), **self.tables}
        models = {**self.base.get("models", {}), **self.models}
        return {
            "run_id": self.run_id, "job": self.job, "config_fingerprint": self.config_fingerprint,
            "pid": os.getpid(), "host": socket.gethostname(), "started_at": self.started_at,
            "ended_at": None if success is None else utc_now(), "success": success, "error": error,
            "base_run": self.base.get("run_id"),
            "written": {"tables": dict(self.tables), "models": dict(self.models)},
            "tables": tables if success else None, "models": models if success else None,
        }

    def start(self) -> None:
        os.makedirs(self.dataset.runs_dir, exist_ok=True)
        record = self._record(None)
        record["ended_at"] = None
        write_json(self.dataset.manifest_path(self.run_id), record)

    # -- the end --------------------------------------------------------------------------------

    def commit(self) -> dict:
        """Switch every table to this run's versions at once; prune what no one can read."""
        self._move_plain_folders()
        record = self._record(True)
        view = os.path.join(self.dataset.views_dir, self.run_id)
        os.makedirs(os.path.join(view, MODELS_DIR), exist_ok=True)
        for name, version in record["tables"].items():
            os.symlink(os.path.join("..", "..", VERSIONS_DIR, name, version),
                       os.path.join(view, name))
        for name, version in record["models"].items():
            os.symlink(os.path.join("..", "..", "..", MODELS_DIR, VERSIONS_DIR, name, version),
                       os.path.join(view, MODELS_DIR, name))
        self._hook("manifest")
        write_json(self.dataset.manifest_path(self.run_id), record)
        self._hook("switch")
        replace_symlink(os.path.join(VIEWS_DIR, self.run_id), os.path.join(self.dataset.dir, CURRENT))
        self._link_names(record)
        prune(self.dataset, own=self.run_id)
        return record

    def fail(self, error: str) -> dict:
        """Record the failure; the dataset keeps the last successful run's tables."""
        record = self._record(False, error)
        write_json(self.dataset.manifest_path(self.run_id), record)
        return record

    def _hook(self, boundary: str) -> None:
        for hook in self.hooks:
            hook(boundary, self)

    def _move_plain_folders(self) -> None:
        """A plain table folder (written by something else, or before links) moves into
        ``.versions`` once; from then on the table is a link and every switch atomic."""
        for parent, names in (
                (self.dataset.dir, self.base.get("tables", {})),
                (os.path.join(self.dataset.dir, MODELS_DIR), self.base.get("models", {}))):
            for name, version in list(names.items()):
                path = os.path.join(parent, name)
                if version is None and os.path.isdir(path) and not os.path.islink(path):
                    target = os.path.join(parent, VERSIONS_DIR, name, "00000000-legacy")
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.replace(path, target)
                    names[name] = "00000000-legacy"
                elif version is None:
                    names.pop(name)  # neither a link nor a folder any more

    def _link_names(self, record: dict) -> None:
        """``<table>`` -> ``.current/<table>`` and ``_models/<m>`` -> ``../.current/_models/<m>``
        (created once per name; later switches only move ``.current``)."""
        for parent, names, target in (
                (self.dataset.dir, record["tables"], lambda n: os.path.join(CURRENT, n)),
                (os.path.join(self.dataset.dir, MODELS_DIR), record["models"],
                 lambda n: os.path.join("..", CURRENT, MODELS_DIR, n))):
            os.makedirs(parent, exist_ok=True)
            for name in names:
                link = os.path.join(parent, name)
                if os.path.islink(link) and os.readlink(link) == target(name):
                    continue
                replace_symlink(target(name), link)


# --- opening and closing runs ------------------------------------------------------------------

_ACTIVE: Dict[str, Run] = {}
# Test-only instrumentation: callables (boundary, run) called at the commit's steps.
COMMIT_HOOKS: List[Callable[[str, Run], None]] = []


def active(dataset_dir: str) -> Optional[Run]:
    """The run open on ``dataset_dir`` in this process, if any."""
    return _ACTIVE.get(dataset_dir)


def begin(dataset_dir: str, job: str, config_fingerprint: str = "", *, wait: bool = False,
          say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
          ) -> Run:
    """Open a run on ``dataset_dir``: take the writer lock (or fail / wait), take over a stale
    one, register as a reader and write the run's manifest (``success: null`` while it runs)."""
    dataset = Dataset(dataset_dir)
    run_id = new_id()
    info = {"run_id": run_id, "job": job, "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": utc_now()}
    lock = Lock(dataset_dir)
    stale = lock.acquire(info, wait=wait, on_wait=lambda holder: say(
        f"recsys {job}: waiting for run {holder.get('run_id', '?')} ({holder.get('job', '?')} "
        f"job, pid {holder.get('pid', '?')}) to finish with {dataset_dir}"))
    try:
        if stale is not None:
            say(f"recsys {job}: taking over the stale lock of run {stale['run_id']} "
                f"({stale.get('job', '?')} job, pid {stale.get('pid', '?')} on "
                f"{stale.get('host', '?')}), which ended without releasing it")
            _close_stale(dataset, stale["run_id"])
        base = dataset.current() or {"run_id": None, "tables": {}, "models": {}}
        run = Run(dataset=dataset, run_id=run_id, job=job, config_fingerprint=config_fingerprint,
                  started_at=info["started_at"], base=base, lock=lock, hooks=list(COMMIT_HOOKS))
        run.start()
    except BaseException:
        lock.release()
        raise
    _ACTIVE[dataset_dir] = run
    return run


def _close_stale(dataset: Dataset, run_id: str) -> None:
    """Mark a killed run's manifest failed (unless its switch happened: then it succeeded)."""
    record = dataset.manifest(run_id)
    if record is None or dataset.current_id() == run_id:
        return
    record.update(success=False, tables=None, models=None, ended_at=utc_now(),
                  error="killed: its lock was found stale and taken over")
    write_json(dataset.manifest_path(run_id), record)


def end(run: Run, error: Optional[str] = None) -> dict:
    """Commit (``error`` None) or record the failure, then release the lock."""
    try:
        return run.fail(error) if error is not None else run.commit()
    finally:
        _ACTIVE.pop(run.dataset.dir, None)
        if run.lock is not None:
            run.lock.release()


@contextlib.contextmanager
def unit(dataset_dir: str, job: str, config_fingerprint: str = "", *, wait: bool = False
         ) -> Iterator[Run]:
    """A run around a block: committed if the block returns, recorded as failed if it raises.
    Inside a run already open on the dataset (a job of the pipeline), the block joins it."""
    existing = active(dataset_dir)
    if existing is not None:
        yield existing
        return
    run = begin(dataset_dir, job, config_fingerprint, wait=wait)
    try:
        yield run
    except BaseException as exc:
        end(run, error=_one_line(exc))
        raise
    end(run)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "java_exception", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
