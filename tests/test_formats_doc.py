"""docs/formats.md works as written: every YAML block is a config that parses, and every config
whose data files the page shows (```text FILE blocks) trains on them end to end; the Parquet
one trains on files made here with the columns it names, a list column included."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from finalmlp.config import parse_config
from finalmlp.predict import predict_file
from finalmlp.schema import DataConfig
from finalmlp.train.run import train_from_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
_BLOCK = re.compile(r"^```(?P<lang>\w+)[ \t]*(?P<name>\S*)\n(?P<body>.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str, str]]:
    return [(m["lang"], m["name"], m["body"]) for m in _BLOCK.finditer(DOC.read_text("utf-8"))]


CONFIGS = [yaml.safe_load(body) for lang, _, body in _blocks() if lang == "yaml"]
FILES = {name: body for lang, name, body in _blocks() if lang == "text" and name}


def _data_files(raw: dict[str, Any]) -> list[str]:
    data = raw["data"]
    names = [data[s] for s in ("train", "valid", "test") if s in data]
    field_map = (data.get("libsvm") or {}).get("field_map")
    return names + ([field_map] if field_map else [])


def _ids(configs: list[dict[str, Any]]) -> list[str]:
    return [
        f"{i}-{c['data'].get('format', c['data'].get('recipe'))}" for i, c in enumerate(configs)
    ]


def test_the_page_shows_every_file_format() -> None:
    formats = {DataConfig.model_fields["format"].annotation.__args__}  # type: ignore[union-attr]
    shown = {parse_config(raw).data.format for raw in CONFIGS}
    assert shown == set(*formats) - {"synthetic"}
    assert len(FILES) >= 10


@pytest.mark.parametrize("raw", CONFIGS, ids=_ids(CONFIGS))
def test_every_config_parses(raw: dict[str, Any], tmp_path: Path) -> None:
    config = parse_config(raw, tmp_path)
    assert config.data.features


TRAINED = [raw for raw in CONFIGS if all(name in FILES for name in _data_files(raw))]


def test_every_libsvm_config_has_its_files_on_the_page() -> None:
    sparse = [raw for raw in CONFIGS if raw["data"].get("format") in ("libsvm", "libffm")]
    assert len(sparse) >= 4 and all(raw in TRAINED for raw in sparse)


def _write_files(folder: Path) -> None:
    """The page's files; data rows repeated 8 times, so a random split holds both labels."""
    for name, body in FILES.items():
        lines = body.splitlines()
        if name not in ("fields.json", "featindex.txt"):
            header = lines[:1] if lines[0].startswith("label") else []
            lines = header + lines[len(header) :] * 8
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("raw", TRAINED, ids=_ids(TRAINED))
def test_config_trains_on_the_files_shown(raw: dict[str, Any], tmp_path: Path) -> None:
    _write_files(tmp_path)
    config = _quick(parse_config(raw, tmp_path), tmp_path)
    metrics = train_from_config(config, tmp_path / "run")
    rows = 0
    for name in _data_files(raw)[: 1 if "split" in raw["data"] else 3]:
        lines = (tmp_path / name).read_text("utf-8").splitlines()
        rows += len(lines) - int(lines[0].startswith("label"))
    assert sum(metrics["rows"].values()) == rows  # no row lost, no header read as a row
    train_file = tmp_path / raw["data"]["train"]
    scored = predict_file(tmp_path / "run", train_file, tmp_path / "scores.csv", backend="torch")
    assert scored == metrics["rows"]["train"] + (
        metrics["rows"]["valid"] + metrics["rows"]["test"] if "split" in raw["data"] else 0
    )  # every data row of the train file scored, a header line never


def test_parquet_config_trains_on_list_columns(tmp_path: Path) -> None:
    [raw] = [raw for raw in CONFIGS if raw["data"].get("format") == "parquet"]
    rng = np.random.default_rng(0)
    (tmp_path / "parquet").mkdir()
    for split, rows in (("train", 64), ("valid", 16), ("test", 16)):
        recent = [list(rng.integers(100, 110, rng.integers(0, 4))) for _ in range(rows)]
        pl.DataFrame(
            {
                "clicked": rng.integers(0, 2, rows),
                "user_id": rng.integers(0, 8, rows),
                "ad_id": rng.integers(100, 110, rows),
                "bid_price": rng.exponential(2.0, rows),
                "recent_ads": recent,
            },
            schema_overrides={"recent_ads": pl.List(pl.Int64)},
        ).write_parquet(tmp_path / "parquet" / f"{split}.parquet")
    config = _quick(parse_config(raw, tmp_path), tmp_path)
    metrics = train_from_config(config, tmp_path / "run")
    assert metrics["rows"] == {"train": 64, "valid": 16, "test": 16}


def _quick(config: Any, tmp_path: Path) -> Any:
    """One epoch, no progress bar, the data cache under tmp_path."""
    data = config.data.model_copy(update={"cache_dir": tmp_path / "cache"})
    train = config.train.model_copy(update={"max_epochs": 1, "progress": False})
    return config.model_copy(update={"data": data, "train": train})
