"""Download public CTR datasets into a local directory, verified and extracted.

Backs ``finalmlp data fetch NAME [--dest DIR] [--base-url URL]``: the CLI calls
:func:`fetch_dataset` and turns :class:`~finalmlp.errors.DataError` into one line.

Guarantees:
    * a download is streamed into a temporary file in the target directory, hashed on the
      fly, checked, and only then renamed into place (``os.replace``), so no half-written or
      unverified file is ever left behind, also on error or Ctrl-C;
    * a file already present with the right checksum is not downloaded again (unless
      ``force``); a present file whose checksum is wrong is downloaded again;
    * archives are extracted only after every member name was checked (no absolute paths,
      no ``..``, no links or devices), into a temporary directory moved into place after;
    * where the publisher gives checksums only for the files inside an archive (the reczoo
      BARS datasets publish ``md5sum train.csv valid.csv test.csv``), those are checked after
      extraction; a file with no published checksum at all is reported as unverified, with
      the sha256 computed here so the user can pin it.

Example:
    >>> fetch_dataset("frappe_x1", Path("data"))  # doctest: +SKIP
    PosixPath('data/frappe_x1')
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import secrets
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any
from urllib.request import Request, urlopen

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from finalmlp.errors import DataError

__all__ = ["DATASETS", "DatasetSource", "RemoteFile", "fetch_dataset"]

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "finalmlp-data-fetch/0.1 (+python-urllib)"
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


@dataclass(frozen=True)
class RemoteFile:
    """One file to download.

    Attributes:
        url: Official download location.
        filename: Name the file gets locally, and its name on a mirror (``base_url``).
        sha256: Published (or pinned) sha256 of the file; ``None`` if none is known.
        md5: Published md5 of the file, if any.
        size: Exact size in bytes, if known.
    """

    url: str
    filename: str
    sha256: str | None
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A dataset the ``data fetch`` command knows how to download.

    Attributes:
        name: Registry key and name of the directory created under ``dest``.
        description: One line for ``--help`` and listings.
        files: The files to download.
        extract: Whether to extract downloaded ``.zip`` / ``.tar.gz`` archives.
        licence: Terms of use, in short; read the homepage before using the data.
        homepage: Where the dataset and its terms are described.
        extracted_md5: Published md5 of files inside the archives, as
            ``(relative path or file name, md5)`` pairs, checked after extraction.
    """

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    extract: bool
    licence: str
    homepage: str
    extracted_md5: tuple[tuple[str, str], ...] = ()


# `md5sum train.csv valid.csv test.csv` as published on each reczoo dataset card ("Check the
# md5sum for data integrity", huggingface.co/datasets/reczoo/<ID>, also reczoo/BARS datasets/).
_RECZOO_MD5SUMS = """
ba7306e6c4fc19dd2cd84f2f0596d158  Frappe_x1/train.csv
88d51bf2173505436d3a8f78f2a59da8  Frappe_x1/valid.csv
3470f6d32713dc5f7715f198ca7c612a  Frappe_x1/test.csv
30b89c1c7213013b92df52ec44f52dc5  Criteo_x1/train.csv
f73c71fb3c4f66b6ebdfa032646bea72  Criteo_x1/valid.csv
2c48b26e84c04a69b948082edae46f8c  Criteo_x1/test.csv
f1114a07aea9e996842c71648e0f6395  Avazu_x1/train.csv
d9568f246357d156c4b8030fadb8b623  Avazu_x1/valid.csv
9e2fe9c48705c9315ae7a0953eb57acf  Avazu_x1/test.csv
efc8bceeaa0e895d566470fc99f3f271  MovielensLatest_x1/train.csv
e1930223a5026e910ed5a48687de8af1  MovielensLatest_x1/valid.csv
54e8c6baff2e059fe067fb9b69e692d0  MovielensLatest_x1/test.csv
"""


def _reczoo(name: str, dataset_id: str, description: str, licence: str) -> DatasetSource:
    """Describe a reczoo BARS zip on Hugging Face; only its CSVs' md5 sums are published."""
    repo = f"https://huggingface.co/datasets/reczoo/{dataset_id}"
    rows = (line.split() for line in _RECZOO_MD5SUMS.strip().splitlines())
    csv_md5 = tuple(
        (path.split("/")[1], md5) for md5, path in rows if path.startswith(f"{dataset_id}/")
    )
    zip_file = RemoteFile(f"{repo}/resolve/main/{dataset_id}.zip", f"{dataset_id}.zip", None)
    return DatasetSource(name, description, (zip_file,), True, licence, repo, csv_md5)


_FRAPPE_TERMS = "research use only, cite Baltrunas et al. 2015 (arXiv:1505.03014)"
_CRITEO_TERMS = "Criteo's terms for the Kaggle challenge data (research use); see homepage"

# Mobile_Frappe.zip: the sha256 is the one ISG-Siegen/OmniRec pins for this URL
# (src/omnirec/data_loaders/frappe.py); it equals the copy in ../shared/data/frappe_raw, from
# which md5 and size were computed. No checksum is published for the reczoo zips themselves
# nor for Criteo's tarball: those are reported as unverified when fetched.
DATASETS: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        _reczoo(
            "frappe_x1",
            "Frappe_x1",
            "Frappe app usage, BARS split 7:2:1 (288,609 rows, 10 fields)",
            f"Frappe terms: {_FRAPPE_TERMS}",
        ),
        _reczoo(
            "criteo_x1",
            "Criteo_x1",
            "Criteo Kaggle display ads, BARS split 7:2:1 (45,840,617 rows, 39 fields)",
            _CRITEO_TERMS,
        ),
        _reczoo(
            "avazu_x1",
            "Avazu_x1",
            "Avazu mobile ads, BARS split 7:1:2 (40,428,967 rows, 22 fields)",
            "Avazu Kaggle competition rules (non-commercial research use); see homepage",
        ),
        _reczoo(
            "movielenslatest_x1",
            "MovielensLatest_x1",
            "MovieLens tag recommendation, BARS split 7:2:1 (2,006,859 rows, 3 fields)",
            "GroupLens MovieLens terms (research use, no redistribution); see homepage",
        ),
        DatasetSource(
            name="criteo_kaggle",
            description="Criteo Display Advertising Challenge raw logs (train.txt, test.txt)",
            files=(
                RemoteFile(
                    "https://go.criteo.net/"
                    "criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz",
                    "criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz",
                    None,
                ),
            ),
            extract=True,
            licence=_CRITEO_TERMS,
            homepage="https://ailab.criteo.com/ressources/",
        ),
        DatasetSource(
            name="frappe_raw",
            description="Original Frappe v1.0 app usage log (96,203 rows) with app metadata",
            files=(
                RemoteFile(
                    "https://www.baltrunas.info/_files/archives/"
                    "be17b7_474755a5e9684a749a012516d04fb456.zip?dn=Mobile_Frappe.zip",
                    "Mobile_Frappe.zip",
                    sha256="4adc616de57170f282397f6e6e30215f97fa7ad1b7f40bd12ef5dceaaf3e9b4e",
                    md5="baa2fc1dc2dca193b40af15f5683bc5d",
                    size=3_372_404,
                ),
            ),
            extract=True,
            licence=f"Frappe terms: {_FRAPPE_TERMS}; no redistribution, no commercial use",
            homepage="https://www.baltrunas.info/context-aware",
        ),
    )
}


def get_source(name: str) -> DatasetSource:
    """Return the registry entry for ``name`` or raise a DataError suggesting a close match."""
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    raise DataError(f"unknown dataset {name!r}{hint} Valid names: {', '.join(sorted(DATASETS))}")


def mirror_url(remote: RemoteFile, base_url: str | None) -> str:
    """Where to fetch ``remote`` from: its own URL, or ``base_url/filename`` on a mirror."""
    if base_url is None:
        return remote.url
    return f"{base_url.rstrip('/')}/{remote.filename}"


def _warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def _hash_file(path: Path) -> tuple[str, str]:
    """Return ``(sha256, md5)`` of a file, read in chunks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _mismatch(remote: RemoteFile, sha256: str, md5: str, size: int) -> str | None:
    """Describe how a file differs from what ``remote`` expects, or None if it matches."""
    if remote.size is not None and size != remote.size:
        return f"expected {remote.size:,} bytes, got {size:,}"
    if remote.sha256 is not None and sha256 != remote.sha256.lower():
        return f"expected sha256 {remote.sha256}, got {sha256}"
    if remote.md5 is not None and md5 != remote.md5.lower():
        return f"expected md5 {remote.md5}, got {md5}"
    return None


def _is_verified(remote: RemoteFile) -> bool:
    """Whether the registry holds a checksum to verify ``remote`` against."""
    return remote.sha256 is not None or remote.md5 is not None


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A Rich download progress bar on stderr, or None when disabled."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield progress


def _content_length(response: Any) -> int | None:
    """The response's Content-Length, if it sent a valid one."""
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _stream(url: str, out: IO[bytes], progress: Progress | None, label: str) -> tuple[str, str]:
    """Copy ``url`` into ``out`` chunk by chunk; return ``(sha256, md5)`` of what was copied."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    with urlopen(Request(url, headers={"User-Agent": USER_AGENT}), timeout=TIMEOUT_S) as response:
        total = _content_length(response)
        task = progress.add_task(label, total=total) if progress is not None else None
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            sha256.update(chunk)
            md5.update(chunk)
            received += len(chunk)
            if progress is not None and task is not None:
                progress.update(task, advance=len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return sha256.hexdigest(), md5.hexdigest()


def _network_error(exc: BaseException, url: str, remote: RemoteFile, folder: Path) -> DataError:
    """One-line DataError for a failed download, with what to do about it."""
    reason: object = exc
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason  # "[Errno -2] Name or service not known" rather than "<urlopen ...>"
    return DataError(
        f"cannot download {url}: {reason}; retry, use --base-url URL to fetch from a mirror, "
        f"or download {remote.filename} manually into {folder}"
    )


def _download(remote: RemoteFile, url: str, target: Path, progress: bool) -> str:
    """Download ``url`` to ``target`` atomically, verified against ``remote``; return sha256.

    The bytes go to a temporary file next to ``target``; it is renamed into place only after
    the checksums matched, and removed on any error, including KeyboardInterrupt.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with tmp.open("xb") as out, _progress_bar(progress) as bar:
            try:
                sha256, md5 = _stream(url, out, bar, remote.filename)
            except _NETWORK_ERRORS as exc:
                raise _network_error(exc, url, remote, target.parent) from exc
        problem = _mismatch(remote, sha256, md5, tmp.stat().st_size)
        if problem is not None:
            raise DataError(
                f"checksum mismatch for {remote.filename} from {url}: {problem}; the download "
                "was discarded (nothing kept): retry, or check your mirror / --base-url"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256


def _ensure_file(
    remote: RemoteFile, dataset_dir: Path, base_url: str | None, force: bool, progress: bool
) -> tuple[Path, str, bool]:
    """Make sure ``remote`` is present and verified; return ``(path, sha256, downloaded)``."""
    target = dataset_dir / remote.filename
    if target.is_file() and not force:
        sha256, md5 = _hash_file(target)
        problem = _mismatch(remote, sha256, md5, target.stat().st_size)
        if problem is None:
            return target, sha256, False
        _warn(f"{target} does not match the registry ({problem}); downloading it again")
    url = mirror_url(remote, base_url)
    return target, _download(remote, url, target, progress), True


def _check_member_name(name: str, archive: Path) -> None:
    """Reject archive member names that could write outside the extraction directory."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        raise DataError(
            f"unsafe member {name!r} in {archive} (absolute path or '..'); refusing to extract "
            "it: delete the archive and retry or check your mirror"
        )


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject tar members with unsafe names and anything but plain files and directories."""
    _check_member_name(member.name, archive)
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"unsafe member {member.name!r} in {archive} (link or special file); refusing to "
            "extract it: delete the archive and retry or check your mirror"
        )


def _extract_into(archive: Path, out_dir: Path) -> None:
    """Check every member of a zip or tar archive, then extract all of it into ``out_dir``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                _check_member_name(name, archive)
            zipped.extractall(out_dir)
        return
    try:
        with tarfile.open(archive, "r:*") as tarred:
            members = tarred.getmembers()
            for member in members:
                _check_tar_member(member, archive)
            tarred.extractall(out_dir, members=members, filter="data")
    except tarfile.TarError as exc:
        raise DataError(f"cannot extract {archive}: {exc}; delete it and retry") from exc


def _extract(archive: Path, dataset_dir: Path) -> None:
    """Extract ``archive`` next to itself, via a temporary directory moved into place."""
    staging = Path(tempfile.mkdtemp(dir=dataset_dir, prefix=".extract-"))
    try:
        _extract_into(archive, staging)
        for entry in staging.iterdir():
            destination = dataset_dir / entry.name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)  # an older extraction of the same archive
            elif destination.is_symlink() or destination.exists():
                destination.unlink()
            os.replace(entry, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _marker(archive: Path) -> Path:
    """File recording that ``archive`` was extracted (it holds the archive's sha256)."""
    return archive.with_name(f".{archive.name}.extracted")


def _already_extracted(archive: Path, sha256: str) -> bool:
    """Whether this exact archive was extracted and verified before."""
    marker = _marker(archive)
    return marker.is_file() and marker.read_text().strip() == sha256


def _find_member(dataset_dir: Path, relative: str) -> Path:
    """Locate an extracted file by relative path, or by name anywhere below ``dataset_dir``."""
    direct = dataset_dir / relative
    if direct.is_file():
        return direct
    found = sorted(p for p in dataset_dir.rglob(PurePosixPath(relative).name) if p.is_file())
    if not found:
        raise DataError(
            f"expected {relative!r} in the extracted archive under {dataset_dir}, found none; "
            "delete the directory and retry or check your mirror"
        )
    return found[0]


def _verify_extracted(source: DatasetSource, dataset_dir: Path) -> None:
    """Check the published md5 of files that came out of the archives."""
    for relative, expected in source.extracted_md5:
        path = _find_member(dataset_dir, relative)
        _, md5 = _hash_file(path)
        if md5 != expected.lower():
            raise DataError(
                f"checksum mismatch for {path}: expected md5 {expected}, got {md5}; "
                f"delete {dataset_dir} and retry or check your mirror"
            )


def _warn_unverified(path: Path, sha256: str, members_checked: bool) -> None:
    """Say that ``path`` has no published checksum, and give its sha256 for pinning."""
    after = (
        "; the extracted files are checked against their published md5 sums"
        if members_checked
        else ""
    )
    _warn(
        f"{path.name} is unverified: no checksum is published for it; its sha256 is {sha256} "
        f"(pin this value to detect changes){after}"
    )


def _is_archive(path: Path) -> bool:
    """Whether ``path`` is named like an archive this module extracts."""
    name = path.name.lower()
    return name.endswith((".zip", ".tar.gz", ".tgz", ".tar"))


def fetch_dataset(
    name: str,
    dest: Path,
    *,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download, verify and extract dataset ``name`` into ``dest/name``; return that directory.

    Args:
        name: A key of :data:`DATASETS`, e.g. ``"frappe_x1"``.
        dest: Parent directory; created if missing.
        base_url: Mirror to use instead of the official locations: each file is fetched from
            ``base_url/filename`` (``https://...`` or ``file:///...``).
        force: Download and extract again even if verified files are present.
        progress: Show a Rich progress bar per download.

    Raises:
        DataError: Unknown name, network failure, checksum mismatch or unsafe archive.
    """
    source = get_source(name)
    dataset_dir = Path(dest) / source.name
    dataset_dir.mkdir(parents=True, exist_ok=True)
    extracted: list[tuple[Path, str]] = []
    for remote in source.files:
        path, sha256, downloaded = _ensure_file(remote, dataset_dir, base_url, force, progress)
        if not _is_verified(remote):
            _warn_unverified(path, sha256, bool(source.extracted_md5))
        if not (source.extract and _is_archive(path)):
            continue
        if force or downloaded or not _already_extracted(path, sha256):
            _marker(path).unlink(missing_ok=True)
            _extract(path, dataset_dir)
            extracted.append((path, sha256))
    if extracted:
        _verify_extracted(source, dataset_dir)
        for path, sha256 in extracted:  # written last: a failed check is redone next time
            _marker(path).write_text(sha256 + "\n")
    return dataset_dir
