"""Issue 16, point 1: probabilities a user can bid with. The check at the end of training, the
checkpoint guard, the defaults (Platt calibration, guard on) and the loud end of `train`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

import finalmlp
from finalmlp.cli.main import app
from finalmlp.schema import TrainConfig
from finalmlp.train.probability import (
    ProbabilityWarning,
    base_rate_logloss,
    ece_limit,
    probability_check,
    probability_problems,
)
from finalmlp.train.trainer import EarlyStopping


def test_base_rate_logloss_is_the_constant_predictors() -> None:
    labels = np.array([1.0, 0, 0, 0])
    expected = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    assert base_rate_logloss(labels, 0.25) == pytest.approx(expected)
    assert ece_limit(0.005) == 0.01 and ece_limit(0.33) == 0.05 and ece_limit(0.04) == 0.02


def test_check_flags_half_probabilities_on_a_rare_click_set() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.01).astype(np.float64)[:, None]
    useful = np.where(labels == 1, 0.05, 0.008)  # ranks well, near the rate
    check = probability_check(labels, useful, [0.01], ["label"])
    assert check["flagged"] is False, check
    halves = np.where(labels == 1, 0.55, 0.5)  # ranks perfectly, probabilities absurd
    check = probability_check(labels, halves, [0.01], ["label"])
    entry = check["tasks"]["label"]
    assert check["flagged"] and entry["worse_than_base_rate"] and entry["high_ece"]
    lines = probability_problems({"probability_check": check})
    assert len(lines) == 2 and "no better than predicting the base rate" in lines[0]
    assert "train.calibration: platt" in lines[0]


def test_check_names_the_task_of_a_multitask_run() -> None:
    labels = np.array([[1, np.nan], [0, 1], [0, 0], [0, 0]], dtype=np.float64)
    probs = np.array([[0.9, 0.5], [0.1, 0.5], [0.1, 0.5], [0.1, 0.5]])
    check = probability_check(labels, probs, [0.25, 0.5], ["click", "conversion"], "platt")
    assert set(check["tasks"]) == {"click", "conversion"}
    assert check["tasks"]["conversion"]["worse_than_base_rate"]  # constant 0.5 is not better
    lines = probability_problems({"probability_check": check})
    assert any("(task conversion)" in line for line in lines)
    assert all("smaller train.batch_size" in line for line in lines)  # calibrated already


def test_guard_prefers_a_checkpoint_that_beats_the_base_rate() -> None:
    stopper = EarlyStopping(patience=3)
    assert stopper.update(0.80, eligible=False)  # nothing better yet: best for now
    assert stopper.update(0.70, eligible=True)  # lower AUC, but usable probabilities
    assert not stopper.update(0.90, eligible=False)  # never replaces an eligible best
    assert stopper.update(0.75, eligible=True)
    assert stopper.best == 0.75 and stopper.bad_rounds == 0


def test_defaults_calibrate_and_guard() -> None:
    defaults = TrainConfig()
    assert defaults.calibration == "platt" and not defaults.keep_better_than_base_rate


# ----------------------------------------------------------------------------- end to end
def rare_click_files(tmp_path: Path) -> dict[str, str]:
    """The built-in generator's rows (few, small fields: learnable from 20k rows) with all but
    8% of the positives dropped (about 2% clicks), as CSV train/valid/test files."""
    frame = finalmlp.synthetic_data(40_000, seed=11, num_categorical=4, max_cardinality=200)
    keep = (frame["label"] == 0).to_numpy() | (np.random.default_rng(1).random(frame.height) < 0.08)
    frame = frame.filter(pl.Series(keep))
    n = frame.height
    paths = {}
    for split, part in (
        ("train", frame[: n * 6 // 10]),
        ("valid", frame[n * 6 // 10 : n * 8 // 10]),
        ("test", frame[n * 8 // 10 :]),
    ):
        paths[split] = str(tmp_path / f"{split}.csv")
        part.write_csv(paths[split])
    return paths


def readme_user_config(files: dict[str, str], tmp_path: Path, **train: Any) -> dict[str, Any]:
    """What a user writes from the README: FinalMLP with BatchNorm, batch 4096, monitor AUC."""
    features = [{"name": f"c{i}", "type": "categorical"} for i in range(4)]
    features += [{"name": f"n{i}", "type": "numeric"} for i in range(3)]
    return {
        "data": {**files, "label": "label", "features": features, "cache_dir": str(tmp_path)},
        "model": {
            "name": "finalmlp",
            "mlp1": {"hidden_units": [64], "dropout": 0.2, "batch_norm": True},
            "mlp2": {"hidden_units": [32], "dropout": 0.2, "batch_norm": True},
            "fs_hidden_units": [32],
            "num_heads": 2,
        },
        "train": {"batch_size": 4096, "monitor": {"auc": 1}, "seed": 3, **train},
    }


def test_rare_clicks_defaults_beat_the_base_rate_and_old_settings_are_flagged(
    tmp_path: Path,
) -> None:
    files = rare_click_files(tmp_path)
    run = finalmlp.train(readme_user_config(files, tmp_path / "cache"), out=tmp_path / "new")
    test = pl.read_csv(files["test"])
    metrics = run.evaluate(test)
    rate = run.metrics["probability_check"]["tasks"]["label"]["base_rate"]
    base = base_rate_logloss(test["label"].to_numpy().astype(float), rate)
    assert metrics["logloss"] < base, (metrics, base)
    assert run.metrics["probability_check"]["flagged"] is False
    assert json.loads((run.path / "metrics.json").read_text())["probability_check"]
    # The settings before issue 16: no calibration. The run says so, loudly.
    old = readme_user_config(files, tmp_path / "cache", calibration="none")
    with pytest.warns(ProbabilityWarning, match="no better than predicting the base rate"):
        bad = finalmlp.train(old, out=tmp_path / "old")
    assert bad.metrics["probability_check"]["flagged"] is True
    assert bad.evaluate(test)["logloss"] > base
    config_file = tmp_path / "old.yaml"
    config_file.write_text(yaml.safe_dump(old), encoding="utf-8")
    args = ["train", str(config_file), "--out", str(tmp_path / "cli"), "--no-report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("WARNING: validation") and "train.calibration: platt" in last
