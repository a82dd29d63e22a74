"""Obtain raw datasets: download, verify checksums, extract, cache.

Each dataset in `DATASETS` has a normal route (the publisher's archive, checked against the
published MD5) and optionally offline routes: a copy of the same ratings shipped inside a wheel on
PyPI, fetched with `pip download` so it works wherever the package registry is reachable. Files
land in the cache only after their checksum matches, always through a temporary name, so a cache
entry is either complete and verified or absent; and each use checks it again (`check_cached`),
so a file edited in the cache is fetched again, or refused, never silently used.

Some datasets cannot be downloaded automatically (the Netflix Prize data may not be
redistributed; the MSD Taste Profile is a large file behind a web page). Their entries have no
`url`: the user obtains the files, puts them in the dataset's cache folder, and `fetch_dataset`
finds them there, or says where to get them and where to put them.

Cache layout under `cache_dir`::

    <name>/<archive>.zip            the downloaded archive (kept: extracting again needs no
                                    network)
    <name>/<member file>            the extracted interaction file
    <name>/<member file>.sha256     its SHA-256, written after a verified extraction, and the
                                    size and mtime it had when last checked
    wheels/<wheel file>             wheels fetched for offline routes
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import RactError
from ..io import atomic_path, write_text

log = logging.getLogger("ract.data.sources")

_BLOCK = 1 << 20
_REFETCH = "delete it; the next `ract fetch` or `ract prepare --dataset` fetches it again"


@dataclass(frozen=True)
class WheelRoute:
    """An offline route: an interaction file inside a wheel on PyPI, obtained with
    `pip download`.

    Attributes
    ----------
    package, version : str
        What to ask pip for (`package==version`).
    wheel, wheel_sha256 : str
        File name pip saves, and its SHA-256.
    member, member_size, member_sha256
        Path of the interaction file inside the wheel, its size in bytes and SHA-256.
    format : str
        `ract.data.readers` format of the member.
    """

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    member_size: int
    member_sha256: str
    format: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Dataset:
    """A known dataset.

    Attributes
    ----------
    name : str
        Registry key and cache subfolder.
    format : str
        `ract.data.readers` format of `member`.
    url : str or None
        The publisher's archive (zip); None when there is no automatic download.
    md5 : str or None
        MD5 the publisher gives for the archive; None if unknown (then only logged).
    member : str
        Path of the interaction file inside the archive. Without `url`: the file or folder the
        reader takes, relative to the dataset's cache folder ("." is the folder itself).
    offline : tuple of WheelRoute
        Routes tried after `url`, or instead of it when offline.
    obtain : str or None
        Without `url`: where and how the user gets the raw files (shown when they are missing).
    files : tuple of str
        Without `url`: glob patterns, relative to the cache folder, of the raw files; the dataset
        is there when one of them matches.
    rows : int or None
        Documented number of interactions in the full release. Not a checksum: a cheap count
        of data lines is compared with it, and a difference (a partial or edited copy) is only
        logged as a warning.
    """

    name: str
    format: str
    url: str | None
    md5: str | None
    member: str
    offline: tuple[WheelRoute, ...] = ()
    obtain: str | None = None
    files: tuple[str, ...] = ()
    rows: int | None = None


DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            name="ml-100k",
            format="ml-100k",
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            md5="0e33842e24a9c977be4e0107933c0723",
            member="ml-100k/u.data",
            offline=(
                WheelRoute(
                    package="recbole",
                    version="1.2.1",
                    wheel="recbole-1.2.1-py3-none-any.whl",
                    wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                    member="recbole/dataset_example/ml-100k/ml-100k.inter",
                    member_size=1_979_230,
                    member_sha256=(
                        "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
                    ),
                    format="recbole",
                ),
            ),
        ),
        Dataset(
            name="ml-1m",
            format="ml-1m",
            url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            md5="c4d9eecfca2ab87c1945afe126590906",
            member="ml-1m/ratings.dat",
        ),
        Dataset(
            name="ml-20m",
            format="ml-csv",
            url="https://files.grouplens.org/datasets/movielens/ml-20m.zip",
            # Meant to be GroupLens' ml-20m.zip.md5, but not yet checked against a download here.
            # A mismatch stops the download with both digests in the message; correct it then.
            md5="cd245b17a1ae2cc31bb14903e1204af3",
            member="ml-20m/ratings.csv",
        ),
        # No automatic download for the two below: no checksums are published for the files
        # users obtain, so none are recorded; `rows` are the sizes documented with each release.
        Dataset(
            name="netflix",
            format="netflix",
            url=None,
            md5=None,
            member=".",  # the folder: the reader finds mv_*.txt / combined_data_*.txt in it
            obtain=(
                "the Netflix Prize training set may not be redistributed, so it is not "
                "downloaded automatically. Get it from a mirror that holds it, e.g. Kaggle's "
                "'Netflix Prize data' (netflix-inc/netflix-prize-data: combined_data_1.txt to "
                "combined_data_4.txt) or Academic Torrents (the original nf_prize_dataset.tar.gz; "
                "unpack the training_set.tar inside it to get training_set/mv_0000001.txt ...)"
            ),
            files=("combined_data_*.txt", "mv_*.txt", "training_set/mv_*.txt"),
            rows=100_480_507,  # documented: 100,480,507 ratings, 480,189 users, 17,770 movies
        ),
        Dataset(
            name="msd",
            format="msd",
            url=None,
            md5=None,
            member="train_triplets.txt",
            obtain=(
                "the Million Song Dataset Taste Profile subset is not downloaded automatically. "
                "Get train_triplets.txt (user, song, play count; distributed zipped) from "
                "http://millionsongdataset.com/tasteprofile/ and unzip it"
            ),
            files=("train_triplets.txt",),
            rows=48_373_586,  # documented: 48,373,586 triplets (1,019,318 users, 384,546 songs)
        ),
    )
}


class _RouteFailed(Exception):
    """One route did not work; the message says why (one line)."""


def fetch_dataset(
    name: str | Dataset, cache_dir, *, offline: bool = False, timeout: float = 10.0
) -> tuple[Path, str]:
    """Return a verified local copy of a dataset's raw interaction file.

    Parameters
    ----------
    name : str or Dataset
        A key of `DATASETS` (or an entry built by hand).
    cache_dir : str or PathLike
        Where downloads and extracted files are kept.
    offline : bool
        Do not download the publisher's archive; only the cache and the offline routes (which
        use the package registry through pip) are tried.
    timeout : float
        Seconds to wait for a connection or for each read from it.

    Returns
    -------
    (Path, str)
        The interaction file and its `ract.data.readers` format.

    Raises
    ------
    RactError
        Unknown dataset, or every route failed (the message lists each route and why), or a
        dataset without automatic download is not in its cache folder (the message says where
        to get it and where to put it).
    """
    dataset = name if isinstance(name, Dataset) else DATASETS.get(name)
    if dataset is None:
        raise RactError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    cache_root = Path(cache_dir).expanduser()
    folder = cache_root / dataset.name
    if dataset.url is None:
        return _local_route(dataset, folder), dataset.format

    for path, fmt, expected in _cache_entries(dataset, folder):
        if _cached_ok(path, expected):
            log.info("using cached %s (%s)", path, fmt)
            return path, fmt
    return _try_routes(dataset, cache_root, offline, timeout)


def _try_routes(
    dataset: Dataset, cache_root: Path, offline: bool, timeout: float
) -> tuple[Path, str]:
    """Try the publisher's archive, then each offline route: (the file, its format), or a
    RactError that lists every route tried and why it failed."""
    folder = cache_root / dataset.name
    failures = []
    archive = folder / _archive_name(dataset.url)
    try:
        return _archive_route(dataset, archive, folder, offline, timeout), dataset.format
    except _RouteFailed as exc:
        failures.append(f"{dataset.url}: {exc}")
        (log.info if offline else log.warning)(
            "dataset %s: %s: %s", dataset.name, dataset.url, exc
        )
    for route in dataset.offline:
        try:
            return _wheel_route(route, cache_root / "wheels", folder, timeout), route.format
        except _RouteFailed as exc:
            failures.append(f"pip download {route.requirement} ({route.member}): {exc}")
            log.warning("dataset %s: pip download %s: %s", dataset.name, route.requirement, exc)

    tried = "; ".join(f"({i}) {failure}" for i, failure in enumerate(failures, 1))
    raise RactError(
        f"could not obtain dataset {dataset.name!r}: {tried}. To supply it by hand, download "
        f"{dataset.url} and save it as {archive}, then run again; or pass the ratings file "
        f"({dataset.member}) to `prepare --input` with format {dataset.format!r}"
    )


def _archive_name(url: str) -> str:
    return PurePosixPath(urllib.parse.urlparse(url).path).name or "archive.zip"


def _cache_entries(dataset: Dataset, folder: Path):
    """(path, format, expected sha256 or None = use the sidecar) for each route's cached file."""
    yield folder / PurePosixPath(dataset.member).name, dataset.format, None
    for route in dataset.offline:
        yield folder / PurePosixPath(route.member).name, route.format, route.member_sha256


def check_cached(path, recover: str = _REFETCH) -> None:
    """Refuse a raw file that no longer matches the SHA-256 recorded beside it when it was
    obtained; `recover` says how to get it back. A file with no `.sha256` beside it (not
    from the cache) is not checked."""
    path = Path(path)
    if path.is_file() and _sidecar(path).is_file() and not _cached_ok(path, None):
        raise RactError(
            f"{path}: changed since it was downloaded (its SHA-256 no longer matches "
            f"{_sidecar(path).name}); {recover}"
        )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _cached_ok(path: Path, expected: str | None) -> bool:
    """Whether `path` has SHA-256 `expected` (None: the one recorded beside it). Hashing a
    multi-GB file takes seconds to minutes, so a file whose size and mtime are those recorded
    at its last check is not hashed again (as git and make trust them); any edit changes the
    mtime."""
    if not path.is_file():
        return False
    recorded, stamp = _recorded(path)
    expected = expected or recorded
    if expected is None:
        return False  # no record of a verified extraction
    if recorded == expected and stamp is not None and stamp == _stamp(path):
        return True
    got = _hash_file(path, "sha256")
    if got != expected:
        log.warning("cached %s has SHA-256 %s, expected %s", path, got, expected)
        return False
    with contextlib.suppress(OSError):  # a read-only cache is simply hashed every time
        _record(path, got)
    return True


def _recorded(path: Path) -> tuple[str | None, str | None]:
    """SHA-256 and stamp in the sidecar: a `sha256sum` line, then optionally a comment with
    the file's size and mtime when it last matched (`sha256sum -c` skips it)."""
    try:
        lines = _sidecar(path).read_text(encoding="utf-8").splitlines()
        return lines[0].split()[0], (lines[1:] or [None])[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None, None


def _record(path: Path, sha256: str) -> None:
    stamp = _stamp(path)
    write_text(_sidecar(path), f"{sha256}  {path.name}\n" + (f"{stamp}\n" if stamp else ""))


def _stamp(path: Path) -> str | None:
    """The file's size and mtime; None while the mtime is under 2 s old, since a same-size edit
    within the file system's timestamp granularity would keep it (git's "racy clean" files)."""
    st = path.stat()
    if time.time_ns() - st.st_mtime_ns < 2_000_000_000:
        return None
    return f"# checked at size {st.st_size}, mtime_ns {st.st_mtime_ns}"


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Datasets without automatic download: files the user put in the cache folder


def _local_route(dataset: Dataset, folder: Path) -> Path:
    found = sorted({p for pattern in dataset.files for p in folder.glob(pattern) if p.is_file()})
    if not found:
        raise RactError(
            f"dataset {dataset.name!r}: no {' or '.join(dataset.files)} under {folder}: "
            f"{dataset.obtain}. Put the file(s) in {folder}/, or give their location in the "
            f"config (`path:` with `format: {dataset.format}` instead of `source: "
            f"{dataset.name}`), or pass it to `ract prepare --input PATH --format "
            f"{dataset.format}`"
        )
    if dataset.rows is not None:
        rows = sum(_count_data_lines(p, dataset.format) for p in found)
        if rows != dataset.rows:
            log.warning(
                "dataset %s: %s holds %s interactions, the documented full release %s; "
                "results will not be comparable with the paper unless this is intended",
                dataset.name,
                folder,
                f"{rows:,}",
                f"{dataset.rows:,}",
            )
    log.info("using %s (%d file(s) found, placed by hand)", folder, len(found))
    return folder / dataset.member if dataset.member != "." else folder


def _count_data_lines(path: Path, fmt: str) -> int:
    """Lines with an interaction, counted in bytes (seconds for the full MSD file): every line
    ending a newline, minus Netflix 'movie:' lines (the only lines with a colon there)."""
    lines = colons = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            lines += block.count(b"\n")
            colons += block.count(b":") if fmt == "netflix" else 0
            last = block[-1:]
    return lines + (last != b"\n") - colons


# ---------------------------------------------------------------------------------------------
# Normal route: the publisher's zip


def _archive_route(
    dataset: Dataset, archive: Path, folder: Path, offline: bool, timeout: float
) -> Path:
    if archive.is_file():
        if dataset.md5 is None or _hash_file(archive, "md5") == dataset.md5:
            log.info("using cached archive %s", archive)
        else:
            log.warning("cached %s does not match its MD5; deleting it", archive)
            archive.unlink()
    if not archive.is_file():
        if offline:
            raise _RouteFailed(f"{archive} is not in the cache and offline mode does not download")
        _download(dataset.url, archive, dataset.md5, timeout)
    target = folder / PurePosixPath(dataset.member).name
    try:
        _extract(archive, dataset.member, target)
    except _RouteFailed:
        if dataset.md5 is None:  # unverified download: do not keep it around
            archive.unlink(missing_ok=True)
        raise
    return target


def _download(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Fetch `url` into `dest` (through a temporary name), checking its MD5 when one is known."""
    log.info("downloading %s", url)
    with atomic_path(dest) as tmp:
        md5_digest, sha_digest, size = hashlib.md5(), hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while block := response.read(_BLOCK):
                    out.write(block)
                    md5_digest.update(block)
                    sha_digest.update(block)
                    size += len(block)
        except TimeoutError:
            raise _RouteFailed(f"no response within {timeout:g} s") from None
        except urllib.error.HTTPError as exc:
            raise _RouteFailed(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _RouteFailed(f"no response within {timeout:g} s") from None
            raise _RouteFailed(_one_line(reason)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _RouteFailed(_one_line(exc) or type(exc).__name__) from None
        got = md5_digest.hexdigest()
        if md5 is not None and got != md5:
            raise _RouteFailed(f"MD5 mismatch: expected {md5}, got {got} (download deleted)")
        log.info(
            "downloaded %s: %s bytes, MD5 %s%s, SHA-256 %s",
            dest.name,
            f"{size:,}",
            got,
            "" if md5 else " (no published MD5 to check)",
            sha_digest.hexdigest(),
        )


def _extract(
    archive: Path, member: str, target: Path, *, size: int | None = None, sha256: str | None = None
) -> None:
    """Copy `member` of zip `archive` to `target`, check it, and record its SHA-256 beside it."""
    digest, count = hashlib.sha256(), 0
    try:
        with zipfile.ZipFile(archive) as zf, atomic_path(target) as tmp:
            with zf.open(member) as src, open(tmp, "wb") as out:
                while block := src.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    count += len(block)
            got = digest.hexdigest()
            if size is not None and count != size:
                raise _RouteFailed(
                    f"{member} in {archive.name} has {count:,} bytes, expected {size:,}"
                )
            if sha256 is not None and got != sha256:
                raise _RouteFailed(f"SHA-256 mismatch for {member}: expected {sha256}, got {got}")
    except KeyError:
        raise _RouteFailed(f"{archive} has no member {member}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _RouteFailed(f"{archive} is not a readable zip archive ({_one_line(exc)})") from None
    except OSError as exc:
        raise _RouteFailed(
            f"could not extract {member} from {archive}: {_one_line(exc)}"
        ) from None
    _record(target, got)
    log.info("extracted %s (%s bytes, SHA-256 %s)", target, f"{count:,}", got)


# ---------------------------------------------------------------------------------------------
# Offline route: a wheel from the package registry


def _wheel_route(route: WheelRoute, wheels: Path, folder: Path, timeout: float) -> Path:
    wheel = wheels / route.wheel
    if wheel.is_file() and _hash_file(wheel, "sha256") != route.wheel_sha256:
        log.warning("cached %s does not match its SHA-256; deleting it", wheel)
        wheel.unlink()
    if not wheel.is_file():
        _pip_download(route, wheels, timeout)
    target = folder / PurePosixPath(route.member).name
    _extract(wheel, route.member, target, size=route.member_size, sha256=route.member_sha256)
    return target


def _pip_download(route: WheelRoute, wheels: Path, timeout: float) -> None:
    """Put the verified wheel at `wheels/route.wheel` using `pip download` (never installs)."""
    wheels.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=wheels, prefix=".pip-"))
    limit = max(60.0, 6 * timeout)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        route.requirement,
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--timeout",
        f"{timeout:g}",
        "--retries",
        "1",
        "--dest",
        str(scratch),
    ]
    log.info("fetching %s with pip download", route.wheel)
    try:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise _RouteFailed(f"pip download did not finish within {limit:g} s") from None
        except OSError as exc:
            raise _RouteFailed(f"could not run pip: {_one_line(exc)}") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
            lines = [line for line in lines if line] or [f"exit status {done.returncode}"]
            raise _RouteFailed(f"pip download failed: {lines[-1]}")
        got = scratch / route.wheel
        if not got.is_file():
            found = ", ".join(sorted(p.name for p in scratch.iterdir())) or "nothing"
            raise _RouteFailed(f"pip download saved {found}, not {route.wheel}")
        sha = _hash_file(got, "sha256")
        if sha != route.wheel_sha256:
            raise _RouteFailed(
                f"SHA-256 mismatch for {route.wheel}: expected {route.wheel_sha256}, got {sha}"
            )
        os.replace(got, wheels / route.wheel)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _one_line(value) -> str:
    return " ".join(str(value).split())
