"""Download MovieLens archives from GroupLens into a local cache, verified by MD5.

MovieLens 1M and 100K may not be redistributed, so they are fetched at run time and never
committed. A cached archive is re-verified before use; a corrupt one is fetched again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Optional

from recsys.errors import InputError


@dataclass(frozen=True)
class KnownArchive:
    """A published MovieLens archive and where its files sit inside it."""

    url: str
    md5: str
    ratings: str
    movies: str


KNOWN_ARCHIVES = {
    "ml-1m": KnownArchive("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                          "c4d9eecfca2ab87c1945afe126590906", "ml-1m/ratings.dat", "ml-1m/movies.dat"),
    "ml-100k": KnownArchive("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                            "0e33842e24a9c977be4e0107933c0723", "ml-100k/u.data", "ml-100k/u.item"),
}


@dataclass(frozen=True)
class Fetched:
    """Local paths of the extracted ratings and movies files (None: the archive's layout is not
    known, the config names them) and of the extraction folder."""

    ratings: Optional[str]
    movies: Optional[str]
    folder: Optional[str] = None


def fetch(fmt: str, *, cache_dir: str, url: Optional[str] = None, md5: Optional[str] = None,
          timeout_s: float = 60.0) -> Fetched:
    """Make sure the archive for ``fmt`` is in ``cache_dir``, verified and extracted."""
    known = KNOWN_ARCHIVES.get(fmt)
    url = url or (known.url if known else None)
    md5 = md5 or (known.md5 if known and url == known.url else None)
    if url is None:
        raise InputError(f"no download address for format {fmt!r}: set source.url")
    cache = os.path.abspath(os.path.expanduser(cache_dir))
    os.makedirs(cache, exist_ok=True)
    archive = os.path.join(cache, os.path.basename(url.rstrip("/")) or "download.zip")
    if not (os.path.isfile(archive) and (md5 is None or file_md5(archive) == md5)):
        _download(url, archive, md5, timeout_s)
    extracted = archive + ".d"
    if not os.path.isdir(extracted):
        _extract(archive, extracted)
    if known is None:
        # An archive of another layout: the files inside are named by source.ratings and
        # source.movies (relative to the extracted folder), see readers.resolve_files.
        return Fetched(ratings=None, movies=None, folder=extracted)
    return Fetched(ratings=os.path.join(extracted, known.ratings),
                   movies=os.path.join(extracted, known.movies), folder=extracted)


def file_md5(path: str) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: str, md5: Optional[str], timeout_s: float) -> None:
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        got = file_md5(partial)
        if md5 is not None and got != md5:
            raise InputError(f"download {url}: MD5 {got} does not match the expected {md5}")
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(f"download {url} failed: {reason}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _extract(archive: str, target: str) -> None:
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), suffix=".extracting")
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                # Refuse paths that would escape the extraction folder.
                resolved = os.path.realpath(os.path.join(staging, member))
                if not resolved.startswith(os.path.realpath(staging) + os.sep):
                    raise InputError(f"{archive}: unsafe path in archive: {member}")
            zf.extractall(staging)
        os.replace(staging, target)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive}: not a zip archive: {exc}") from None
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
