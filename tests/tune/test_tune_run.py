"""A tiny search end to end: outputs, best.yaml trains, best_run is a run, guards on --out."""

from __future__ import annotations

import csv
import fcntl
import json
from pathlib import Path

import pytest
from tune_setup import SPACE, quiet, write_tune
from typer.testing import CliRunner

from finalmlp.cli.main import USER_ERROR_EXIT, app
from finalmlp.config import load_config
from finalmlp.errors import ConfigError
from finalmlp.schema import FinalMLPConfig
from finalmlp.tune import TuneResult, run_tune


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> TuneResult:
    folder = tmp_path_factory.mktemp("tune")
    return run_tune(write_tune(folder), folder / "search", 4, log=quiet)


def test_a_search_writes_its_outputs(searched: TuneResult) -> None:
    out = searched.out_dir
    for name in ("study.db", "trials.csv", "best.yaml", "best.json", "tune_report.html"):
        assert (out / name).is_file(), name
    assert (out / "best_so_far.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "best_run" / "manifest.json").is_file()
    assert not (out / "trials").exists()  # only the best trial's run is kept, as best_run
    assert searched.ran == 4
    assert [row.state for row in searched.rows] == ["COMPLETE"] * 4


def test_trial_0_is_the_base_config_and_the_best_is_at_least_as_good(searched: TuneResult) -> None:
    default, best = searched.default, searched.best
    assert default is not None and best is not None
    assert default.number == 0 and default.default
    assert default.params["model.mlp1.dropout"] == 0.2
    assert default.params["model.mlp2.hidden_units"] == [16]
    assert best.value is not None and default.value is not None
    assert best.value >= default.value
    summary = json.loads((searched.out_dir / "best.json").read_text())
    assert summary["best"]["trial"] == best.number == searched.best_run_trial
    assert summary["default"]["trial"] == 0
    assert summary["counts"]["COMPLETE"] == 4


def test_trials_csv_has_one_line_per_trial(searched: TuneResult) -> None:
    with open(searched.out_dir / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["number"] for row in rows] == ["0", "1", "2", "3"]
    assert set(rows[0]) >= {"state", "value", "epochs", "seconds", *SPACE}
    assert rows[0]["model.mlp2.hidden_units"] == "[16]"
    assert rows[0]["epochs"] == "2"


def test_best_yaml_is_the_best_trial_and_trains(searched: TuneResult, tmp_path: Path) -> None:
    best = searched.best
    assert best is not None
    config = load_config(searched.out_dir / "best.yaml")
    assert config.train.learning_rate == pytest.approx(best.params["train.learning_rate"])
    assert isinstance(config.model, FinalMLPConfig)
    assert config.model.mlp2.hidden_units == best.params["model.mlp2.hidden_units"]
    run = tmp_path / "run"
    args = ["train", str(searched.out_dir / "best.yaml"), "--out", str(run), "--no-report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["valid"]["auc"] == pytest.approx(best.value, abs=1e-6)  # same run again


def test_a_different_search_in_the_same_folder_is_refused(
    searched: TuneResult, tmp_path: Path
) -> None:
    other = write_tune(tmp_path, {"model.mlp1.dropout": SPACE["model.mlp1.dropout"]})
    with pytest.raises(ConfigError, match=r"holds another search .* pass a new --out"):
        run_tune(other, searched.out_dir, 4, log=quiet)


def test_a_second_search_running_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "search").mkdir()
    with open(tmp_path / "search" / ".tune.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match=r"another `finalmlp tune` is running in"):
            run_tune(write_tune(tmp_path), tmp_path / "search", 2, log=quiet)


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = write_tune(tmp_path, {"model.mlp1.dropuot": SPACE["model.mlp1.dropout"]})
    result = CliRunner().invoke(app, ["tune", str(bad), "--out", str(tmp_path / "s")])
    assert result.exit_code == USER_ERROR_EXIT
    assert "did you mean 'model.mlp1.dropout'?" in result.output
    assert "Traceback" not in result.output
