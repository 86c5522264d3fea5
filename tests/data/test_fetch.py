"""Tests for finalmlp.data.fetch: offline, through file:// URLs and a stubbed urlopen."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import urllib.error
import zipfile
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from finalmlp.data import fetch
from finalmlp.data.fetch import DATASETS, DatasetSource, RemoteFile, fetch_dataset, mirror_url
from finalmlp.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FRAPPE_RAW = SHARED_DATA / "frappe_raw"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    """Write a zip holding ``members`` (name -> bytes) at ``path``."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def _make_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """Write a .tar.gz holding ``members`` (name -> bytes) at ``path``, names kept verbatim."""
    with tarfile.open(path, "w:gz") as tarred:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    return path


def _register(
    monkeypatch: pytest.MonkeyPatch,
    archive: Path,
    *,
    sha256: str | None = "auto",
    extracted_md5: tuple[tuple[str, str], ...] = (),
) -> str:
    """Add a registry entry ``toy`` for ``archive``; return its mirror base URL."""
    digest = _sha256(archive) if sha256 == "auto" else sha256
    remote = RemoteFile(f"https://example.invalid/x/{archive.name}", archive.name, digest)
    homepage = "https://example.invalid"
    source = DatasetSource("toy", "toy", (remote,), True, "none", homepage, extracted_md5)
    monkeypatch.setitem(DATASETS, "toy", source)
    return archive.parent.as_uri()


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    folder.mkdir()
    return folder


class _FakeResponse:
    """Stands in for urlopen's response: sends ``chunks``, then raises ``error`` if given."""

    def __init__(self, chunks: list[bytes], error: BaseException | None, length: int) -> None:
        self.headers = Message()
        self.headers["Content-Length"] = str(length)
        self._chunks, self._error = list(chunks), error

    def read(self, _size: int) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._error is not None:
            raise self._error
        return b""

    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _opener(error: BaseException, total: int = 1000) -> Any:
    """A urlopen replacement sending 10 bytes of a ``total``-byte file, then raising."""
    return lambda *args, **kwargs: _FakeResponse([b"x" * 10], error, total)


@pytest.mark.skipif(not FRAPPE_RAW.is_dir(), reason=f"shared data not found at {FRAPPE_RAW}")
def test_fetch_frappe_raw_from_local_mirror(tmp_path: Path) -> None:
    dataset_dir = fetch_dataset(
        "frappe_raw", tmp_path, base_url=FRAPPE_RAW.resolve().as_uri(), progress=False
    )
    assert dataset_dir == tmp_path / "frappe_raw"
    archive = dataset_dir / "Mobile_Frappe.zip"
    assert _sha256(archive) == DATASETS["frappe_raw"].files[0].sha256
    extracted = dataset_dir / "Mobile_Frappe" / "frappe" / "frappe.csv"
    assert extracted.read_bytes() == (FRAPPE_RAW / "frappe.csv").read_bytes()
    names = sorted(p.name for p in dataset_dir.iterdir())  # no temporary files left over
    assert names == [".Mobile_Frappe.zip.extracted", "Mobile_Frappe", "Mobile_Frappe.zip"]


def test_progress_bar_path_downloads_and_extracts(
    monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path
) -> None:
    archive = _make_zip(mirror / "toy.zip", {"toy/a.csv": b"a,b\n1,2\n"})
    base_url = _register(monkeypatch, archive)
    dataset_dir = fetch_dataset("toy", tmp_path / "out", base_url=base_url, progress=True)
    assert (dataset_dir / "toy" / "a.csv").read_bytes() == b"a,b\n1,2\n"


def test_checksum_mismatch_raises_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path
) -> None:
    archive = _make_zip(mirror / "toy.zip", {"a.csv": b"1\n"})
    base_url = _register(monkeypatch, archive, sha256="0" * 64)
    with pytest.raises(DataError, match=r"checksum mismatch for toy\.zip .*expected sha256 0{64}"):
        fetch_dataset("toy", tmp_path / "out", base_url=base_url, progress=False)
    assert _files_in(tmp_path / "out") == []


def test_refetch_skips_download_unless_forced(
    monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path
) -> None:
    archive = _make_zip(mirror / "toy.zip", {"a.csv": b"1\n"})
    base_url = _register(monkeypatch, archive)
    fetch_dataset("toy", tmp_path, base_url=base_url, progress=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("urlopen must not be called for a verified file")

    monkeypatch.setattr(fetch, "urlopen", refuse)
    assert fetch_dataset("toy", tmp_path, base_url=base_url, progress=False) == tmp_path / "toy"
    with pytest.raises(AssertionError, match="must not be called"):
        fetch_dataset("toy", tmp_path, base_url=base_url, force=True, progress=False)
    assert (tmp_path / "toy" / "toy.zip").is_file()  # a failed forced fetch keeps the old file


def test_corrupt_local_file_is_downloaded_again(
    monkeypatch: pytest.MonkeyPatch,
    mirror: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = _make_zip(mirror / "toy.zip", {"a.csv": b"1\n"})
    base_url = _register(monkeypatch, archive)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip").write_bytes(b"truncated")
    fetch_dataset("toy", tmp_path, base_url=base_url, progress=False)
    assert _sha256(tmp_path / "toy" / "toy.zip") == _sha256(archive)
    assert "downloading it again" in capsys.readouterr().err


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'frape_x1'; did you mean 'frappe_x1'\?"):
        fetch_dataset("frape_x1", Path("unused"), progress=False)
    with pytest.raises(DataError, match=r"Valid names: avazu_x1, criteo_kaggle, criteo_x1"):
        fetch_dataset("zzz", Path("unused"), progress=False)


@pytest.mark.parametrize(
    ("maker", "filename", "member"),
    [
        (_make_zip, "evil.zip", "../escaped.txt"),
        (_make_zip, "evil.zip", "/tmp/absolute.txt"),
        (_make_tar_gz, "evil.tar.gz", "../escaped.txt"),
        (_make_tar_gz, "evil.tar.gz", "/tmp/absolute.txt"),
    ],
)
def test_path_traversal_member_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
    mirror: Path,
    tmp_path: Path,
    maker: Any,
    filename: str,
    member: str,
) -> None:
    archive = maker(mirror / filename, {"ok.txt": b"fine", member: b"evil"})
    base_url = _register(monkeypatch, archive)
    out = tmp_path / "deep" / "out"
    with pytest.raises(DataError, match=rf"unsafe member {re.escape(repr(member))}"):
        fetch_dataset("toy", out, base_url=base_url, progress=False)
    assert not (out / "escaped.txt").exists() and not (out.parent / "escaped.txt").exists()
    assert not (out / "toy" / "ok.txt").exists()  # nothing is extracted from a bad archive
    assert not [p for p in (out / "toy").iterdir() if p.name.startswith(".extract-")]


def test_tar_symlink_member_is_rejected(
    monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path
) -> None:
    archive = mirror / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tarred:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tarred.addfile(link)
    base_url = _register(monkeypatch, archive)
    with pytest.raises(DataError, match=r"unsafe member 'passwd' .*link or special file"):
        fetch_dataset("toy", tmp_path, base_url=base_url, progress=False)


def test_interrupted_download_leaves_no_partial_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    archive = _make_zip(tmp_path / "toy.zip", {"a.csv": b"1\n"})
    _register(monkeypatch, archive)
    out = tmp_path / "out"
    monkeypatch.setattr(fetch, "urlopen", _opener(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("toy", out, progress=False)
    assert _files_in(out) == []
    monkeypatch.setattr(fetch, "urlopen", _opener(ConnectionResetError("reset by peer")))
    with pytest.raises(DataError, match=r"cannot download https://example\.invalid/x/toy\.zip"):
        fetch_dataset("toy", out, progress=True)
    assert _files_in(out) == []


def test_truncated_download_is_a_network_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    archive = _make_zip(tmp_path / "toy.zip", {"a.csv": b"1\n"})
    _register(monkeypatch, archive)
    monkeypatch.setattr(fetch, "urlopen", lambda *a, **k: _FakeResponse([b"x" * 10], None, 50))
    with pytest.raises(DataError, match=r"cannot download .*IncompleteRead"):
        fetch_dataset("toy", tmp_path / "out", progress=False)
    assert _files_in(tmp_path / "out") == []


def test_network_failure_names_url_reason_and_fixes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    archive = _make_zip(tmp_path / "toy.zip", {"a.csv": b"1\n"})
    _register(monkeypatch, archive)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch, "urlopen", unreachable)
    out = tmp_path / "out"
    pattern = (
        r"^cannot download https://example\.invalid/x/toy\.zip: Name or service not known; "
        r"retry, use --base-url URL .* download toy\.zip manually into .*out/toy$"
    )
    with pytest.raises(DataError, match=pattern):
        fetch_dataset("toy", out, progress=False)


def test_missing_file_on_mirror_is_a_network_error(
    monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path
) -> None:
    archive = _make_zip(tmp_path / "toy.zip", {"a.csv": b"1\n"})  # not in the mirror
    _register(monkeypatch, archive)
    with pytest.raises(DataError, match=r"cannot download file://.*/mirror/toy\.zip: "):
        fetch_dataset("toy", tmp_path / "out", base_url=mirror.as_uri(), progress=False)
    assert _files_in(tmp_path / "out") == []


def test_unverified_file_warns_with_its_sha256(
    monkeypatch: pytest.MonkeyPatch,
    mirror: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = _make_tar_gz(mirror / "toy.tar.gz", {"data/a.csv": b"1\n"})
    base_url = _register(monkeypatch, archive, sha256=None)
    dataset_dir = fetch_dataset("toy", tmp_path, base_url=base_url, progress=False)
    err = capsys.readouterr().err
    assert "toy.tar.gz is unverified" in err
    assert _sha256(archive) in err
    assert (dataset_dir / "data" / "a.csv").read_bytes() == b"1\n"


def test_extracted_files_are_checked_against_published_md5(
    monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path
) -> None:
    members = {"Toy_x1/train.csv": b"1\n", "Toy_x1/test.csv": b"2\n"}
    archive = _make_zip(mirror / "toy.zip", members)
    good = (("train.csv", _md5(b"1\n")), ("test.csv", _md5(b"2\n")))
    base_url = _register(monkeypatch, archive, sha256=None, extracted_md5=good)
    fetch_dataset("toy", tmp_path / "good", base_url=base_url, progress=False)

    bad = (("train.csv", _md5(b"1\n")), ("test.csv", "f" * 32))
    _register(monkeypatch, archive, sha256=None, extracted_md5=bad)
    with pytest.raises(DataError, match=r"checksum mismatch for .*test\.csv: expected md5 f{32}"):
        fetch_dataset("toy", tmp_path / "bad", base_url=base_url, progress=False)
    with pytest.raises(DataError, match="checksum mismatch"):  # no marker: checked again
        fetch_dataset("toy", tmp_path / "bad", base_url=base_url, progress=False)


def test_mirror_url_uses_local_filename() -> None:
    remote = DATASETS["frappe_raw"].files[0]
    assert mirror_url(remote, None) == remote.url
    assert mirror_url(remote, "file:///srv/mirror/") == "file:///srv/mirror/Mobile_Frappe.zip"


def test_registry_entries_are_well_formed() -> None:
    assert set(DATASETS) == {
        "frappe_x1",
        "criteo_x1",
        "avazu_x1",
        "movielenslatest_x1",
        "criteo_kaggle",
        "frappe_raw",
    }
    for name, source in DATASETS.items():
        assert source.name == name and source.files and source.homepage.startswith("https://")
        for remote in source.files:
            assert remote.url.startswith("https://")
            assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
            assert remote.md5 is None or re.fullmatch(r"[0-9a-f]{32}", remote.md5)
        for member, md5 in source.extracted_md5:
            assert member.endswith(".csv") and re.fullmatch(r"[0-9a-f]{32}", md5)
    assert len(DATASETS["frappe_x1"].extracted_md5) == 3
