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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

from recsys.errors import RecsysError

RUNS_DIR = ".runs"
VIEWS_DIR = ".views"
READERS_DIR = ".readers"
CURRENT = ".current"
LOCK_FILE = ".lock"
VERSIONS_DIR = ".versions"
MODELS_DIR = "_models"
# Manifests (a few hundred bytes each) of runs that no longer hold any version are kept for
# history, up to this many.
KEEP_MANIFESTS = 50


class DatasetBusy(RecsysError):
    """Another live run is writing the dataset."""

    exit_code = 4


def new_id() -> str:
    """``<UTC time>-<random>``: sorts by creation time."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def fingerprint(cfg) -> str:
    """SHA-256 (first 16 hex digits) of the whole config as canonical JSON."""
    from recsys.config import to_dict

    text = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` with one atomic rename (replacing a link, never a folder)."""
    temp = os.path.join(os.path.dirname(link), f".{os.path.basename(link)}.{uuid.uuid4().hex}.link")
    os.symlink(target, temp)
    os.replace(temp, link)


# --- the dataset's state -----------------------------------------------------------------------

class Dataset:
    """Manifests, views and the current run of one dataset folder."""

    def __init__(self, dataset_dir: str):
        self.dir = dataset_dir
        self.runs_dir = os.path.join(dataset_dir, RUNS_DIR)
        self.views_dir = os.path.join(dataset_dir, VIEWS_DIR)
        self.readers_dir = os.path.join(dataset_dir, READERS_DIR)

    def manifest_path(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, f"{run_id}.json")

    def manifest(self, run_id: str) -> Optional[dict]:
        return _read_json(self.manifest_path(run_id))

    def current_id(self) -> Optional[str]:
        """Run id of the last successful run (the target of ``.current``), or None."""
        try:
            return os.path.basename(os.readlink(os.path.join(self.dir, CURRENT)))
        except OSError:
            return None

    def current(self) -> Optional[dict]:
        """The last successful run's manifest; for a warehouse written before manifests
        existed, one built from its table links."""
        run_id = self.current_id()
        if run_id is not None:
            return self.manifest(run_id)
        return self._legacy_manifest()

    def manifests(self) -> List[dict]:
        """Every readable manifest, oldest first."""
        try:
            names = sorted(n for n in os.listdir(self.runs_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        found = [_read_json(os.path.join(self.runs_dir, n)) for n in names]
        return [m for m in found if m is not None]

    def _legacy_manifest(self) -> Optional[dict]:
        """Tables and models of a warehouse without ``.current`` (per-table links into
        ``.versions``, or plain folders), as a manifest; None for an empty dataset."""
        tables, models = {}, {}
        for parent, found in ((self.dir, tables), (os.path.join(self.dir, MODELS_DIR), models)):
            if not os.path.isdir(parent):
                continue
            for name in os.listdir(parent):
                path = os.path.join(parent, name)
                if name.startswith(".") or name == MODELS_DIR:
                    continue
                if os.path.islink(path):
                    target = os.readlink(path).split("/")
                    if len(target) == 3 and target[0] == VERSIONS_DIR and target[1] == name:
                        found[name] = target[2]
                elif os.path.isdir(path):
                    found[name] = None  # a plain folder: moved into .versions by the first run
        if not tables and not models:
            return None
        return {"run_id": None, "success": True, "tables": tables, "models": models,
                "written": {"tables": {}, "models": {}}}

    # -- readers --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reader(self, run_id: Optional[str] = None) -> Iterator[dict]:
        """Register a live reader and pin the current manifest for as long as it is open:
        no version of that manifest is pruned until the reader closes (or dies)."""
        os.makedirs(self.readers_dir, exist_ok=True)
        reader_id = run_id or new_id()
        final = os.path.join(self.readers_dir, reader_id)
        temp = f"{final}.{uuid.uuid4().hex}.tmp"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # Locked before it is visible under its name, so a pruner never takes a reader
            # that is being registered for a dead one.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.replace(temp, final)
            manifest = self.current()
            pinned = manifest.get("run_id") if manifest else None
            os.write(fd, json.dumps({"reader": reader_id, "pid": os.getpid(),
                                     "pinned": pinned, "started_at": _now()}).encode())
            yield manifest or {"run_id": None, "tables": {}, "models": {}}
        finally:
            with contextlib.suppress(OSError):
                os.remove(final)
            os.close(fd)

    def live_pins(self, own: Optional[str] = None) -> Optional[set]:
        """Run ids pinned by live readers (dead readers' files are removed). None when a live
        reader has not written its pin yet (then nothing may be pruned beyond the default)."""
        pins: set = set()
        try:
            names = os.listdir(self.readers_dir)
        except FileNotFoundError:
            return pins
        for name in names:
            if name == own or name.endswith(".tmp"):
                continue
            path = os.path.join(self.readers_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    info = _read_json(path)
                    if info is None:
                        return None
                    pins.add(info.get("pinned"))
                    continue
                with contextlib.suppress(OSError):
                    os.remove(path)  # its process is gone
            finally:
                os.close(fd)
        return pins


# --- the writer lock ---------------------------------------------------------------------------

class Lock:
    """The dataset's writer lock: an ``flock`` on ``.lock``, whose content names the holder."""

    def __init__(self, dataset_dir: str):
        self.path = os.path.join(dataset_dir, LOCK_FILE)
        self.dataset_dir = dataset_dir
        self.fd: Optional[int] = None

    def acquire(self, info: dict, *, wait: bool, on_wait: Callable[[dict], None]) -> Optional[dict]:
        """Take the lock for the run ``info``; returns the holder found in a stale lock file
        (a run that died holding it), else None. Raises DatasetBusy when a live run holds it
        and ``wait`` is false."""
        os.makedirs(self.dataset_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_json(self.path) or {}
                if not wait:
                    raise DatasetBusy(
                        f"dataset {self.dataset_dir} is being written by run "
                        f"{holder.get('run_id', '?')} ({holder.get('job', '?')} job, pid "
                        f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                        f"{holder.get('started_at', '?')}); wait for it to end, or pass --wait")
                on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            previous = _read_json(self.path)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return previous if previous and previous.get("run_id") else None

    def release(self) -> None:
        """Empty the lock file (a clean end) and unlock."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = None


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
            "ended_at": None if success is None else _now(), "success": success, "error": error,
            "base_run": self.base.get("run_id"),
            "written": {"tables": dict(self.tables), "models": dict(self.models)},
            "tables": tables if success else None, "models": models if success else None,
        }

    def start(self) -> None:
        os.makedirs(self.dataset.runs_dir, exist_ok=True)
        record = self._record(None)
        record["ended_at"] = None
        _write_json(self.dataset.manifest_path(self.run_id), record)

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
        _write_json(self.dataset.manifest_path(self.run_id), record)
        self._hook("switch")
        _symlink(os.path.join(VIEWS_DIR, self.run_id), os.path.join(self.dataset.dir, CURRENT))
        self._link_names(record)
        prune(self.dataset, own=self.run_id)
        return record

    def fail(self, error: str) -> dict:
        """Record the failure; the dataset keeps the last successful run's tables."""
        record = self._record(False, error)
        _write_json(self.dataset.manifest_path(self.run_id), record)
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
                _symlink(target(name), link)


def prune(dataset: Dataset, own: Optional[str] = None) -> None:
    """Drop versions, views and old manifests no reader can need (see the module docstring).
    Called by the lock holder, after its commit."""
    pins = dataset.live_pins(own)
    manifests = dataset.manifests()
    current = dataset.current_id()
    done = [m for m in manifests if m.get("success") and m.get("run_id")]
    keep_runs = {current}
    before = [m["run_id"] for m in done if m["run_id"] < (current or "")]
    if before:
        keep_runs.add(before[-1])  # the previous successful run: readers that just opened it
    if pins is None:
        keep_runs |= {m["run_id"] for m in done}
    else:
        keep_runs |= pins
    failed = [m for m in manifests if m.get("success") is False and m["run_id"] > (current or "")]
    keep_failed = failed[-1]["run_id"] if failed else None
    keep_tables: Dict[str, set] = {}
    keep_models: Dict[str, set] = {}
    for m in manifests:
        if m.get("run_id") in keep_runs and m.get("success"):
            tables, models = m.get("tables") or {}, m.get("models") or {}
        elif m.get("run_id") == keep_failed or m.get("success") is None:
            # The newest failed run's output (rejects to inspect); a run still marked running
            # is one that is being taken over: kept until the next prune.
            tables, models = m["written"]["tables"], m["written"]["models"]
        else:
            continue
        for name, version in tables.items():
            keep_tables.setdefault(name, set()).add(version)
        for name, version in models.items():
            keep_models.setdefault(name, set()).add(version)
    for parent, keep in ((os.path.join(dataset.dir, VERSIONS_DIR), keep_tables),
                         (os.path.join(dataset.dir, MODELS_DIR, VERSIONS_DIR), keep_models)):
        if not os.path.isdir(parent):
            continue
        for name in os.listdir(parent):
            for version in os.listdir(os.path.join(parent, name)):
                if version not in keep.get(name, set()):
                    shutil.rmtree(os.path.join(parent, name, version), ignore_errors=True)
    if os.path.isdir(dataset.views_dir):
        for run_id in os.listdir(dataset.views_dir):
            if run_id not in keep_runs:
                shutil.rmtree(os.path.join(dataset.views_dir, run_id), ignore_errors=True)
    old = [m["run_id"] for m in manifests
           if m.get("run_id") not in keep_runs and m.get("run_id") != keep_failed]
    for run_id in old[:max(0, len(old) - KEEP_MANIFESTS)]:
        with contextlib.suppress(OSError):
            os.remove(dataset.manifest_path(run_id))


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
            "started_at": _now()}
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
    record.update(success=False, tables=None, models=None, ended_at=_now(),
                  error="killed: its lock was found stale and taken over")
    _write_json(dataset.manifest_path(run_id), record)


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

