"""User errors through the real CLI: one `error:` line on stderr, exit status 2, no traceback.

Plus one small successful train -> evaluate -> predict round trip on the synthetic recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from finalmlp.cli.main import USER_ERROR_EXIT, app
from finalmlp.data.synthetic import generate_synthetic
from finalmlp.schema import SyntheticOptions

FEATURES = [
    {"name": "user", "type": "categorical"},
    {"name": "price", "type": "numeric"},
]
GOOD_CSV = "label,user,price\n1,a,1.0\n0,b,2.5\n1,a,\n"
SMALL_MODEL = {
    "name": "finalmlp",
    "embedding_dim": 4,
    "mlp1": {"hidden_units": [16]},
    "mlp2": {"hidden_units": [16]},
    "fs_hidden_units": [16],
}


def _config(tmp_path: Path, data: dict[str, Any], **sections: Any) -> Path:
    """Write exp.yaml in tmp_path; every config caches under tmp_path, never ~/.cache."""
    raw = {"data": {"cache_dir": str(tmp_path / "cache"), **data}, **sections}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _csv_config(tmp_path: Path, text: str, **data: Any) -> Path:
    (tmp_path / "train.csv").write_text(text, encoding="utf-8")
    return _config(tmp_path, {"train": "train.csv", "features": FEATURES, **data})


def _user_error(args: list[str]) -> str:
    """Run the CLI in-process; check the one-line error contract and return the message."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == USER_ERROR_EXIT, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _train(tmp_path: Path, config: Path) -> str:
    return _user_error(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"])


# ----------------------------------------------------------------------------- data errors
def test_missing_label_column(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "clicked,user,price\n1,a,1.0\n")
    message = _train(tmp_path, config)
    assert "label column 'label' not found in" in message
    assert "train.csv" in message and "['clicked', 'user', 'price']" in message
    assert "Set data.label" in message


def test_feature_missing_from_data(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "label,user\n1,a\n0,b\n")
    message = _train(tmp_path, config)
    assert "column(s) ['price'] used by data.features not found in" in message
    assert "train.csv" in message and "['label', 'user']" in message
    assert "Fix the feature names or their `source`" in message
    assert not (tmp_path / "run").exists()


def test_text_in_numeric_column_names_column_value_and_line(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "label,user,price\n1,a,1.0\n0,b,\n1,c,12abc\n0,d,3\n")
    message = _train(tmp_path, config)
    assert "column 'price' must be numeric, got '12abc' on line 4 of" in message
    assert "train.csv" in message
    assert "declare the feature as categorical" in message


def test_message_quoting_rich_markup_is_shown_verbatim(tmp_path: Path) -> None:
    # '[missing]' was swallowed as a style tag and '[/]' crashed rich with a traceback.
    config = _csv_config(tmp_path, "label,user,price\n1,a,[missing]\n")
    assert "got '[missing]' on line 2" in _train(tmp_path, config)
    config = _csv_config(tmp_path, "label,user,price\n1,a,[/]\n")
    assert "got '[/]' on line 2" in _train(tmp_path, config)


def test_empty_data_file(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "")
    message = _train(tmp_path, config)
    assert "train.csv is empty; expected a header and data rows" in message


def test_header_only_data_file(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "label,user,price\n")
    assert "train.csv has no data rows" in _train(tmp_path, config)


def test_data_file_that_does_not_exist(tmp_path: Path) -> None:
    config = _config(tmp_path, {"train": "nowhere.csv", "features": FEATURES})
    message = _train(tmp_path, config)
    assert "nowhere.csv' not found; check the path in the config" in message


def test_bad_label_value_names_line(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "label,user,price\n1,a,1\n0,b,2\n3,c,3\n")
    message = _train(tmp_path, config)
    assert "label column 'label' must hold 0/1 (or -1/1), got '3' on line 4" in message


def test_libsvm_line_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "train.libsvm").write_text("1 1:1 12:1\n0 2:1 13\n1 3:1 14:1\n")
    data = {
        "format": "libsvm",
        "train": "train.libsvm",
        "libsvm": {
            "fields": [
                {"name": "user", "start": 0, "end": 10},
                {"name": "item", "start": 10, "end": 20},
            ]
        },
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "item", "type": "categorical"},
        ],
    }
    message = _train(tmp_path, _config(tmp_path, data))
    assert "token '13' on line 2 of" in message and "train.libsvm" in message
    assert "is not `idx:val`" in message and "such as `42:1`" in message


def test_libsvm_index_outside_field_ranges(tmp_path: Path) -> None:
    (tmp_path / "train.libsvm").write_text("1 1:1\n0 25:1\n")
    data = {
        "format": "libsvm",
        "train": "train.libsvm",
        "libsvm": {"fields": [{"name": "user", "start": 0, "end": 10}]},
        "features": [{"name": "user", "type": "categorical"}],
    }
    message = _train(tmp_path, _config(tmp_path, data))
    assert "index 25 on line 2 of" in message and "extend data.libsvm.fields" in message


# ----------------------------------------------------------------------------- config errors
def test_config_key_that_does_not_exist(tmp_path: Path) -> None:
    model = {**SMALL_MODEL, "mlp1": {"hiden_units": [16]}}
    config = _csv_config(tmp_path, GOOD_CSV)
    raw = yaml.safe_load(config.read_text()) | {"model": model}
    config.write_text(yaml.safe_dump(raw))
    message = _train(tmp_path, config)
    assert "exp.yaml" in message
    assert "unknown key 'model.mlp1.hiden_units'; did you mean 'hidden_units'?" in message


def test_config_file_that_does_not_exist(tmp_path: Path) -> None:
    message = _train(tmp_path, tmp_path / "missing.yaml")
    assert message == f"error: config file {str(tmp_path / 'missing.yaml')!r} not found"


# ----------------------------------------------------------------------------- run dir errors
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_command_on_directory_that_is_not_a_run(tmp_path: Path, command: str) -> None:
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    data = tmp_path / "rows.csv"
    data.write_text(GOOD_CSV)
    args = {
        "evaluate": ["evaluate", str(not_a_run), "--data", str(data)],
        "predict": ["predict", str(not_a_run), "--input", str(data), "--output", "o.csv"],
    }[command]
    message = _user_error(args)
    assert f"{not_a_run} is not a finalmlp run directory (manifest.json missing)" in message
    assert "pass the --out directory of `finalmlp train`" in message


# ----------------------------------------------------------------------------- real process
def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "60"}  # a narrow terminal must not wrap the line
    return subprocess.run(
        [sys.executable, "-m", "finalmlp.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_subprocess_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    config = _csv_config(tmp_path, "label,user,price\n1,a,1.0\n0,b,[/]\n")
    result = _run_cli("train", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: column 'price' must be numeric, got '[/]' on line 3 of")
    assert lines[0].endswith("fix the value, or declare the feature as categorical")
    assert result.stdout == ""


def test_subprocess_unknown_config_key(tmp_path: Path) -> None:
    config = _config(
        tmp_path, {"recipe": "synthetic", "synthetic": {"num_rows": 500, "num_row": 10}}
    )
    result = _run_cli("train", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {config}: unknown key 'data.synthetic.num_row'; did you mean 'num_rows'?"
    ]


# ----------------------------------------------------------------------------- success path
def _scores(path: Path) -> np.ndarray:
    frame = pl.read_csv(path)
    assert frame.columns == ["score"]
    return frame["score"].to_numpy()


def test_train_then_predict_on_synthetic(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"recipe": "synthetic", "synthetic": {"num_rows": 3000}},
        model=SMALL_MODEL,
        train={"max_epochs": 1, "batch_size": 512},
    )
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "run saved to" in result.stdout and str(run) in result.stdout
    files = {p.name for p in run.iterdir()}
    assert {"manifest.json", "config.json", "processor.json", "model.safetensors"} <= files
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert 0.0 <= metrics[split]["auc"] <= 1.0
        assert 0.0 < metrics[split]["logloss"] < 5.0
    assert metrics["epochs"] == 1 and len(metrics["history"]) == 1
    assert metrics["train_samples_per_s"] > 0
    assert metrics["rows"] == {"train": 2400, "valid": 300, "test": 300}
    assert json.loads((run / "manifest.json").read_text())["model"] == "finalmlp"
    assert any((tmp_path / "cache").iterdir())  # the encoded-data cache went to cache_dir

    rows = generate_synthetic(SyntheticOptions(num_rows=150, seed=7))
    rows.write_csv(tmp_path / "labelled.csv")
    unlabelled = rows.drop("label")
    unlabelled.write_csv(tmp_path / "rows.csv")
    unlabelled.reverse().write_csv(tmp_path / "reversed.csv")
    for name in ("rows", "reversed"):
        args = ["predict", str(run), "--input", str(tmp_path / f"{name}.csv")]
        result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / f"{name}.out.csv")])
        assert result.exit_code == 0, (result.output, result.exception)
    scores = _scores(tmp_path / "rows.out.csv")
    assert scores.shape == (150,)
    assert ((scores > 0) & (scores < 1)).all() and scores.std() > 0
    # one score per input row, in input order
    np.testing.assert_allclose(_scores(tmp_path / "reversed.out.csv")[::-1], scores, rtol=1e-5)

    result = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "rows.csv")])
    assert result.exit_code == USER_ERROR_EXIT
    assert "label column 'label' not found in" in result.stderr
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--data", str(tmp_path / "labelled.csv"), "--json"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    evaluated = json.loads(result.stdout)
    assert 0.0 <= evaluated["auc"] <= 1.0 and evaluated["logloss"] > 0


def test_out_path_that_is_not_a_run_is_never_clobbered(tmp_path: Path) -> None:
    config = _config(tmp_path, {"recipe": "synthetic", "synthetic": {"num_rows": 300}})
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    message = _user_error(["train", str(config), "--out", str(precious), "--no-progress"])
    assert "is not a finalmlp run directory; refusing to replace it" in message
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"recipe": "synthetic", "synthetic": {"num_rows": 400}},
        model={"name": "lr"},
        train={"max_epochs": 1, "progress": False},
    )
    run = tmp_path / "run"
    CliRunner().invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    rows = tmp_path / "rows.csv"
    generate_synthetic(SyntheticOptions(num_rows=100)).drop("label").write_csv(rows)
    folder = tmp_path / "scores_dir"
    folder.mkdir()
    (folder / "x").write_text("")
    message = _user_error(["predict", str(run), "--input", str(rows), "--output", str(folder)])
    assert message.startswith("error: ") and str(folder) in message


def test_preprocess_fills_the_cache_that_train_then_uses(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"recipe": "synthetic", "synthetic": {"num_rows": 500}},
        model={"name": "lr"},
        train={"max_epochs": 1, "progress": False},
    )
    first = CliRunner().invoke(app, ["preprocess", str(config)])
    assert first.exit_code == 0, first.output
    assert "encoded in" in first.stdout and str(tmp_path / "cache") in first.stdout
    again = CliRunner().invoke(app, ["preprocess", str(config)])
    assert "already cached" in again.stdout
    trained = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "r")])
    assert trained.exit_code == 0 and "from cache" in trained.stderr
