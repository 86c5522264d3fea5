"""The run directory: refuses to clobber, detects tampering, writes valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finalmlp.bundle import load_run, save_run
from finalmlp.config import parse_config
from finalmlp.data.dataset import prepare_data
from finalmlp.errors import ConfigError, DataError
from finalmlp.models import build_model


@pytest.fixture
def parts(tmp_path: Path):
    config = parse_config(
        {
            "data": {
                "recipe": "synthetic",
                "synthetic": {"num_rows": 500},
                "cache_dir": str(tmp_path / "cache"),
            },
            "model": {"name": "lr"},
        }
    )
    processor = prepare_data(config.data).processor
    return config, processor, build_model(processor.layout, config.model)


def test_save_then_load_round_trips_weights(parts, tmp_path: Path) -> None:
    config, processor, model = parts
    save_run(tmp_path / "run", config, processor, model, {"auc": float("nan"), "h": [1.0]})
    run = load_run(tmp_path / "run")
    for key, value in model.state_dict().items():
        assert (run.model.state_dict()[key] == value).all()
    # NaN is not JSON: it is written as null, and the file parses strictly
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"auc": None, "h": [1.0]}


@pytest.mark.parametrize("kind", ["file", "folder with files"])
def test_refuses_to_replace_something_that_is_not_a_run(parts, tmp_path: Path, kind) -> None:
    config, processor, model = parts
    target = tmp_path / "precious"
    if kind == "file":
        target.write_text("keep me")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not a finalmlp run directory; refusing"):
        save_run(target, config, processor, model, {})
    assert "keep me" in (
        target.read_text() if kind == "file" else (target / "notes.txt").read_text()
    )


def test_replaces_an_earlier_run_and_an_empty_folder(parts, tmp_path: Path) -> None:
    config, processor, model = parts
    (tmp_path / "empty").mkdir()
    save_run(tmp_path / "empty", config, processor, model, {"n": 1})
    save_run(tmp_path / "empty", config, processor, model, {"n": 2})
    assert load_run(tmp_path / "empty").metrics == {"n": 2}


@pytest.mark.parametrize("name", ["processor.json", "model.safetensors", "config.json"])
def test_tampered_or_missing_files_are_detected(parts, tmp_path: Path, name: str) -> None:
    config, processor, model = parts
    save_run(tmp_path / "run", config, processor, model, {})
    target = tmp_path / "run" / name
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"do not match manifest\.json"):
        load_run(tmp_path / "run")
    target.unlink()
    with pytest.raises(DataError, match=r"do not match manifest\.json"):
        load_run(tmp_path / "run")
