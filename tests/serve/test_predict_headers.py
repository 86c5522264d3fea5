"""``predict`` never scores a header line as a row, whatever the run's ``has_header`` says."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from finalmlp.config import parse_config
from finalmlp.data.recipes import CRITEO_CATEGORICAL, CRITEO_NUMERIC
from finalmlp.predict import predict_file
from finalmlp.train.run import train_from_config


@pytest.fixture(scope="module")
def criteo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LR run on criteo_small (TSV files without header), every column categorical, so a
    header line would score like any row instead of failing to parse."""
    shared = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "criteo_small"
    if not shared.is_dir():
        pytest.skip(f"real data folder {shared} is absent (licensed data is not shipped)")
    folder = tmp_path_factory.mktemp("criteo")
    names = [*CRITEO_NUMERIC, *CRITEO_CATEGORICAL]
    config = parse_config(
        {
            "data": {
                "recipe": "criteo",
                "train": str(shared / "train.csv"),
                "valid": str(shared / "dev.csv"),
                "test": str(shared / "test.csv"),
                "has_header": False,
                "cache_dir": str(folder / "cache"),
                "features": [{"name": n, "type": "categorical", "min_count": 5} for n in names],
            },
            "model": {"name": "lr"},
            "train": {"max_epochs": 1, "progress": False, "batch_size": 1024},
        }
    )
    train_from_config(config, folder / "run")
    return folder


def test_predict_skips_the_header_of_a_file_the_run_reads_without_one(criteo_run: Path) -> None:
    # Was: 392 scores for 391 rows (the header line scored as a row).
    source = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "criteo_small"
    lines = (source / "test.csv").read_text(encoding="utf-8").splitlines()
    header = "\t".join(["label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL])
    bare, with_header = criteo_run / "bare.tsv", criteo_run / "header.tsv"
    bare.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with_header.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    run = criteo_run / "run"
    assert predict_file(run, bare, criteo_run / "bare_scores.csv", backend="torch") == 391
    assert predict_file(run, with_header, criteo_run / "scores.csv", backend="torch") == 391
    scores = pl.read_csv(criteo_run / "scores.csv")["score"]
    assert scores.equals(pl.read_csv(criteo_run / "bare_scores.csv")["score"])
