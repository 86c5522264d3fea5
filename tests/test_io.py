"""Atomic writes: complete or absent, never half-written; usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from finalmlp.io import atomic_directory, atomic_write, atomic_write_text


def test_atomic_write_replaces_whole_file_with_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp files left


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def explode(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_directory_swaps_whole_directory_or_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with atomic_directory(run) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (run / "a.txt").read_text() == "1"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(run.stat().st_mode) == 0o777 & ~mask
    with pytest.raises(ValueError), atomic_directory(run) as tmp:
        (tmp / "b.txt").write_text("2")
        raise ValueError("crash mid-write")
    assert sorted(p.name for p in run.iterdir()) == ["a.txt"]  # old run intact
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # temp dir removed
