"""Which files make a streamed training split (``data.streaming``), and their state for the
encoded-data cache key."""

from __future__ import annotations

import glob
from pathlib import Path

from finalmlp.data.badrows import QUARANTINE_SUFFIX
from finalmlp.errors import DataError
from finalmlp.schema import DataConfig

_SUFFIXES = {
    "csv": (".csv", ".csv.gz"),
    "tsv": (".tsv", ".tsv.gz", ".txt"),
    "parquet": (".parquet",),
}


def train_files(config: DataConfig) -> list[Path]:
    """The training files of a streaming config: a folder's files of the format (sorted), the
    matches of a glob pattern (sorted), or one file."""
    assert config.train is not None
    path = Path(config.train)
    text = str(config.train)
    suffixes = _SUFFIXES.get(config.format, ())
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
        files = [p for p in files if not p.name.endswith(QUARANTINE_SUFFIX)]
        where = f"the folder {path}"
        hint = f"files ending in {', '.join(suffixes)}"
    elif any(c in text for c in "*?["):
        files = sorted(
            Path(p)
            for p in glob.glob(text)
            if Path(p).is_file() and not p.endswith(QUARANTINE_SUFFIX)
        )
        where = f"the pattern {text}"
        hint = "files that match it"
    else:
        if not path.is_file():
            raise DataError(
                f"data.train {path} does not exist; give a file, a folder or a glob pattern"
            )
        return [path]
    if not files:
        raise DataError(f"{where} holds no training files ({hint}); check data.train")
    for name in ("valid", "test"):
        other = getattr(config, name)
        if other is not None and Path(other).resolve() in {f.resolve() for f in files}:
            raise DataError(
                f"data.{name} {other} is also one of the training files of {where}: the model "
                f"would train on its {name} rows; move it out of the folder or narrow data.train"
            )
    return files


def file_states(files: list[Path]) -> list[list[object]]:
    """What the cache key needs to know of the training files."""
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
