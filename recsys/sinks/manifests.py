"""The state of a local warehouse dataset as its files say it: the manifest of each run
(``.runs/<run_id>.json``), the views (``.views/<run_id>/``), ``.current`` (the last successful
run), the live readers (``.readers/<id>``) and the pruning of what no one can read any more.
``recsys.sinks.runs`` describes the whole layout and writes it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from typing import Dict, Iterator, List, Optional

RUNS_DIR = ".runs"
VIEWS_DIR = ".views"
READERS_DIR = ".readers"
CURRENT = ".current"
VERSIONS_DIR = ".versions"
MODELS_DIR = "_models"
# Manifests (a few hundred bytes each) of runs that no longer hold any version are kept for
# history, up to this many.
KEEP_MANIFESTS = 50


def new_id() -> str:
    """``<UTC time>-<random>``: sorts by creation time."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond (manifests' start and end)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def fingerprint(cfg) -> str:
    """SHA-256 (first 16 hex digits) of the whole config as canonical JSON."""
    from recsys.config import to_dict

    text = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``; None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def replace_symlink(target: str, link: str) -> None:
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
        return read_json(self.manifest_path(run_id))

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
        found = [read_json(os.path.join(self.runs_dir, n)) for n in names]
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
                                     "pinned": pinned, "started_at": utc_now()}).encode())
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
                    info = read_json(path)
                    if info is None:
                        return None
                    pins.add(info.get("pinned"))
                    continue
                with contextlib.suppress(OSError):
                    os.remove(path)  # its process is gone
            finally:
                os.close(fd)
        return pins


def prune(dataset: Dataset, own: Optional[str] = None) -> None:
    """Drop versions, views and old manifests no reader can need (the rules: ``recsys.sinks.runs``).
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

