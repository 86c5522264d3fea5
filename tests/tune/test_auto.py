"""`finalmlp tune CONFIG --budget`: the built-in search over the zoo's strong models
(issue 16, point 2): defaults first, stops at the budget, hands back the best run and config."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finalmlp.bundle import load_run
from finalmlp.cli.main import app
from finalmlp.config import load_config
from finalmlp.errors import ConfigError
from finalmlp.tune.auto import AUTO_MODELS, batch_choices, parse_budget


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45), ("2.5", 2.5)]
)
def test_budget_forms(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "5x", "0", "0m"])
def test_bad_budget_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_batch_choices_fit_the_data() -> None:
    assert batch_choices(7_200) == (256, 512)
    assert batch_choices(200_000)[-1] == 4096


def test_budgeted_search_runs_defaults_first_and_hands_back_the_best(tmp_path: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "recipe": "synthetic",
                    "synthetic": {"num_rows": 3000, "seed": 3},
                    "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
                    "cache_dir": str(tmp_path / "cache"),
                },
                "train": {"max_epochs": 2},
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "search"
    started = time.monotonic()
    args = ["tune", str(config), "--budget", "25s", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, (result.output, result.exception)
    assert elapsed < 25 + 20, elapsed  # no trial starts after the budget; a running one stops
    rows = list(csv.DictReader((out / "trials.csv").open(encoding="utf-8")))
    assert [r["model"] for r in rows[: len(AUTO_MODELS)]] == list(AUTO_MODELS)[: len(rows)]
    finished = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(finished, key=lambda r: float(r["valid_auc"]))
    assert f"best: trial {best['trial']}, {best['model']}" in result.stdout
    run = load_run(out / "best_run")
    assert run.config.model.name == best["model"]
    again = load_config(out / "best.yaml")
    assert again.model == run.config.model and again.train.learning_rate == pytest.approx(
        run.config.train.learning_rate
    )
    assert not (out / "trials").exists()  # only the best run is kept
    models = {r["model"] for r in finished}
    if len(models) < len(AUTO_MODELS):  # a budget too short to try every model says so
        assert "give a larger --budget" in result.stdout


def test_an_experiment_config_without_budget_says_how(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: {recipe: synthetic}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["tune", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--budget 10m" in result.stderr
