"""Shared fixtures: the real data folder (skipped when absent) and a tiny field layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.schema import DataConfig

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests needing it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (licensed data is not shipped)")
    return SHARED_DATA.resolve()


@pytest.fixture
def layout() -> FieldLayout:
    """3 categorical fields (the third shares the first's table), 2 numeric, 1 sequence."""
    return FieldLayout(
        table_sizes=(12, 7, 9),
        categorical_fields=("user", "item", "user2"),
        categorical_tables=(0, 1, 0),
        numeric_fields=("price", "age"),
        sequence_fields=("history",),
        sequence_tables=(2,),
    )


def random_batch(layout: FieldLayout, size: int = 32, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [
            torch.randint(1, layout.table_sizes[t], (size,), generator=generator)
            for t in layout.categorical_tables
        ],
        dim=1,
    ).to(torch.int32)
    numeric = torch.randn(size, len(layout.numeric_fields), generator=generator)
    sequences = []
    for table in layout.sequence_tables:
        seq = torch.randint(1, layout.table_sizes[table], (size, 4), generator=generator)
        seq[: size // 2, 2:] = 0  # padded tails
        seq[0] = 0  # an empty sequence
        sequences.append(seq.to(torch.int32))
    label = torch.randint(0, 2, (size,), generator=generator).float()
    return Batch(cat, numeric, tuple(sequences), label)


def write_file(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    """Write a small data file for reader tests."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def reader_config(path: Path, **overrides: Any) -> DataConfig:
    """A data config reading ``path`` with a categorical ``user`` and a numeric ``price``."""
    raw: dict[str, Any] = {
        "train": path,
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "price", "type": "numeric"},
        ],
    }
    return DataConfig.model_validate({**raw, **overrides})
