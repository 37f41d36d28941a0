"""The writer lock of a local warehouse dataset: a kernel ``flock`` on ``.lock``, whose content
names the live run (id, job, pid, host, start). It dies with its process, so a lock file left by
a killed run is found free; ``acquire`` then returns that run for its manifest to be closed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from typing import Callable, Optional

from recsys.errors import RecsysError
from recsys.sinks.manifests import read_json

LOCK_FILE = ".lock"


class DatasetBusy(RecsysError):
    """Another live run is writing the dataset."""

    exit_code = 4


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
                holder = read_json(self.path) or {}
                if not wait:
                    raise DatasetBusy(
                        f"dataset {self.dataset_dir} is being written by run "
                        f"{holder.get('run_id', '?')} ({holder.get('job', '?')} job, pid "
                        f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                        f"{holder.get('started_at', '?')}); wait for it to end, or pass --wait")
                on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            previous = read_json(self.path)
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

