"""Where a path points, decided in one place: a local file or folder (a plain path, ``~``
expanded, or a ``file://`` URI) or a Hadoop filesystem URI (``gs://``, ``hdfs://``, ...).

>>> is_local("~/data/ratings.csv"), is_local("file:///tmp/x"), is_local("gs://bucket/x")
(True, True, False)
>>> local_path("file:///tmp/x")
'/tmp/x'
"""

import os


def is_local(path: str) -> bool:
    """True for a path on this machine's filesystem."""
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    """A local path (``is_local``) as the OS names it: ``file://`` dropped, ``~`` expanded."""
    return os.path.expanduser(path[len("file://"):] if path.startswith("file://") else path)
