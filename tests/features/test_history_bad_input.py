"""Bad event logs and history configs through the CLI: one line naming the column, row and fix,
a user-error exit code, never a traceback (issue 14, point 6)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from finalmlp.cli.main import USER_ERROR_EXIT, app

FEATURES: list[dict[str, Any]] = [
    {"name": "user", "type": "categorical"},
    {"name": "item", "type": "categorical"},
    {"name": "cat", "type": "categorical"},
    {"name": "hist_item", "type": "sequence", "history": "item", "share_embedding": "item",
     "pooling": "attention", "target": "item"},
]  # fmt: skip


def _log(rows: int = 60) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": [f"u{i % 6}" for i in range(rows)],
            "ts": [str(1000 + i) for i in range(rows)],
            "item": [f"i{i % 9}" for i in range(rows)],
            "cat": [f"c{i % 3}" for i in range(rows)],
            "rating": [str(1 + i % 5) for i in range(rows)],
            "label": [str(i % 2) for i in range(rows)],
        }
    )


def _train(tmp_path: Path, log: pl.DataFrame, features: list[dict[str, Any]]) -> Any:
    log.write_csv(tmp_path / "log.csv")
    config = {
        "data": {
            "train": str(tmp_path / "log.csv"),
            "features": features,
            "history": {"user": "user", "time": "ts", "max_len": 4,
                        "behaviour": {"column": "rating", "op": ">=", "value": 4}},
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": {"name": "din", "embedding_dim": 4, "mlp": {"hidden_units": [8]}},
        "train": {"max_epochs": 1, "batch_size": 16},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "config.yaml"), "--out", str(out), "--no-progress"]
    return CliRunner().invoke(app, args)


def _with(column: str, row: int, value: str | None) -> pl.DataFrame:
    log = _log()
    values = log[column].to_list()
    values[row] = value
    return log.with_columns(pl.Series(column, values, dtype=pl.Utf8))


def _target(target: str) -> list[dict[str, Any]]:
    return [*FEATURES[:3], {**FEATURES[3], "target": target}]


CASES = {
    "non-numeric time": (_with("ts", 7, "yesterday"), FEATURES,
                         r"time column 'ts' \(data.history.time\) must hold finite numbers"),
    "missing time": (_with("ts", 7, None), FEATURES, r"time column 'ts'.*got None"),
    "infinite time": (_with("ts", 7, "inf"), FEATURES, r"time column 'ts'.*got 'inf'"),
    "missing user key": (_with("user", 3, None), FEATURES,
                         r"user key 'user' \(data.history.user\) is missing on row"),
    "non-numeric behaviour": (_with("rating", 5, "great"), FEATURES,
                              r"behaviour column 'rating' must be numeric.*'great'"),
    "target that does not exist": (_log(), _target("movie"), r"target 'movie', which is not a"),
    "target of another table": (_log(), _target("cat"), r"'cat' of 'hist_item' does not share"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_event_logs_are_one_line_without_a_traceback(tmp_path: Path, case: str) -> None:
    log, features, message = CASES[case]
    result = _train(tmp_path, log, features)
    assert result.exit_code == USER_ERROR_EXIT, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run").exists()


def test_a_good_log_trains(tmp_path: Path) -> None:
    """The same log without the fault trains: the cases above fail for their fault alone."""
    result = _train(tmp_path, _log(), FEATURES)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.safetensors").is_file()
