"""Download MovieLens archives from GroupLens into a local cache, verified by MD5.

MovieLens 1M and 100K may not be redistributed, so they are fetched at run time and never
committed. A cached archive is re-verified before use; a corrupt one is fetched again, and the
extracted folder (``<archive>.d``, which records the MD5 of its archive) is re-extracted whenever
it does not come from the archive now in the cache.
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


# Hidden (skipped as a data file, like _SUCCESS): the MD5 of the archive a folder came from.
EXTRACTED_FROM = ".recsys-archive-md5"


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
    digest = file_md5(archive) if os.path.isfile(archive) else None
    if digest is None or (md5 is not None and digest != md5):
        _download(url, archive, md5, timeout_s)
        digest = file_md5(archive)
    # The folder records the MD5 of the archive it came from: after a new download (a corrupt
    # cached archive, a new md5) the folder of the older archive is extracted again.
    extracted = archive + ".d"
    if _extracted_from(extracted) != digest:
        _extract(archive, extracted, digest)
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


def _extracted_from(folder: str) -> Optional[str]:
    """MD5 of the archive ``folder`` was extracted from (None: no folder, or no record)."""
    try:
        with open(os.path.join(folder, EXTRACTED_FROM)) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _extract(archive: str, target: str, digest: str) -> None:
    """Extract into a staging folder, record ``digest`` there, then put it in place of
    ``target`` (an older extraction is removed)."""
    parent = os.path.dirname(target)
    staging = tempfile.mkdtemp(dir=parent, suffix=".extracting")
    old = None
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                # Refuse paths that would escape the extraction folder.
                resolved = os.path.realpath(os.path.join(staging, member))
                if not resolved.startswith(os.path.realpath(staging) + os.sep):
                    raise InputError(f"{archive}: unsafe path in archive: {member}")
            zf.extractall(staging)
        with open(os.path.join(staging, EXTRACTED_FROM), "w") as fh:
            fh.write(digest + "\n")
        if os.path.lexists(target):
            old = tempfile.mkdtemp(dir=parent, suffix=".old")
            os.replace(target, os.path.join(old, "folder"))
        os.replace(staging, target)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive}: not a zip archive: {exc}") from None
    finally:
        for leftover in (staging, old):
            if leftover and os.path.isdir(leftover):
                shutil.rmtree(leftover)
