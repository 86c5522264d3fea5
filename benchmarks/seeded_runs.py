"""What the seeded result tables share (bench_defaults.py, bench_probabilities.py): the command
line (sets x seeds into a work folder, results appended to a JSON-lines file, ``--table`` to
print that file instead), the file's records grouped per set and arm, and mean ± std cells."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def parser(doc: str, sets: str, seeds: str, work: Path, out: Path) -> argparse.ArgumentParser:
    """``--sets``, ``--seeds``, ``--work``, ``--out`` and ``--table`` with these defaults."""
    result = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    result.add_argument("--sets", default=sets)
    result.add_argument("--seeds", default=seeds)
    result.add_argument("--work", type=Path, default=work)
    result.add_argument("--out", type=Path, default=out)
    result.add_argument("--table", action="store_true", help="print --out as a table, run none")
    return result


def seeds(text: str) -> list[int]:
    """``"2021,2022"`` -> ``[2021, 2022]``."""
    return [int(seed) for seed in text.split(",")]


def grouped(path: Path, key: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The records of a results file per (set, ``key``), in file order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        groups.setdefault((record["set"], record[key]), []).append(record)
    return groups


def mean_std(values: list[float], always: bool = True) -> str:
    """``0.9812 ± 0.0011`` (the ± part only for several values unless ``always``)."""
    text = f"{np.mean(values):.4f}"
    return text + (f" ± {np.std(values):.4f}" if always or len(values) > 1 else "")


def append(path: Path, record: dict[str, Any]) -> None:
    """One record as a line of the results file."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
